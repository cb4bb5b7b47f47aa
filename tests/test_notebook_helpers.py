"""The notebooks' setup (hdc_lib/notebook.py): the mode decides the world, the presets and the budget;
the short-run overrides are what load_config makes a run of; the seed and the figure style are set."""
import json
from types import SimpleNamespace

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

from hdc_lib import notebook
from hdc_lib.data.toyworld import VERSION
from hdc_lib.experiment import load_config
from hdc_lib.reproduce import CONFIGS, PRESETS


@pytest.fixture
def rendered(monkeypatch):
    """ensure_toyworld replaced by a recorder: the setup's world without rendering one."""
    calls = []

    def fake_ensure(out_dir, progress=True, **world_args):
        calls.append((out_dir, progress, world_args))
        return {"rendered": len(calls) == 1}

    monkeypatch.setattr(notebook, "ensure_toyworld", fake_ensure)
    return calls


@pytest.mark.parametrize("fast", [True, False])
def test_the_mode_decides_world_presets_and_budget(fast, rendered, monkeypatch, tmp_path):
    monkeypatch.setenv("HDC_FAST", "1" if fast else "0")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")   # Jupyter runs a notebook in its own folder
    with matplotlib.rc_context():
        nb = notebook.setup_notebook("03_hierarchical_heads", presets=("toy", "full"), short_epochs=5, seed=3)
    assert nb.root == tmp_path and nb.fast is fast
    world = tmp_path / ("data/toyworld_fast" if fast else "data/toyworld")
    assert nb.world == world and rendered == [(world, False, nb.world_args)] and nb.world_rendered
    assert nb.world_args == ({"videos_per_class": 8, "frames": 24, "size": 48} if fast else {})
    assert nb.presets == (() if fast else ("toy", "full"))      # fast mode never loads a preset's runs
    assert (nb.short_epochs, nb.short_batch) == ((2, 16) if fast else (5, 64))
    assert nb.run_dir == tmp_path / "runs/notebooks/03_hierarchical_heads" / f"world{VERSION}" / nb.mode
    assert nb.figures == tmp_path / "figures"
    drawn = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(drawn, torch.rand(3))                     # seeded by the setup


def test_a_short_budget_below_fast_modes_is_kept(rendered, monkeypatch, tmp_path):
    monkeypatch.setenv("HDC_FAST", "1")
    monkeypatch.chdir(tmp_path)
    with matplotlib.rc_context():
        nb = notebook.setup_notebook("06_activation_maps", short_epochs=1)
    assert nb.root == tmp_path and nb.short_epochs == 1


def test_short_overrides_make_the_notebooks_run(rendered, monkeypatch, tmp_path):
    monkeypatch.setenv("HDC_FAST", "1")
    monkeypatch.chdir(tmp_path)
    with matplotlib.rc_context():
        nb = notebook.setup_notebook("02_augmentation_decoupling", short_epochs=5)
    cfg = load_config(CONFIGS / "tc_only_rev.yaml", nb.short_overrides("tc_only_rev"))
    assert (cfg.data.root, cfg.train.out_dir) == (str(nb.world), str(nb.run_dir / "tc_only_rev"))
    world = cfg.to_dict()["data"]["toyworld"]
    assert {k: world[k] for k in nb.world_args} == nb.world_args and nb.world_args
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.seed) == (2, 16, 0)
    assert (cfg.train.knn_every, cfg.train.log_every) == (0, 1)
    plain = load_config(CONFIGS / "tc_only_rev.yaml", [])
    assert cfg.train.checkpoint_every == plain.train.checkpoint_every   # no curve points asked
    curve = load_config(CONFIGS / "tc_only_rev.yaml", nb.short_overrides("tc_only_rev", checkpoints=True))
    assert (curve.train.checkpoint_every, curve.train.keep_checkpoints) == (1, 4)   # a third of 2 epochs, at least 1
    # extra overrides come last, so they win over the notebook's own
    learned = load_config(CONFIGS / "hdc.yaml", nb.short_overrides("hdc_learned", "model.weighting=learned",
                                                                   "train.batch_size=8"))
    assert (learned.model.weighting, learned.train.batch_size) == ("learned", 8)


def test_the_figure_style_outside_a_kernel():
    with matplotlib.rc_context():
        notebook.style_figures("png", seaborn=False, rc={"legend.fontsize": 7})
        assert plt.rcParams["axes.grid"] and plt.rcParams["figure.dpi"] == 100
        assert plt.rcParams["legend.fontsize"] == 7
    with matplotlib.rc_context():
        notebook.style_figures("jpeg", seaborn=True)
        assert not plt.rcParams["axes.grid"] and plt.rcParams["savefig.dpi"] == 100
        assert plt.rcParams["axes.facecolor"] == "white"                          # seaborn's white theme


