"""Backbones: the stage interface, shapes at several clip sizes, early stopping, the tiny net's design."""

import pytest
import torch

from hdc_lib.backbones import STAGE_NAMES, build_backbone

# (name, input shape): the torchvision nets on tiny clips (the test only checks the plumbing).
CASES = [
    ("tiny", (2, 3, 8, 32, 32)),
    ("tiny", (2, 3, 16, 64, 64)),
    ("tiny", (2, 3, 7, 30, 27)),
    ("r3d_18", (2, 3, 4, 32, 32)),
    ("r2plus1d_18", (2, 3, 4, 32, 32)),
    ("mc3_18", (2, 3, 8, 32, 32)),
]


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_features_and_forward_follow_the_contract(name, shape):
    torch.manual_seed(0)
    backbone = build_backbone(name)
    x = torch.randn(shape)
    maps = backbone.features(x)
    assert backbone.stage_names == STAGE_NAMES
    assert tuple(maps) == STAGE_NAMES
    for stage, feature_map in maps.items():
        assert feature_map.shape[:2] == (shape[0], backbone.channels[stage])
        assert feature_map.dim() == 5
        assert (feature_map >= 0).all(), f"{stage} is taken after its ReLU"
    pooled = backbone(x)
    assert pooled.shape == (shape[0], backbone.channels["layer4"])
    torch.testing.assert_close(pooled, maps["layer4"].mean(dim=(2, 3, 4)))


def test_features_run_only_as_deep_as_needed():
    backbone = build_backbone("tiny")
    ran = []
    for stage in STAGE_NAMES:
        getattr(backbone, stage).register_forward_hook(lambda module, inputs, output, stage=stage: ran.append(stage))
    maps = backbone.features(torch.randn(2, 3, 8, 32, 32), stages=["layer2", "layer1"])
    assert set(maps) == {"layer1", "layer2"}
    assert ran == ["layer1", "layer2"]


def test_tiny_map_sizes_and_size():
    backbone = build_backbone("tiny")
    shapes = {k: tuple(v.shape[2:]) for k, v in backbone.features(torch.randn(2, 3, 8, 32, 32)).items()}
    assert shapes == {"layer1": (4, 8, 8), "layer2": (4, 4, 4), "layer3": (2, 4, 4), "layer4": (2, 4, 4)}
    assert 200_000 < sum(p.numel() for p in backbone.parameters()) < 1_000_000


def test_tiny_options_and_gradient_reach_the_stem():
    backbone = build_backbone("tiny", width=0.5, in_channels=1)
    assert backbone.channels == {"layer1": 8, "layer2": 16, "layer3": 32, "layer4": 48}
    backbone(torch.randn(2, 1, 8, 32, 32)).sum().backward()
    assert backbone.stem[0].weight.grad.abs().sum() > 0


def test_bad_names_are_rejected():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet50")
    with pytest.raises(ValueError, match="stages"):
        build_backbone("tiny").features(torch.randn(2, 3, 8, 32, 32), stages=["layer5"])
