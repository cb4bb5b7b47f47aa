"""The training loop: a real run on the tiny world, exact resume, and a clean stop on bad losses."""
import json
import re
from pathlib import Path

import pytest
import torch

from hdc_lib import train as train_module
from hdc_lib.checkpoint import list_checkpoints, load_checkpoint
from hdc_lib.experiment import load_config
from hdc_lib.train import NonFiniteLoss, epoch_batches, train


def records(run_dir, kind):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == kind]


def test_epoch_batches_partition_the_permutation_across_ranks():
    single = epoch_batches(50, 8, seed=3, epoch=1, rank=0, world_size=1)
    ranks = [epoch_batches(50, 4, seed=3, epoch=1, rank=r, world_size=2) for r in range(2)]
    assert len(single) == 6 and all(len(b) == 8 for b in single)
    for step, batch in enumerate(single):  # the two ranks split each global batch
        assert ranks[0][step] + ranks[1][step] == batch
    assert epoch_batches(50, 8, 3, 1, 0, 1) == single
    assert epoch_batches(50, 8, 3, 2, 0, 1) != single


def test_a_short_run_trains_logs_and_checkpoints(tiny_overrides, tmp_path):
    cfg = load_config("configs/toy/hdc.yaml", tiny_overrides)
    summary = train(cfg, progress=False)
    run = tmp_path / "run"
    assert summary["interrupted"] is None
    epochs = records(run, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(0.0 <= e["knn_acc"] <= 1.0 for e in epochs)
    steps = records(run, "step")
    assert len(steps) == 6 and all(s["clips_per_s"] > 0 for s in steps)
    assert {"loss/total", "weight/spatial_layer4", "invariance/temporal_layer2", "acc/spatial_layer3",
            "pos_sim/temporal_layer4", "neg_sim/temporal_layer4", "lr"} <= set(steps[0])
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_e0002_s000000.pt", "ckpt_e0001_s000000.pt"]
    final = load_checkpoint(run / "final.pt")
    assert final["config"] == cfg.to_dict() and (run / "config.yaml").exists()


class StopAfter:
    """Stands in for the SIGTERM handler: reports a stop request at the n-th step boundary."""

    def __init__(self, steps):
        self.left = steps

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    @property
    def signal(self):
        self.left -= 1
        return "SIGTERM" if self.left <= 0 else None


@pytest.mark.parametrize("config", ["configs/toy/hdc.yaml", "configs/toy/dclr.yaml"])
def test_resume_after_a_stop_mid_epoch_ends_with_identical_weights(config, tiny_overrides, tmp_path, monkeypatch):
    overrides = [o for o in tiny_overrides if not o.startswith("train.out_dir")]
    reference = load_config(config, overrides + [f"train.out_dir={tmp_path / 'straight'}"])
    train(reference, progress=False)

    interrupted = load_config(config, overrides + [f"train.out_dir={tmp_path / 'stopped'}"])
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "_StopRequest", lambda **kw: StopAfter(4))  # stops inside epoch 2
        assert train(interrupted, progress=False)["interrupted"] == "SIGTERM"
    assert [p.name for p in list_checkpoints(tmp_path / "stopped")][0] == "ckpt_e0001_s000001.pt"
    assert train(interrupted, resume=True, progress=False)["interrupted"] is None

    straight = load_checkpoint(tmp_path / "straight" / "final.pt")["model"]
    resumed = load_checkpoint(tmp_path / "stopped" / "final.pt")["model"]
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    timing = {"clips_per_s", "seconds", "data_wait"}
    for kind in ("step", "epoch"):
        a, b = records(tmp_path / "straight", kind), records(tmp_path / "stopped", kind)
        assert [{k: v for k, v in r.items() if k not in timing} for r in a] == \
               [{k: v for k, v in r.items() if k not in timing} for r in b]


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tiny_overrides, tmp_path, monkeypatch):
    cfg = load_config("configs/toy/coupled.yaml", tiny_overrides)
    build = train_module.build_method
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        method = build(*args, **kwargs)
        forward = method.forward

        def forward_with_nan(views):
            calls["n"] += 1
            loss, logs = forward(views)
            return (loss * float("nan") if calls["n"] > 4 else loss), logs

        method.forward = forward_with_nan
        return method

    monkeypatch.setattr(train_module, "build_method", poisoned)
    with pytest.raises(NonFiniteLoss, match="non-finite loss .* epoch 2, step 2"):
        train(cfg, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["ckpt_e0001_s000000.pt"]


def test_supervised_reference_learns_the_training_labels(tiny_overrides):
    cfg = load_config("configs/toy/supervised.yaml", tiny_overrides + ["train.epochs=6", "optim.lr=0.005"])
    train(cfg, progress=False)
    epochs = records(Path(cfg.train.out_dir), "epoch")
    assert epochs[-1]["loss/total"] < epochs[0]["loss/total"]


FAULTS_OF_AUGMENTATION = """
import resource, statistics, sys, torch
torch.set_num_threads(1)
torch.manual_seed(0)
if sys.argv[1] == "keep":
    from hdc_lib.runtime import keep_freed_memory
    keep_freed_memory()
from hdc_lib.augment import AugmentConfig, SpatialAugment
augment = SpatialAugment(AugmentConfig(size=32))
clips = torch.randint(0, 256, (32, 8, 48, 48, 3), dtype=torch.uint8)
augment(clips)
per_call = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    augment(clips)
    per_call.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(per_call))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="glibc/Linux page-fault counts")
def test_keeping_freed_memory_stops_the_page_faults_of_a_step():
    """The buffers of an augmentation call are freed and re-allocated every call; with
    keep_freed_memory they are reused from the heap instead of being faulted in again.
    Faults per call vary from call to call with the heap's layout, so compare medians of 10 calls
    (measured here: default 2,900-3,600 faults per call, kept 8-365)."""
    import subprocess
    import sys

    faults = {mode: float(subprocess.run([sys.executable, "-c", FAULTS_OF_AUGMENTATION, mode], check=True,
                                         capture_output=True, text=True).stdout)
              for mode in ("default", "keep")}
    assert faults["keep"] < 0.25 * faults["default"], faults


def test_resuming_under_another_config_is_refused_and_reproduce_sets_the_old_run_aside(tiny_overrides, tmp_path):
    """A checkpoint continues only the run that wrote it: resuming with another temperature (or more
    epochs) would give neither run. Logging settings may change. The reproduction moves such a
    stale run folder aside and trains afresh."""
    from hdc_lib.reproduce import trained_model
    from hdc_lib.train import ConfigMismatch

    overrides = [*tiny_overrides, "train.epochs=1", "train.knn_every=0"]
    cfg = load_config("configs/toy/coupled.yaml", overrides)
    train(cfg, progress=False)
    with pytest.raises(ConfigMismatch, match=r"model.temperature: 0.1 -> 0.2.*train.epochs: 1 -> 2"):
        train(load_config("configs/toy/coupled.yaml", [*overrides, "model.temperature=0.2", "train.epochs=2"]),
              resume=True, progress=False)
    train(load_config("configs/toy/coupled.yaml", [*overrides, "train.log_every=5"]), resume=True, progress=False)

    changed = load_config("configs/toy/coupled.yaml", [*overrides, "model.temperature=0.2"])
    trained_model(changed, num_classes=8, device="cpu", progress=False)
    out = Path(changed.train.out_dir)
    assert load_checkpoint(out / "final.pt")["config"] == changed.to_dict()
    assert load_checkpoint(out.with_name(out.name + ".stale") / "final.pt")["config"]["model"]["temperature"] == 0.1


# -- the full-scale path (issue 26): one step, the data checked first, lines, folders, limits -----
def test_optimiser_step_is_one_plain_sgd_update_and_leaves_everything_on_a_non_finite_loss():
    """The loop's step (and bench's): loss and logs of model(views), then p <- p - lr * dL/dp with
    the scheduler advanced; a non-finite loss changes nothing."""
    class Quadratic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))

        def forward(self, views):
            loss = (views["scale"] * self.w ** 2).sum()  # dL/dw = 2 * scale * w
            return loss, {"loss/total": loss.detach()}

    model = Quadratic()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss, logs = train_module.optimiser_step(model, {"scale": torch.tensor(3.0)}, optimizer, scaler, scheduler)
    assert loss.item() == logs["loss/total"].item() == 3.0 * (1 + 4)
    assert torch.allclose(model.w.detach(), torch.tensor([1.0, -2.0]) * (1 - 0.1 * 2 * 3.0))
    assert scheduler.get_last_lr() == [0.05]
    before = model.w.detach().clone()
    with pytest.raises(NonFiniteLoss):
        train_module.optimiser_step(model, {"scale": torch.tensor(float("inf"))}, optimizer, scaler, scheduler)
    assert torch.equal(model.w.detach(), before) and scheduler.get_last_lr() == [0.05]


def copy_of_world_without_test_split(tiny_world, tmp_path) -> list[str]:
    """Overrides that read the tiny world as a UCF101 tree whose split folder lacks testlist01.txt."""
    import shutil

    splits = tmp_path / "splits"
    shutil.copytree(tiny_world / "splits", splits)
    (splits / "testlist01.txt").unlink()
    return ["data.dataset=ucf101", f"data.root={tiny_world / 'videos'}", f"data.split_dir={splits}"]


def test_a_missing_test_split_fails_before_the_first_step_when_the_knn_monitor_reads_it(
        tiny_world, tiny_overrides, tmp_path):
    from hdc_lib.data.splits import SplitFileError

    broken = copy_of_world_without_test_split(tiny_world, tmp_path)
    cfg = load_config("configs/toy/coupled.yaml", [*tiny_overrides, *broken])
    with pytest.raises(SplitFileError, match="testlist01.txt"):
        train(cfg, progress=False)
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not list_checkpoints(tmp_path / "run")
    # Without the monitor the test split is never read: the run trains.
    cfg = load_config("configs/toy/coupled.yaml", [*tiny_overrides, *broken, "train.knn_every=0",
                                                   "train.epochs=1"])
    assert train(cfg, progress=False)["interrupted"] is None


def test_the_epoch_checkpoint_is_written_before_the_knn_check_and_a_resume_completes_its_record(
        tiny_overrides, tmp_path, monkeypatch):
    overrides = [o for o in tiny_overrides if not o.startswith("train.out_dir")]
    straight = load_config("configs/toy/coupled.yaml", [*overrides, f"train.out_dir={tmp_path / 'straight'}"])
    train(straight, progress=False)
    cfg = load_config("configs/toy/coupled.yaml", [*overrides, f"train.out_dir={tmp_path / 'failed'}"])
    with monkeypatch.context() as patch:
        def failing_knn(*args):
            raise OSError("the test videos' disk went away")
        patch.setattr(train_module, "knn_monitor", failing_knn)
        with pytest.raises(OSError, match="disk went away"):
            train(cfg, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "failed")] == ["ckpt_e0001_s000000.pt"]  # epoch 1 kept
    assert records(tmp_path / "failed", "epoch") == []
    train(cfg, resume=True, progress=False)
    timing = {"clips_per_s", "seconds", "data_wait"}
    for kind in ("step", "epoch"):
        assert [{k: v for k, v in r.items() if k not in timing} for r in records(tmp_path / "failed", kind)] == \
               [{k: v for k, v in r.items() if k not in timing} for r in records(tmp_path / "straight", kind)]


LINE = re.compile(r"^(?:(?P<label>\S+) )?epoch (?P<epoch>\d+)/(?P<epochs>\d+) (?:step (?P<step>\d+)/(?P<steps>\d+)|done) "
                  r"loss (?P<loss>[\d.]+) lr (?P<lr>[\d.e-]+) (?P<rate>[\d.]+) clips/s data (?P<data>\d+)% "
                  r"elapsed \S+ left ~\S+(?: knn (?P<knn>[\d.]+))?$")


@pytest.mark.parametrize("progress", [False, True])
def test_plain_lines_report_every_step_and_epoch_with_or_without_the_bar(progress, tiny_overrides, tmp_path, capfd):
    """One line per log_every steps and per epoch, whatever `progress` (the bar is drawn on a
    terminal only: here stderr is a file, so no carriage returns); the numbers are the records'."""
    cfg = load_config("configs/toy/coupled.yaml", [*tiny_overrides, "train.log_every=2"])
    train(cfg, progress=progress, label="coupled/seed0")
    out, err = capfd.readouterr()
    assert "\r" not in out + err
    lines = [LINE.match(line) for line in out.splitlines() if "epoch" in line]
    assert all(lines), out
    steps = [m for m in lines if m["step"]]
    assert [(int(m["epoch"]), int(m["step"])) for m in steps] == [(1, 2), (2, 1), (2, 3)]  # global steps 2, 4, 6
    assert all(m["label"] == "coupled/seed0" and m["epochs"] == "2" and float(m["rate"]) > 0 for m in lines)
    ends = [m for m in lines if not m["step"]]
    for line, record in zip(ends, records(tmp_path / "run", "epoch"), strict=True):
        assert int(line["epoch"]) == record["epoch"]
        assert float(line["loss"]) == round(record["loss/total"], 4) and float(line["knn"]) == round(record["knn_acc"], 3)
        assert float(line["lr"]) == float(f"{record['lr']:.3g}") and 0 <= int(line["data"]) <= 100