def test_invariance_ordering_places_the_lowest_level():
    values = {"run": {"spatial_layer2": 0.98, "spatial_layer3": 0.97, "spatial_layer4": 0.975,
                      "temporal_layer2": 0.95, "temporal_layer3": 0.96, "temporal_layer4": 0.955},
              "middle": {"spatial_layer2": 0.5, "spatial_layer3": 0.4, "spatial_layer4": 0.6,
                         "temporal_layer2": 0.123456, "temporal_layer3": 0.2, "temporal_layer4": 0.3}}
    rows = notebook.invariance_ordering(values, ["layer2", "layer3", "layer4"], ["spatial", "temporal"])
    assert list(rows) == [("run", "spatial"), ("run", "temporal"), ("middle", "spatial"), ("middle", "temporal")]
    assert rows["run", "spatial"]["least -> most invariant"] == "layer3 < layer4 < layer2"
    assert rows["run", "spatial"]["layer2 is"] == "the most invariant"
    assert rows["run", "temporal"]["layer2 is"] == "the least invariant"
    assert rows["middle", "spatial"]["layer2 is"] == "in between"
    assert rows["middle", "temporal"]["layer2"] == 0.1235                   # shown to 4 decimals


def test_measurement_rows_round_as_the_tables_they_come_from():
    values = {"a": {"x": 1.23456, "y": 0.5}, "b": {"x": 2.0, "y": 0.0625}}
    rows = notebook.measurement_rows(values, {"y": 3, "x": 1}, reference={"y": 0.5})
    assert rows == [{"measurement": "y", "a": 0.5, "b": 0.062, "reference": 0.5},      # half to even, as pandas rounds
                    {"measurement": "x", "a": 1.2, "b": 2.0, "reference": None}]


def _write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


@pytest.fixture
def shipped_results(tmp_path):
    """results/full_runs/ with two rows shipped (each with its own probes in the manifest, different from
    its record's, as float16 weights may make them) and one recorded row that ships nothing."""
    runs = tmp_path / "results/full_runs"
    rows = {"coupled": 0.25, "dclr": 0.5}
    for row, value in rows.items():
        (runs / row / "seed0").mkdir(parents=True)
        (runs / row / "seed0/weights.pt").write_bytes(b"w")
        _write_json(runs / row / "seed0/record.json", {"run": {"probes": {"action_unbiased": value + 0.001}}})
    _write_json(runs / "tc_only/seed0/record.json", {"run": {"probes": {"action_unbiased": 0.75}}})
    _write_json(runs / "shipped_weights.json", {"preset": "full", "rows": {
        row: {"file": f"{row}/seed0/weights.pt", "probes": {"action_unbiased": value}} for row, value in rows.items()}})
    return runs


def test_stored_probes_of_shipped_weights_are_the_manifests_for_that_file(shipped_results):
    clips = PRESETS["full"].eval_clips
    for row, value in (("coupled", 0.25), ("dclr", 0.5)):      # each folder its own row's entry
        probes, source, used = notebook.stored_probes(shipped_results / row / "seed0")
        assert probes == {"action_unbiased": value} and used == clips and "shipped_weights.json" in source
    # a record folder that ships no weights: its record's probes
    probes, source, used = notebook.stored_probes(shipped_results / "tc_only/seed0")
    assert probes == {"action_unbiased": 0.75} and source.endswith("record.json") and used == clips
    assert notebook.stored_probes(shipped_results / "nothing/seed0") is None
    # shown relative to the repository's root when asked
    root = shipped_results.parent.parent
    assert notebook.stored_probes(shipped_results / "dclr/seed0", root)[1] == \
        "results/full_runs/shipped_weights.json (dclr/seed0/weights.pt as shipped)"


def test_trained_probes_never_write_into_a_record_folder(shipped_results, monkeypatch):
    computed = []

    def fake_toy_probes(cfg, backbone, transform, device, num_clips):
        computed.append(num_clips)
        return {"action_unbiased": 0.125}

    monkeypatch.setattr(notebook, "toy_probes", fake_toy_probes)
    monkeypatch.setattr(notebook, "eval_transform", lambda model: None)
    folder = shipped_results / "dclr/seed0"
    cfg = SimpleNamespace(train=SimpleNamespace(out_dir=str(folder)))
    model = SimpleNamespace(backbone=None)
    before = sorted(p.name for p in folder.iterdir())
    clips = PRESETS["full"].eval_clips
    assert notebook.trained_probes(cfg, model, "cpu", clips)[0] == {"action_unbiased": 0.5} and computed == []
    probes, source = notebook.trained_probes(cfg, model, "cpu", clips + 1)    # not what is stored: computed
    assert probes == {"action_unbiased": 0.125} and computed == [clips + 1] and source == "computed here"
    assert sorted(p.name for p in folder.iterdir()) == before


