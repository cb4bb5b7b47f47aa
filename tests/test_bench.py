"""`hdc bench`: the measuring instruments are right (speeds themselves are never asserted)."""
import json

import pytest
import torch

from hdc_lib import bench
from tests.conftest import TINY_WORLD


def test_interleaved_medians_warms_up_then_interleaves(monkeypatch):
    calls = []
    clock = iter(range(1000))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    medians = bench.interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                        repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert medians == {"a": 1, "b": 1}  # each timed call spans one tick of the fake clock


def test_peak_memory_sees_a_temporary_allocation():
    size = 8 * 2 ** 20

    def step():
        buffer = torch.ones(size // 4)  # 8 MiB, freed on return
        return float(buffer[0])
    peak = bench.peak_memory(step, torch.device("cpu"))
    assert size <= peak < size + 2 ** 20


def test_step_flops_counts_a_matmul():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert bench.step_flops(lambda: a @ b) == 2 * 8 * 16 * 4


@pytest.mark.parametrize("name, grad_clips_per_video, total_clips_per_video",
                         [("coupled", 2, 2), ("hdc", 3, 3), ("dclr", 6, 6)])
def test_backbone_passes_record_what_the_method_runs(name, grad_clips_per_video, total_clips_per_video):
    batch = 2
    cfg, method = bench.toy_method(name, ("model.augment.size=16",))
    views = method.make_views(bench.random_windows(method, batch, size=24), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    with bench.BackbonePasses(method) as passes:
        bench.make_step(method, optimizer, views, torch.device("cpu"))()
    assert passes.clips == total_clips_per_video * batch
    assert sum(shape[0] for shape, _, grad in passes.calls if grad) == grad_clips_per_video * batch
    assert all(shape[2:] == (cfg.model.clip_frames, 16, 16) for shape, _, _ in passes.calls)
    # the replay trains a bare backbone through the same passes
    backbone = bench.build_method(cfg, num_classes=8).backbone
    before = [p.detach().clone() for p in backbone.parameters()]
    bench_step = passes.bare_step(backbone, torch.optim.SGD(backbone.parameters(), lr=0.1), torch.device("cpu"))
    bench_step()
    assert any(not torch.equal(b, p) for b, p in zip(before, backbone.parameters()))


def test_momentum_key_passes_are_recorded_without_gradient():
    cfg, method = bench.toy_method("coupled", ("model.augment.size=16", "model.queue_size=128"))
    views = method.make_views(bench.random_windows(method, 2, size=24), generator=torch.Generator().manual_seed(0))
    with bench.BackbonePasses(method) as passes:
        bench.make_step(method, torch.optim.SGD(method.trainable_parameters(), lr=0.1), views, torch.device("cpu"))()
    method.backbone.features(views["a"], ("layer4",))  # after the block: not recorded
    assert [(shape[0], grad) for shape, _, grad in passes.calls] == [(4, True), (4, False)]


def test_bench_decode_smoke():
    result = bench.bench_decode(num_items=2, clip_frames=4, synthetic_videos=2, synthetic_frames=8,
                                synthetic_size=32, repeats=1)
    assert result["clips"] == 2
    assert result["loader_vs_bare"] == pytest.approx(result["loader_clips_per_s"] / result["bare_pyav_clips_per_s"])


def test_bench_augment_smoke():
    result = bench.bench_augment(batch=2, frames=2, in_size=16, out_size=8, repeats=1)
    assert result["speedup"] == pytest.approx(result["torchvision_s"] / result["batched_s"])


def test_stall_methods_scaling_and_report(tiny_world, tmp_path):
    """Every row on tiny inputs, then the report: the table, the figure, the kept history."""
    overrides = (f"data.toyworld={json.dumps(TINY_WORLD)}", "train.batch_size=8")
    stall = bench.bench_stall(batches=1, repeats=1, methods=("coupled",), world=tiny_world, overrides=overrides)
    assert stall[0]["ratio"] == pytest.approx(stall[0]["loader_videos_per_s"] / stall[0]["step_videos_per_s"])
    methods = bench.bench_methods(batch=2, repeats=1, methods=("coupled",))
    assert methods[0]["views_per_video"] == 2 and methods[0]["clips"] == 4
    assert methods[0]["peak_mb"] > 0 and methods[0]["overhead"] > 0
    scaling = bench.bench_scaling({"batch": (2, 4), "levels": (1, 3)}, repeats=1, base_batch=2)
    assert [v for v, _ in scaling["levels"]] == [1, 3]

    results = tmp_path / "results"
    results.mkdir()
    (results / "bench.md").write_text("old table\n" + bench.HISTORY_MARKER + "\n## History\nbefore -> after\n")
    report = {"quick": True, "machine": "test", "seconds": 1.0, "stall": stall, "methods": methods,
              "scaling": scaling, "decode": bench.bench_decode(num_items=1, clip_frames=2, synthetic_videos=1,
                                                               synthetic_frames=4, synthetic_size=16, repeats=1),
              "augment": bench.bench_augment(batch=2, frames=2, in_size=16, out_size=8, repeats=1)}
    path = bench.write_report(report, results, tmp_path / "figures", "hdc bench --quick")
    text = path.read_text()
    assert "old table" not in text and text.endswith("## History\nbefore -> after\n")
    assert "| 4. method overhead | worst: coupled" in text and "Skipped: no CUDA device" in text
    assert (tmp_path / "figures" / "bench_scaling.png").stat().st_size > 0
    assert json.loads((results / "bench.json").read_text())["machine"] == "test"


def test_time_notebooks_runs_the_default_mode_and_can_store_outputs(tmp_path, monkeypatch):
    import nbformat

    monkeypatch.setenv("HDC_FAST", "1")  # as under `make test`: the timed run must not inherit it
    path = tmp_path / "probe.ipynb"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os; print(os.environ.get('HDC_FAST'))")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    seconds = bench.time_notebooks([path], inplace=True)
    assert list(seconds) == ["probe.ipynb"] and seconds["probe.ipynb"] > 0
    assert nbformat.read(path, as_version=4).cells[0].outputs[0]["text"] == "None\n"
    assert bench.os.environ["HDC_FAST"] == "1"  # restored afterwards


def test_wall_times_section_reads_the_runs(tmp_path):
    assert bench.wall_times_section(tmp_path) == []
    (tmp_path / "toy_ablation.json").write_text(json.dumps({"commit": "abc", "epochs": 10, "seeds": [0, 1, 2],
                                                            "seconds": 1114.6}))
    (tmp_path / "notebook_times.json").write_text(json.dumps({"command": "hdc bench notebooks", "commit": "abc",
                                                              "seconds": {"00_data.ipynb": 21.4}}))
    text = "\n".join(bench.wall_times_section(tmp_path))
    assert "10 epochs x 3 seeds): 18.6 min" in text and "00_data.ipynb: 21 s" in text