def test_quiet_drops_the_lines(tiny_overrides, capfd):
    train(load_config("configs/toy/coupled.yaml", [*tiny_overrides, "train.epochs=1", "train.knn_every=0"]),
          progress=False, quiet=True)
    assert "epoch" not in capfd.readouterr().out


def test_without_step_lines_each_epoch_says_one_line(tiny_overrides, capfd):
    """`hdc reproduce` trains runs side by side: one line per run per epoch, none per step."""
    train(load_config("configs/toy/coupled.yaml", [*tiny_overrides, "train.log_every=1", "train.knn_every=0"]),
          progress=False, label="coupled/seed0", step_lines=False)
    lines = [LINE.match(line) for line in capfd.readouterr().out.splitlines() if "epoch" in line]
    assert all(lines) and [(m["label"], m["epoch"], m["step"]) for m in lines] == [("coupled/seed0", "1", None), ("coupled/seed0", "2", None)]


def test_a_new_run_refuses_a_used_folder_unless_told_to_overwrite_it(tiny_overrides, tmp_path, caplog):
    from hdc_lib.train import RunFolderInUse

    cfg = load_config("configs/toy/coupled.yaml", [*tiny_overrides, "train.epochs=1", "train.knn_every=0"])
    run = tmp_path / "run"
    train(cfg, progress=False)
    stale = run / "ckpt_e0009_s000000.pt"  # as if an older, longer run had been there
    stale.write_bytes((run / "ckpt_e0001_s000000.pt").read_bytes())
    with pytest.raises(RunFolderInUse, match="holds another run .*--resume.*--overwrite"):
        train(cfg, progress=False, overwrite=False)
    assert stale.exists()
    with caplog.at_level("WARNING", logger="hdc_lib.train"):
        train(cfg, progress=False, overwrite=True)
    assert f"overwriting the run in {run}" in caplog.text
    assert not stale.exists() and [p.name for p in list_checkpoints(run)] == ["ckpt_e0001_s000000.pt"]


