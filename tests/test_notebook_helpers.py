"""The notebooks' setup (hdc_lib/notebook.py): the mode decides the world, the presets and the budget;
the short-run overrides are what load_config makes a run of; the seed and the figure style are set."""
import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

from hdc_lib import notebook
from hdc_lib.data.toyworld import VERSION
from hdc_lib.experiment import load_config
from hdc_lib.reproduce import CONFIGS


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
