"""Receptive fields (hdc_lib/receptive_field.py): the tiny backbone's fields worked out by hand, every
backbone's fields against a naive walk back through its convolutions, the formula against the
gradient of one unit, and the shares of the input a footprint covers against naive counts."""
import numpy as np
import pytest
import torch

from hdc_lib.backbones import STAGE_NAMES, build_backbone
from hdc_lib.receptive_field import (field_shares, field_span, footprint_span, gradient_footprints,
                                     main_path_convs, receptive_fields)


def test_the_tiny_backbones_fields_worked_out_by_hand():
    """Per axis (T, H, W), r' = r + (k - 1) j, j' = j s, offset' = offset + p j, every conv 3x3x3 with
    padding 1 (k = 3, p = 1), so each conv adds 2 j to the field and j to the offset:
    stem, stride (1, 2, 2): r = 3, offset 1, j = (1, 2, 2).
    layer1, strides (2, 2, 2) then 1: r = 3 + 2 (1, 2, 2) = (5, 7, 7), j = (2, 4, 4);
      r = (5, 7, 7) + 2 (2, 4, 4) = (9, 15, 15); offset 1 + (1, 2, 2) + (2, 4, 4) = (4, 7, 7).
    layer2, (1, 2, 2): r = (9, 15, 15) + 2 (2, 4, 4) = (13, 23, 23), j = (2, 8, 8);
      r = (13, 23, 23) + 2 (2, 8, 8) = (17, 39, 39); offset (4, 7, 7) + (2, 4, 4) + (2, 8, 8) = (8, 19, 19).
    layer3, (2, 1, 1): r = (17, 39, 39) + 2 (2, 8, 8) = (21, 55, 55), j = (4, 8, 8);
      r = (21, 55, 55) + 2 (4, 8, 8) = (29, 71, 71); offset (8, 19, 19) + (2, 8, 8) + (4, 8, 8) = (14, 35, 35).
    layer4, 1: r = (29, 71, 71) + 4 (4, 8, 8) = (45, 103, 103); offset (14, 35, 35) + 2 (4, 8, 8) = (22, 51, 51).
    """
    expected = {"stem": ((3, 3, 3), (1, 2, 2), (1, 1, 1)), "layer1": ((9, 15, 15), (2, 4, 4), (4, 7, 7)),
                "layer2": ((17, 39, 39), (2, 8, 8), (8, 19, 19)), "layer3": ((29, 71, 71), (4, 8, 8), (14, 35, 35)),
                "layer4": ((45, 103, 103), (4, 8, 8), (22, 51, 51))}
    fields = receptive_fields(build_backbone("tiny"))
    assert {stage: tuple(tuple(int(v) for v in part) for part in field) for stage, field in fields.items()} == expected
    # the centre unit of layer2's map of a 24 x 48 x 48 input, (6, 3, 3), sees t 4..20 and y, x 5..43
    assert field_span(fields["layer2"], (6, 3, 3)) == [(4, 20), (5, 43), (5, 43)]


def naive_span(convs, position, axis):
    """The input positions one output position depends on, walked back conv by conv: output o of a
    conv (kernel k, stride s, padding p) reads its input's o s - p .. o s - p + k - 1."""
    first = last = position
    for _, conv in reversed(convs):
        k, s, p = conv.kernel_size[axis], conv.stride[axis], conv.padding[axis]
        first, last = first * s - p, last * s - p + k - 1
    return first, last


@pytest.mark.parametrize("name", ["tiny", "r3d_18", "r2plus1d_18"])
def test_every_stage_field_matches_a_naive_walk_back_through_the_convolutions(name):
    backbone = build_backbone(name)
    convs = main_path_convs(backbone)
    assert convs[0][0] == "stem" and [s for s, _ in convs][-1] == "layer4"
    fields = receptive_fields(backbone)
    for stage in ("stem", *STAGE_NAMES):
        upto = convs[:max(i for i, (s, _) in enumerate(convs) if s == stage) + 1]
        for position in ((0, 0, 0), (3, 5, 2)):
            assert field_span(fields[stage], position) == [naive_span(upto, position[a], a) for a in range(3)], \
                (name, stage, position)


def test_the_formula_is_exactly_where_one_units_gradient_is_non_zero():
    torch.manual_seed(0)
    backbone = build_backbone("tiny")
    backbone.train()
    x = torch.randn(2, 3, 24, 48, 48)                    # large enough for layer2's field (17 x 39 x 39)
    stages = ("layer1", "layer2")
    footprints = gradient_footprints(backbone, x, stages)
    assert backbone.training                               # the mode is restored
    fields = receptive_fields(backbone)
    with torch.no_grad():
        maps = backbone.eval().features(x, stages)
    for stage in stages:
        centre = [d // 2 for d in maps[stage].shape[2:]]
        for clip in range(2):                               # eval mode: each clip has its own footprint
            assert footprint_span(footprints[stage][clip]) == field_span(fields[stage], centre), stage
    # and it is the gradient: one clip's unit does not depend on the other clip
    (alone,) = gradient_footprints(backbone, x[:1], ("layer2",)).values()
    torch.testing.assert_close(alone[0], footprints["layer2"][0])


def naive_shares(footprint):
    """Per clip: the share of non-zero positions, and the fewest positions, largest first, whose sum
    reaches 90% of the total (as a share); then the mean over clips."""
    supports, shares = [], []
    for clip in footprint.reshape(len(footprint), -1).tolist():
        supports.append(sum(v > 0 for v in clip) / len(clip))
        total, running = sum(clip), 0.0
        for k, v in enumerate(sorted(clip, reverse=True), start=1):
            running += v
            if running >= 0.9 * total:
                shares.append(k / len(clip))
                break
    return float(np.mean(supports)), float(np.mean(shares))


def test_field_shares_match_naive_counts_and_known_cases():
    one_hot = torch.zeros(1, 2, 4, 4)
    one_hot[0, 1, 2, 3] = 5.0                              # one position holds everything: 1 of 32
    assert field_shares(one_hot) == (1 / 32, 1 / 32)
    two = torch.zeros(1, 1, 2, 2)
    two[0, 0, 0] = torch.tensor([3.0, 1.0])                # 3/4 of the mass in one of 4, 90% needs both
    assert field_shares(two) == (0.5, 0.5)
    footprint = torch.rand(3, 2, 5, 5) * (torch.rand(3, 2, 5, 5) > 0.4)
    np.testing.assert_allclose(field_shares(footprint), naive_shares(footprint))