def test_resume_says_when_it_starts_afresh_or_finds_the_run_finished(tiny_overrides, tmp_path, caplog):
    cfg = load_config("configs/toy/coupled.yaml", [*tiny_overrides, "train.epochs=1", "train.knn_every=0"])
    with caplog.at_level("INFO", logger="hdc_lib.train"):
        assert not train(cfg, resume=True, progress=False)["finished_before"]
        assert f"no checkpoint to resume from in {tmp_path / 'run'}: starting a new run" in caplog.text
        final = tmp_path / "run" / "final.pt"
        written = final.stat().st_mtime_ns
        caplog.clear()
        assert train(cfg, resume=True, progress=False)["finished_before"]
    assert "had already finished (epoch 1/1, 3 steps): nothing to train" in caplog.text
    assert final.stat().st_mtime_ns == written and len(records(tmp_path / "run", "epoch")) == 1


def test_more_epochs_extend_a_step_schedule_exactly_and_are_refused_with_the_rule_for_cosine(
        tiny_overrides, tmp_path):
    """A step schedule's learning rate at a step does not depend on train.epochs, so 1 epoch
    extended to 2 on resume ends where a 2-epoch run ends; a cosine schedule's does."""
    from hdc_lib.train import ConfigMismatch

    overrides = [*[o for o in tiny_overrides if not o.startswith(("train.out_dir", "train.epochs"))],
                 "train.knn_every=0", "optim.schedule=step", "optim.milestones=[1]"]
    straight = load_config("configs/toy/coupled.yaml", [*overrides, "train.epochs=2", f"train.out_dir={tmp_path / 'two'}"])
    train(straight, progress=False)
    short = [*overrides, f"train.out_dir={tmp_path / 'one'}"]
    train(load_config("configs/toy/coupled.yaml", [*short, "train.epochs=1"]), progress=False)
    train(load_config("configs/toy/coupled.yaml", [*short, "train.epochs=2"]), resume=True, progress=False)
    extended = load_checkpoint(tmp_path / "one" / "final.pt")["model"]
    for name, tensor in load_checkpoint(tmp_path / "two" / "final.pt")["model"].items():
        assert torch.equal(extended[name], tensor), name
    cosine = [*short[:-1], "optim.schedule=cosine", f"train.out_dir={tmp_path / 'cosine'}"]
    train(load_config("configs/toy/coupled.yaml", [*cosine, "train.epochs=1"]), progress=False)
    with pytest.raises(ConfigMismatch, match="train.epochs: 1 -> 2.*cosine schedule's learning rates depend on "
                                             "train.epochs, so a longer run must start anew"):
        train(load_config("configs/toy/coupled.yaml", [*cosine, "train.epochs=2"]), resume=True, progress=False)


