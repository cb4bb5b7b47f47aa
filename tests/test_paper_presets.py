"""The paper presets run unchanged (backbone, 16 x 112 px clips, queue, optimiser) on a miniature
UCF101 tree, for one training step on CPU (R(2+1)D at 112 px is about a clip per second here):
only the paths, the batch (with 2 shuffle-BN groups of 2 for it) and the epoch count differ."""
import pytest

from hdc_lib.experiment import load_config
from hdc_lib.train import train


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["ucf101/dclr_r2plus1d.yaml", "ucf101/hdc_r2plus1d.yaml"])
def test_paper_preset_trains_on_a_miniature_ucf101_tree(preset, ucf101_layout, tmp_path):
    cfg = load_config(f"configs/{preset}", [
        f"data.root={ucf101_layout['videos']}", f"data.split_dir={ucf101_layout['splits']}",
        "data.workers=0", "train.batch_size=4", "model.shuffle_bn_groups=2", "train.epochs=1",
        "train.knn_every=0", f"train.out_dir={tmp_path / 'run'}"])
    assert cfg.model.augment.size == 112 and cfg.model.clip_frames == 16 and cfg.model.queue_size == 2048
    assert cfg.model.negatives == "queue"
    summary = train(cfg, progress=False)
    method = summary["method"]
    assert summary["interrupted"] is None and (tmp_path / "run" / "final.pt").exists()
    assert int(method.queue.pointer) == 4  # one step of 4 videos went into the queue
