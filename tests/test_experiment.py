"""Run configs: every shipped config loads; overrides and impossible values are handled up front."""
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from hdc_lib.config import ConfigError
from hdc_lib.data.toyworld import ToyWorld
from hdc_lib.experiment import apply_overrides, build_optimizer, load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.train.out_dir.startswith("runs/")


def test_paper_presets_keep_the_papers_settings():
    cfg = load_config(CONFIG_DIR / "ucf101/dclr_r2plus1d.yaml")
    model = cfg.model
    assert (model.backbone, model.clip_frames, model.clip_stride, model.augment.size) == ("r2plus1d_18", 16, 2, 112)
    assert (model.queue_size, model.momentum, model.temperature, model.topk) == (2048, 0.999, 0.07, 5)
    assert (model.augment.scale, model.augment.flip_p, model.augment.blur_p) == ((0.2, 1.0), 0.5, 0.5)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.milestones, cfg.optim.weight_decay) == ("sgd", 0.01, (120, 160), 1e-4)
    assert (cfg.train.epochs, cfg.train.batch_size) == (200, 64)


def test_dotted_overrides_are_parsed_as_yaml():
    raw = apply_overrides({"train": {"epochs": 3}}, ["train.epochs=5", "model.levels=[layer4]",
                                                     "data.cache=false", "optim.lr=1e-3"])
    assert raw == {"train": {"epochs": 5}, "model": {"levels": ["layer4"]}, "data": {"cache": False},
                   "optim": {"lr": 1e-3}}


@pytest.mark.parametrize("overrides, message", [
    (["model.queue_size=100"], "multiple of the global batch"),
    (["method=simclr"], "method: 'simclr' is not one of"),
    (["train.epoch=3"], "unknown key 'train.epoch'"),
    (["optim.lr=-1"], "optim.lr must be > 0"),
    (["train.epochs"], "not of the form key.path=value"),
    (["data.dataset=kinetics"], "data.dataset: 'kinetics' is not one of"),
    (["train.batch_size=0", "model.queue_size=64"], "train.batch_size must be >= 1, got 0"),
    (["train.log_every=0"], "train.log_every must be >= 1"),
    (["train.checkpoint_every=0"], "train.checkpoint_every must be >= 1"),
    (["train.keep_checkpoints=0"], "train.keep_checkpoints must be >= 1"),
    (["train.knn_every=-1"], "train.knn_every must be >= 0"),
    (["train.knn_videos=0"], "train.knn_videos must be >= 1"),
    (["data.workers=-2"], "data.workers must be >= 0"),
    (["train.batch_size=8.5"], "train.batch_size: expected int"),
    (["model.augment.size=[1, 2]"], "model.augment.size: expected int"),
    (["data.on_error=ignore"], "data.on_error: 'ignore' is not one of"),
])
def test_config_errors_are_clear_and_early(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_yaml_is_read_with_a_safe_loader(tmp_path):
    """A config that would run code under an unsafe YAML loader is refused and runs nothing."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"method: !!python/object/apply:os.mkdir [{str(marker)!r}]\n")
    with pytest.raises(ConfigError, match="evil.yaml:1: not valid YAML"):
        load_config(path)
    assert not marker.exists()


def test_yaml_must_be_a_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: the top level must be a mapping"):
        load_config(path)


def learning_rates(optim_cfg, steps_per_epoch=10, epochs=5):
    """The learning rate at every step of a schedule."""
    optimizer, scheduler = build_optimizer(optim_cfg, [torch.nn.Parameter(torch.zeros(1))],
                                           steps_per_epoch, epochs)
    rates = []
    for _ in range(steps_per_epoch * epochs):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_cosine_schedule_warms_up_then_decays():
    cfg = load_config(None, ["optim.warmup_epochs=1", "optim.schedule=cosine"]).optim
    lrs = learning_rates(cfg)
    assert lrs[0] == pytest.approx(cfg.lr / 10) and lrs[9] == pytest.approx(cfg.lr)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01 * cfg.lr


def test_step_schedule_divides_at_the_milestones():
    cfg = load_config(None, ["optim.schedule=step", "optim.milestones=[2, 4]"]).optim
    lrs = learning_rates(cfg)
    assert lrs[19] == pytest.approx(cfg.lr) and lrs[20] == pytest.approx(cfg.lr * 0.1)
    assert lrs[40] == pytest.approx(cfg.lr * 0.01)


def test_a_toy_run_records_every_world_argument():
    # A run's config holds the whole world (defaults resolved), so a run made before a default
    # changed does not compare equal to a run of the new default world.
    implicit = load_config(None, [])
    explicit = load_config(None, [f"data.toyworld={{videos_per_class: {ToyWorld().videos_per_class}}}"])
    assert implicit.data.toyworld == asdict(ToyWorld()) == explicit.data.toyworld
    assert implicit.to_dict() == explicit.to_dict()
    older = load_config(None, ["data.toyworld={videos_per_class: 100}"])
    assert older.data.toyworld == {**asdict(ToyWorld()), "videos_per_class": 100}
    assert older.to_dict() != implicit.to_dict()
