"""Every toy row trains under the same rules (issue: HDC's readings, "the same rules for every row"):
one temperature, windows placed by the same knob, and no recorded knob that did nothing."""
from pathlib import Path

import numpy as np
import pytest

from hdc_lib.data.samplers import RandomClipSampler
from hdc_lib.dclr import DCLR, DCLRConfig
from hdc_lib.experiment import load_config

TOY = Path(__file__).resolve().parents[1] / "configs" / "toy"


@pytest.mark.parametrize("config", sorted(TOY.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_contrastive_toy_row_runs_at_one_temperature(config):
    model = load_config(config, []).model
    if hasattr(model, "temperature"):
        assert model.temperature == 0.1


def test_dclr_windows_start_window_offset_frames_apart():
    """The toy's 2-8 frames, read from raw-window starts sampled the way training samples them."""
    model = DCLR(DCLRConfig(temperature=0.1, clip_frames=4, clip_stride=2))
    sampler = RandomClipSampler(**model.clip_request())
    rng = np.random.default_rng(0)
    gaps = [abs(int(w[1, 0]) - int(w[0, 0])) for w in (sampler(32, rng) for _ in range(300))]
    assert min(gaps) >= 2 and max(gaps) <= 8 and len(set(gaps)) == 7
    official = RandomClipSampler(**DCLR(DCLRConfig(window_offset=None, clip_frames=4)).clip_request())
    gaps = [abs(int(w[1, 0]) - int(w[0, 0])) for w in (official(32, rng) for _ in range(300))]
    assert max(gaps) > 8  # the official sampler puts the windows anywhere


def test_dclr_cross_video_is_on_exactly_when_there_is_a_queue_to_search():
    assert DCLRConfig().cross_video is False
    assert DCLRConfig(queue_size=64).cross_video is True
    assert DCLRConfig(queue_size=64, cross_video=False).cross_video is False
    with pytest.raises(ValueError, match="cross_video"):
        DCLRConfig(cross_video=True)
