"""Interrupted runs, for real: `hdc pretrain` subprocesses killed part-way, then resumed.

Each test runs the same toy config three ways and compares the ends: an uninterrupted reference
(running alongside), and a run interrupted twice and resumed with --resume after each
interruption. The SIGTERM / Ctrl-C test runs preset-shaped configs: a MoCo queue with shuffle BN
(coupled), DCLR with its cross-video search over the queue, and HDC with three levels, each with a
queue and shuffle BN, whose random streams (shuffle BN's permutations included) a resume must
continue exactly. SIGKILL gives no warning, so the run resumes from its last epoch checkpoint and
redoes the steps after it (and before the last resume its newest checkpoint is cut short, which
must be refused and the previous one used); SIGTERM and SIGINT (Ctrl-C) make it write a checkpoint
at the next step boundary and exit with code 130. Either way the final weights and every logged metric (except the
timings) must equal the reference's, bit for bit on CPU, and the log must show the resume really
started from the checkpoint (a run restarted from scratch would also end identical).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hdc_lib.checkpoint import list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/toy/coupled.yaml"
EPOCHS, STEPS_PER_EPOCH = 4, 3  # the tiny world's 24 training videos in batches of 8
TIMINGS = {"clips_per_s", "seconds", "data_wait"}
# The paper presets' machinery at the tiny world's scale: a queue of two global batches, the key
# pass in two shuffled BatchNorm groups; DCLR's cross-video search reads the queue once it is full.
QUEUE = ["model.queue_size=16", "model.shuffle_bn_groups=2"]
PRESET_SHAPED = {"coupled_queue_shuffle_bn": ("configs/toy/coupled.yaml", QUEUE),
                 "dclr_cross_video": ("configs/toy/dclr.yaml", [*QUEUE, "model.cross_video=true", "model.topk=2"]),
                 "hdc_three_levels": ("configs/toy/hdc.yaml", QUEUE)}


def start_run(overrides: list[str], out: Path, log_name: str, resume: bool = False,
              config: str = CONFIG) -> subprocess.Popen:
    """`python -m hdc_lib pretrain` on a toy config in the background, logging to a file."""
    command = [sys.executable, "-m", "hdc_lib", "pretrain", "--config", config, "--no-progress",
               *(["--resume"] if resume else []), *overrides, f"train.out_dir={out}",
               f"train.epochs={EPOCHS}", "train.checkpoint_every=1"]
    # One thread each: the reference and the interrupted run share the two cores evenly.
    with (out.parent / f"{log_name}.log").open("w") as log:
        return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(process: subprocess.Popen) -> int:
    return process.wait(timeout=300)  # only a guard against a hung run


def logged_steps(out: Path) -> set[int]:
    """Global steps of the step records fully written to metrics.jsonl so far."""
    path = out / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    complete = text[: text.rfind("\n") + 1]  # a line being written has no newline yet
    return {record["global_step"] for record in map(json.loads, complete.splitlines())
            if record["kind"] == "step"}


def wait_until_step_logged(process: subprocess.Popen, out: Path, global_step: int) -> None:
    """Poll (without timing anything) until the run has logged `global_step`."""
    deadline = time.monotonic() + 300  # as in finish()
    while global_step not in logged_steps(out):
        assert process.poll() is None, f"the run ended before step {global_step}"
        assert time.monotonic() < deadline, f"step {global_step} never came"
        time.sleep(0.02)


def newest_checkpoint(out: Path) -> tuple[Path, int, int]:
    """The newest checkpoint in the run folder, and its (epoch, step)."""
    path = list_checkpoints(out)[0]  # named ckpt_e0001_s000002.pt
    return path, int(path.name[6:10]), int(path.name[12:18])


def log_of(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text()


def metrics(out: Path) -> list[dict]:
    return [{key: value for key, value in record.items() if key not in TIMINGS}
            for record in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def assert_same_end(run: Path, reference: Path) -> None:
    """Identical final weights (every tensor of the method's state) and metrics."""
    resumed = load_checkpoint(run / "final.pt")["model"]
    straight = load_checkpoint(reference / "final.pt")["model"]
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert torch.equal(resumed[name], straight[name]), name
    assert metrics(run) == metrics(reference)
    assert len(metrics(reference)) == EPOCHS * (STEPS_PER_EPOCH + 1)


def test_sigkill_twice_then_resume_ends_identical_to_an_uninterrupted_run(tiny_overrides, tmp_path):
    reference = start_run(tiny_overrides, tmp_path / "reference", "reference")
    out = tmp_path / "killed"
    left_by_kill = []
    # Killed in epochs 2 and 3, one step past their start (so after an epoch checkpoint).
    for cycle, kill_after in enumerate((STEPS_PER_EPOCH + 1, 2 * STEPS_PER_EPOCH + 2)):
        process = start_run(tiny_overrides, out, f"run{cycle}", resume=cycle > 0)
        wait_until_step_logged(process, out, kill_after)
        process.send_signal(signal.SIGKILL)
        assert finish(process) == -signal.SIGKILL
        assert not (out / "final.pt").exists()
        checkpoint, epoch, step = newest_checkpoint(out)
        assert epoch >= 1 and step == 0  # a kill writes nothing: the last epoch checkpoint
        left_by_kill.append(checkpoint)
    assert f"resumed from {left_by_kill[0]} " in log_of(tmp_path, "run1")
    # The newest checkpoint cut short (as by a full disk): refused by name, the previous one used.
    truncated, previous = list_checkpoints(out)[:2]
    assert truncated == left_by_kill[1]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    assert finish(start_run(tiny_overrides, out, "run2", resume=True)) == 0
    log = log_of(tmp_path, "run2")
    assert f"skipping checkpoint: {truncated}: cannot be loaded safely" in log
    assert f"resumed from {previous} " in log
    assert finish(reference) == 0
    assert_same_end(out, tmp_path / "reference")


@pytest.mark.parametrize("shape", PRESET_SHAPED)
def test_sigterm_and_ctrl_c_checkpoint_exit_130_and_resume_identically(shape, tiny_overrides, tmp_path):
    config, extra = PRESET_SHAPED[shape]
    overrides = [*tiny_overrides, *extra]
    reference = start_run(overrides, tmp_path / "reference", "reference", config=config)
    out = tmp_path / "stopped"
    stop_checkpoints = []
    for cycle, (stop, after) in enumerate(((signal.SIGTERM, STEPS_PER_EPOCH + 1),
                                           (signal.SIGINT, 2 * STEPS_PER_EPOCH + 2))):
        process = start_run(overrides, out, f"run{cycle}", resume=cycle > 0, config=config)
        wait_until_step_logged(process, out, after)
        process.send_signal(stop)
        assert finish(process) == 130
        log = log_of(tmp_path, f"run{cycle}")
        assert f"{stop.name}: stopping after this step" in log  # acknowledged at once
        assert f"stopped by {stop.name}; resume with --resume" in log
        # Epoch checkpoints are at step 0: one at a later step was written by the stop request.
        checkpoint, epoch, step = newest_checkpoint(out)
        assert step > 0 and epoch * STEPS_PER_EPOCH + step >= after
        stop_checkpoints.append(checkpoint)
    assert finish(start_run(overrides, out, "run2", resume=True, config=config)) == 0
    for cycle, checkpoint in zip((1, 2), stop_checkpoints):
        assert f"resumed from {checkpoint} " in log_of(tmp_path, f"run{cycle}")
    assert finish(reference) == 0
    assert_same_end(out, tmp_path / "reference")
