"""`hdc bench`: the measuring instruments are right (speeds themselves are never asserted)."""
import json
import platform

import numpy as np
import pytest
import torch

from hdc_lib.bench import augmentation, decode, methods, notebooks, precision, precision_probes, presets, report
from hdc_lib.bench import scaling, stall, steps, timing
from hdc_lib.experiment import build_method
from hdc_lib.precision import resolve_precision
from tests.conftest import TINY_WORLD


def test_interleaved_medians_warms_up_then_interleaves(monkeypatch):
    calls = []
    clock = iter(range(1000))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    medians = timing.interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                        repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert medians == {"a": 1, "b": 1}  # each timed call spans one tick of the fake clock


def test_peak_memory_sees_a_temporary_allocation():
    size = 8 * 2 ** 20

    def step():
        buffer = torch.ones(size // 4)  # 8 MiB, freed on return
        return float(buffer[0])
    peak = timing.peak_memory(step, torch.device("cpu"))
    assert size <= peak < size + 2 ** 20


def test_step_flops_counts_a_matmul():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert timing.step_flops(lambda: a @ b) == 2 * 8 * 16 * 4


@pytest.mark.parametrize("name, grad_clips_per_video, total_clips_per_video",
                         [("coupled", 2, 2), ("hdc", 3, 3), ("dclr", 6, 6)])
def test_backbone_passes_record_what_the_method_runs(name, grad_clips_per_video, total_clips_per_video):
    batch = 2
    cfg, method = steps.toy_method(name, ("model.augment.size=16",))
    views = method.make_views(steps.random_windows(method, batch, size=24), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    with steps.BackbonePasses(method) as passes:
        steps.make_step(method, optimizer, views)()
    assert passes.clips == total_clips_per_video * batch
    assert sum(shape[0] for shape, _, grad in passes.calls if grad) == grad_clips_per_video * batch
    assert all(shape[2:] == (cfg.model.clip_frames, 16, 16) for shape, _, _ in passes.calls)
    # the replay trains a bare backbone through the same passes
    backbone = build_method(cfg, num_classes=8).backbone
    before = [p.detach().clone() for p in backbone.parameters()]
    bench_step = passes.bare_step(backbone, torch.optim.SGD(backbone.parameters(), lr=0.1), torch.device("cpu"))
    bench_step()
    assert any(not torch.equal(b, p) for b, p in zip(before, backbone.parameters()))


def test_momentum_key_passes_are_recorded_without_gradient():
    cfg, method = steps.toy_method("coupled", ("model.augment.size=16", "model.queue_size=128"))
    views = method.make_views(steps.random_windows(method, 2, size=24), generator=torch.Generator().manual_seed(0))
    with steps.BackbonePasses(method) as passes:
        steps.make_step(method, torch.optim.SGD(method.trainable_parameters(), lr=0.1), views)()
    method.backbone.features(views["a"], ("layer4",))  # after the block: not recorded
    assert [(shape[0], grad) for shape, _, grad in passes.calls] == [(4, True), (4, False)]


def timed_with(medians: dict, outputs: dict):
    """An `interleaved_medians` stand-in: calls each timed function twice (as the warm-up and a
    repeat would), keeps what each returned in `outputs`, and reports the given median seconds."""
    def fake(runs, repeats, *args, **kwargs):
        for name, run in runs.items():
            run()
            outputs[name] = run()
        return medians
    return fake


def test_bench_decode_times_the_same_frames_three_ways(monkeypatch):
    """Bare PyAV, the loader and the cached loader decode the same frames of the same windows, and
    the speeds are clips over each one's seconds: a loader twice as fast as bare PyAV has ratio 2
    (the goal is >= 0.8), a cached loader 8 times as fast serves 8 times the clips per second."""
    outputs = {}
    monkeypatch.setattr(decode, "interleaved_medians", timed_with({"bare": 2.0, "loader": 1.0, "cached": 0.25}, outputs))
    result = decode.bench_decode(num_items=2, clip_frames=4, synthetic_videos=2, synthetic_frames=8,
                                 synthetic_size=32, repeats=1)
    assert result["clips"] == 2 and result["loader_vs_bare"] == 2.0
    assert (result["bare_pyav_clips_per_s"], result["loader_clips_per_s"], result["cached_loader_clips_per_s"]) == (1, 2, 8)
    for bare, item, cached in zip(outputs["bare"], outputs["loader"], outputs["cached"]):
        window = np.stack([bare[index] for index in sorted(bare)])  # one window of 4 consecutive frames
        assert window.shape == (4, 32, 32, 3)
        np.testing.assert_array_equal(item["video"][0].numpy(), window)
        np.testing.assert_array_equal(cached["video"][0].numpy(), window)


def test_bench_augment_times_two_pipelines_with_the_same_output(monkeypatch):
    """Both sides make normalised views of the same shape (B, C, T, size, size), and the speed-up is
    torchvision's seconds over the batched ones': 4 when the batched pipeline takes a quarter."""
    outputs = {}
    monkeypatch.setattr(augmentation, "interleaved_medians", timed_with({"batched": 0.5, "torchvision": 2.0}, outputs))
    result = augmentation.bench_augment(batch=2, frames=3, in_size=16, out_size=8, repeats=1)
    assert result["speedup"] == 4.0
    batched_views, _ = outputs["batched"]
    assert batched_views.shape == outputs["torchvision"].shape == (2, 3, 3, 8, 8)
    # normalised with the same mean and std: both are far from the [0, 1] pixel range
    assert batched_views.min() < -0.5 and outputs["torchvision"].min() < -0.5


def test_stall_methods_scaling_and_report(tiny_world, tmp_path):
    """Every row on tiny inputs, then the report: the table, the figure, the kept history."""
    overrides = (f"data.toyworld={json.dumps(TINY_WORLD)}", "train.batch_size=8")
    stall_rows = stall.bench_stall(batches=1, repeats=1, methods=("coupled",), world=tiny_world, overrides=overrides)
    assert stall_rows[0]["loader_videos_per_s"] > 0 and stall_rows[0]["step_videos_per_s"] > 0
    method_rows = methods.bench_methods(batch=2, repeats=1, methods=("coupled",))
    assert method_rows[0]["views_per_video"] == 2 and method_rows[0]["clips"] == 4
    assert method_rows[0]["peak_mb"] > 0 and method_rows[0]["overhead"] > 0
    scaling_points = scaling.bench_scaling({"batch": (2, 4), "levels": (1, 3)}, repeats=1, base_batch=2)
    assert [v for v, _ in scaling_points["levels"]] == [1, 3]
    precision_rows = precision.bench_precision(batch=2, repeats=1, methods=("coupled",))
    assert precision_rows["precision"] == method_rows[0]["precision"] == resolve_precision("auto", "cpu")

    results = tmp_path / "results"
    results.mkdir()
    (results / "bench.md").write_text("old table\n" + report.HISTORY_MARKER + "\n## History\nbefore -> after\n")
    measured = {"quick": True, "machine": "test", "seconds": 1.0, "stall": stall_rows, "methods": method_rows,
                "scaling": scaling_points, "precision": precision_rows,
                "decode": decode.bench_decode(num_items=1, clip_frames=2, synthetic_videos=1, synthetic_frames=4,
                                              synthetic_size=16, repeats=1),
                "augment": augmentation.bench_augment(batch=2, frames=2, in_size=16, out_size=8, repeats=1)}
    path = report.write_report(measured, results, tmp_path / "figures", "hdc bench --quick")
    text = path.read_text()
    assert "old table" not in text and text.endswith("## History\nbefore -> after\n")
    assert "| 4. method overhead | worst: coupled" in text and "Skipped: no CUDA device" in text
    assert f"| 5. precision | auto = {precision_rows['precision']}" in text
    # the summary's rows, then the sections, numbered in order
    numbers = [int(line[2]) for line in text.splitlines() if line[:2] == "| " and line[2:4].rstrip(".").isdigit()]
    sections = [int(line[3]) for line in text.splitlines() if line.startswith("## ") and line[3].isdigit()]
    assert numbers == [1, 2, 3, 4, 5] and sections == [3, 4, 5, 6, 7]
    assert (tmp_path / "figures" / "bench_scaling.png").stat().st_size > 0
    assert json.loads((results / "bench.json").read_text())["machine"] == "test"


def test_time_notebooks_runs_the_default_mode_and_can_store_outputs(tmp_path, monkeypatch):
    import nbformat

    monkeypatch.setenv("HDC_FAST", "1")  # as under `make test`: the timed run must not inherit it
    path = tmp_path / "probe.ipynb"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os; print(os.environ.get('HDC_FAST'))")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    seconds = notebooks.time_notebooks([path], inplace=True)
    assert list(seconds) == ["probe.ipynb"] and seconds["probe.ipynb"] > 0
    assert nbformat.read(path, as_version=4).cells[0].outputs[0]["text"] == "None\n"
    assert notebooks.os.environ["HDC_FAST"] == "1"  # restored afterwards


def test_wall_times_section_reads_the_runs(tmp_path):
    assert report.wall_times_section(tmp_path) == []
    (tmp_path / "toy_ablation.json").write_text(json.dumps({
        "commit": "abc", "seeds": [0], "steps": {"a": 900, "b": 900}, "train_seconds": {"a": [600.0], "b": [300.0]},
        "runs": 2, "jobs": [2, 1], "seconds": 1114.6, "trained_here": 2}))
    (tmp_path / "notebook_times.json").write_text(json.dumps({"command": "hdc bench notebooks", "commit": "abc",
                                                              "seconds": {"00_data.ipynb": 21.4}}))
    text = "\n".join(report.wall_times_section(tmp_path))
    assert "commit abc, 900 steps x 1 seed(s)): its 2 runs trained for 15.0 min in all, 2 at a time" in text
    assert "took 18.6 min and trained 2 of them" in text and "00_data.ipynb: 21 s" in text
    # a record that names its machine and the load it ran beside says so
    (tmp_path / "notebook_times.json").write_text(json.dumps({
        "command": "hdc bench notebooks", "commit": "abc", "machine": "AMD EPYC (x86_64)", "load_before": 2.1,
        "seconds": {"00_data.ipynb": 21.4}}))
    assert "commit abc, AMD EPYC (x86_64), load average 2.1 before the first):" in "\n".join(report.wall_times_section(tmp_path))


def test_cpu_name_reads_the_model_name_and_falls_back_to_the_architecture(tmp_path):
    from hdc_lib.provenance import cpu_name

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: avx2\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n")
    assert cpu_name(cpuinfo) == "AMD EPYC 7B13"
    missing = cpu_name(tmp_path / "absent")
    assert missing and missing == (platform.processor() or platform.machine())


def test_precision_probes_table_compares_the_means_against_the_seed_spread():
    def run(seed, precision, biased, scene, seconds):
        return {"seed": seed, "precision": precision, "train_s": seconds,
                "probes": {"action_biased": biased, "action_biased@layer2": 0.0, "scene": scene, "R@1": 0.5}}
    result = {"precision": "bf16", "runs": [
        run(0, "fp32", 0.30, 0.50, 100), run(0, "bf16", 0.32, 0.80, 60),
        run(1, "fp32", 0.34, 0.52, 110), run(1, "bf16", 0.30, 0.82, 55),
        run(2, "fp32", 0.32, 0.48, 90), run(2, "bf16", 0.34, 0.78, 50)]}
    lines = precision_probes.precision_probes_table(result)
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"probe", "action_biased", "scene", "R@1"}  # headline probes only, not @layerN
    # action_biased: means 0.32 vs 0.32, sd 0.02 each: difference 0 within 2 SE = 2 sqrt(2 * 0.02^2 / 3)
    assert "0.320 ± 0.020 | 0.320 ± 0.020 | +0.000 | yes (2 SE 0.033)" in rows["action_biased"]
    assert "+0.300 | **no**" in rows["scene"]  # 0.30 apart, sd 0.02: far outside the seeds' spread
    assert "yes (2 SE 0.000)" in rows["R@1"]  # identical everywhere
    assert lines[-1] == "Training time per run (median): fp32 100 s, bf16 55 s (1.82x)."


@pytest.mark.slow
def test_precision_probes_trains_both_precisions_per_seed(tiny_world, tmp_path):
    overrides = (f"data.toyworld={json.dumps(TINY_WORLD)}", "train.batch_size=8", "model.augment.size=24")
    result = precision_probes.precision_probes("supervised", seeds=(0, 1), epochs=1, world=tiny_world,
                                    out_dir=tmp_path / "runs", num_clips=1, overrides=overrides)
    chosen = resolve_precision("auto", "cpu")
    assert [(r["seed"], r["precision"]) for r in result["runs"]] == [
        (s, p) for s in (0, 1) for p in dict.fromkeys(("fp32", chosen))]
    assert all(0 <= r["probes"]["action_biased"] <= 1 and r["train_s"] > 0 for r in result["runs"])
    assert (tmp_path / "runs" / "supervised" / chosen / "seed1" / "final.pt").exists()
    if chosen != "fp32":
        assert precision_probes.precision_probes_table(result)[0].startswith(f"| probe | fp32 | {chosen} |")


@pytest.mark.slow
def test_bench_device_runs_the_paper_presets_on_a_miniature_dataset(ucf101_layout, tmp_path, capsys):
    """`hdc bench --device cpu`, the path a GPU takes too, scaled down to seconds: a preset reading a
    miniature UCF101 tree through its loader, then one whose data.root is missing (random windows)."""
    from hdc_lib.cli import main

    small = ["model.augment.size=16", "model.clip_frames=2", "data.frame_size=[20,24]", "model.shuffle_bn_groups=2",
             "data.workers=0", f"data.split_dir={ucf101_layout['splits']}"]
    command = ["bench", "--device", "cpu", "--steps", "1", "--batch", "4", "--results", str(tmp_path),
               *[f"--set={o}" for o in small]]
    assert main([*command, f"--set=data.root={ucf101_layout['videos']}",
                 "--presets", "configs/ucf101/hdc_r2plus1d.yaml"]) == 0
    with_data = json.loads((tmp_path / "bench_cpu.json").read_text())[0]
    assert main([*command, "--presets", "configs/kinetics400/coupled_r2plus1d.yaml"]) == 0
    without_data = json.loads((tmp_path / "bench_cpu.json").read_text())[0]
    assert with_data["preset"] == "ucf101/hdc_r2plus1d" and with_data["batch"] == 4
    assert with_data["clips_per_step"] == 2 * 3 * 4  # v1, v2, v3 of 4 videos, online and momentum passes
    assert with_data["clips_per_s"] == pytest.approx(24 / with_data["step_s"])
    assert with_data["margin"] == pytest.approx(with_data["loader_videos_per_s"] / with_data["step_videos_per_s"])
    assert with_data["tflops"] > 0 and with_data["peak_mb"] > 0
    assert with_data["precision"] == resolve_precision("auto", "cpu")
    assert without_data["preset"] == "kinetics400/coupled_r2plus1d"
    assert without_data["margin"] is None and "not found" in without_data["data"]
    text = (tmp_path / "bench_cpu.md").read_text()
    assert "| kinetics400/coupled_r2plus1d |" in text and "| n/a |" in text
    assert "written:" in capsys.readouterr().out


def test_a_preset_out_of_memory_is_a_row_not_a_crash(monkeypatch):
    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(presets, "_bench_preset", out_of_memory)
    rows = presets.bench_presets("cpu", steps=1, presets=presets.PAPER_PRESETS[:1])
    assert rows == [{"preset": "ucf101/coupled_r2plus1d", "batch": 64, "error": "out of memory at batch 64 (try --batch)"}]
    assert "| ucf101/coupled_r2plus1d | | 64 | out of memory at batch 64" in presets.format_presets(rows, "c", "test")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_bench_device_cuda_without_a_gpu_is_one_line(capsys):
    from hdc_lib.cli import main

    assert main(["bench", "--device", "cuda", "--steps", "1"]) == 2
    assert capsys.readouterr().err.strip() == f"hdc: --device cuda: no CUDA device on this machine (torch {torch.__version__})"