def test_trained_probes_of_a_run_folder_read_its_cache_only_for_its_final_pt(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "final.pt").write_bytes(b"model")
    calls = []
    monkeypatch.setattr(notebook, "run_probes", lambda cfg, model, device, clips: calls.append(clips) or {"x": 1.0})
    cfg = SimpleNamespace(train=SimpleNamespace(out_dir=str(run)))
    assert notebook.stored_probes(run) is None                       # no cache yet
    assert notebook.trained_probes(cfg, None, "cpu", 2) == ({"x": 1.0}, f"computed and cached in {run / 'probes.json'}")
    stat = (run / "final.pt").stat()
    _write_json(run / "probes.json", {"key": {"final_size": stat.st_size, "final_mtime": stat.st_mtime_ns, "clips": 2},
                                      "probes": {"x": 0.5}})
    assert notebook.trained_probes(cfg, None, "cpu", 2)[0] == {"x": 0.5} and calls == [2]
    assert notebook.trained_probes(cfg, None, "cpu", 4)[0] == {"x": 1.0} and calls == [2, 4]   # other clips
    (run / "final.pt").write_bytes(b"another model")                # retrained: the cache is stale
    assert notebook.stored_probes(run) is None


def test_ablation_from_records_only_when_every_seed_matches_its_record(tmp_path):
    results = tmp_path / "results"
    per_seed = {"hdc": [{"a": 0.2}, {"a": 0.3}], "hdc_uniform": [{"a": 0.4}, {"a": 0.5}], "random_init": [{"a": 0.1}]}
    _write_json(results / "full_ablation.json", {"commit": "abc", "seeds": [0, 1], "per_seed": per_seed, "claims": []})
    for row in ("hdc", "hdc_uniform"):
        for seed, probes in enumerate(per_seed[row]):
            _write_json(results / f"full_runs/{row}/seed{seed}/record.json", {"run": {"probes": probes}})
    report, line = notebook.ablation_from_records(results, ("hdc", "hdc_uniform"))
    assert report["commit"] == "abc" and "made from the records" in line
    _write_json(results / "full_runs/hdc/seed1/record.json", {"run": {"probes": {"a": 0.31}}})   # retrained
    report, line = notebook.ablation_from_records(results, ("hdc", "hdc_uniform"))
    assert report is None and line == "results/full_ablation.json predates the records: hdc seed 1 was retrained since"
    assert notebook.ablation_from_records(results, ("hdc_uniform",))[0] is not None     # its own records still match
    (results / "full_runs/hdc_uniform/seed0/record.json").unlink()
    assert "missing" in notebook.ablation_from_records(results, ("hdc_uniform",))[1]
    assert notebook.ablation_from_records(results, ("sc_only",))[0] is None
    assert notebook.ablation_from_records(tmp_path / "elsewhere", ("hdc",))[0] is None


def test_optimiser_steps_counts_a_thinned_record_as_its_whole_run(tmp_path):
    # a run of 3 epochs of 4 steps (69 train videos in batches of 16, the last 5 dropped), every step logged
    lines, per_epoch = [], 69 // 16
    for epoch in range(3):
        for step in range(per_epoch):
            lines.append({"kind": "step", "epoch": epoch, "step": step, "global_step": epoch * per_epoch + step + 1})
        lines.append({"kind": "epoch", "epoch": epoch})
    full, record = tmp_path / "run", tmp_path / "record"

    def write_lines(folder, kept):
        folder.mkdir()
        (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in kept))

    write_lines(full, lines)
    steps = [line for line in lines if line["kind"] == "step"]
    write_lines(record, [line for line in lines if line["kind"] == "epoch" or steps.index(line) % 5 == 0])
    last_logged = steps[-1]["global_step"]                            # the naive count: the last step record
    for folder in (full, record):
        cfg = SimpleNamespace(train=SimpleNamespace(out_dir=str(folder), batch_size=16))
        assert notebook.optimiser_steps(cfg, 69) == last_logged == 12
    thinned = [json.loads(line) for line in (record / "metrics.jsonl").read_text().splitlines()]
    assert [line["global_step"] for line in thinned if line["kind"] == "step"][-1] != 12   # why the helper exists