def test_max_steps_stops_a_smoke_run_that_a_resume_without_it_completes_exactly(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("train.out_dir")] + ["train.knn_every=0"]
    smoke = load_config("configs/toy/hdc.yaml", [*overrides, "train.max_steps=4", f"train.out_dir={tmp_path / 'smoke'}"])
    summary = train(smoke, progress=False)
    assert summary["stopped_at_max_steps"] and (tmp_path / "smoke" / "final.pt").exists()
    assert records(tmp_path / "smoke", "step")[-1]["global_step"] == 4
    assert list_checkpoints(tmp_path / "smoke")[0].name == "ckpt_e0001_s000001.pt"
    full = load_config("configs/toy/hdc.yaml", [*overrides, f"train.out_dir={tmp_path / 'smoke'}"])
    assert not train(full, resume=True, progress=False)["stopped_at_max_steps"]
    train(load_config("configs/toy/hdc.yaml", [*overrides, f"train.out_dir={tmp_path / 'straight'}"]), progress=False)
    resumed = load_checkpoint(tmp_path / "smoke" / "final.pt")["model"]
    for name, tensor in load_checkpoint(tmp_path / "straight" / "final.pt")["model"].items():
        assert torch.equal(resumed[name], tensor), name


def test_ctrl_c_is_acknowledged_at_once_and_a_second_one_stops_at_once(capsys):
    import signal

    with train_module._StopRequest() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.signal == "SIGINT"
        assert "SIGINT: stopping after this step" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def test_tensorboard_missing_names_the_extra_to_install(tmp_path, monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    assert train_module._tensorboard(tmp_path) is None
    assert "pip install -e '.[tensorboard]'" in caplog.text


def test_metrics_written_when_epochs_counted_from_0_are_read_counted_from_1(tmp_path):
    old = [{"kind": "step", "epoch": 0, "step": 0, "global_step": 1}, {"kind": "epoch", "epoch": 0},
           {"kind": "step", "epoch": 1, "step": 2, "global_step": 6}, {"kind": "epoch", "epoch": 1}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    assert [(r["epoch"], r.get("step")) for r in train_module.read_metrics(tmp_path)] == [(1, 1), (1, None), (2, 3), (2, None)]
