"""Activation-map drawing helpers (hdc_lib/viz.py): upsampling to the frames, maps of every stage,
the overlay's pixel values, and the figures that use them."""
import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from hdc_lib.augment import AugmentConfig, SpatialAugment
from hdc_lib.backbones import build_backbone
from hdc_lib.dclr import activation_map
from hdc_lib.viz import activation_panels, frame_maps, heat_rows, overlay, probe_curves, row_styles, upsample_map

JET = matplotlib.colormaps["jet"]


class BrightnessBackbone(torch.nn.Module):
    """A stand-in backbone whose 'feature map' at every stage is the input's positive part,
    average-pooled by 4 in space and 2 in time: its activation map is where the frame is bright."""

    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def features(self, x, stages):
        return {s: F.avg_pool3d(x.clamp_min(0), (2, 4, 4)) for s in stages}


def test_upsample_map_shape_sign_and_constants():
    amap = torch.rand(3, 2, 4, 4)
    up = upsample_map(amap, (8, 64, 64))
    assert up.shape == (3, 8, 64, 64) and up.dtype == torch.float32
    assert up.min() >= 0 and up.max() <= amap.max() + 1e-6   # convex combinations of the cells
    const = upsample_map(torch.full((1, 2, 4, 4), 2.5), (8, 32, 32))
    torch.testing.assert_close(const, torch.full((1, 8, 32, 32), 2.5))
    with pytest.raises(ValueError):
        upsample_map(torch.rand(2, 4, 4), (8, 32, 32))


def test_upsample_map_keeps_the_hot_cell_where_it_was():
    amap = torch.zeros(1, 1, 4, 4)
    amap[0, 0, 0, 3] = 1.0                      # top-right cell
    up = upsample_map(amap, (1, 64, 64))[0, 0]
    row, col = divmod(int(up.argmax()), 64)
    assert row < 16 and col >= 48                # the peak lies in the top-right 16x16 block
    assert up[:16, 48:].sum() > 0.5 * up.sum()


def test_frame_maps_match_activation_map_of_every_stage():
    torch.manual_seed(0)
    backbone = build_backbone("tiny")
    augment = SpatialAugment(AugmentConfig(size=32))
    transform = lambda c: augment.center(c, crop_fraction=1.0)  # noqa: E731
    clips = torch.randint(0, 256, (2, 8, 48, 48, 3), dtype=torch.uint8)
    backbone.train()
    maps = frame_maps(backbone, clips, transform)
    assert backbone.training                     # the mode is restored
    assert list(maps) == list(backbone.stage_names)
    backbone.eval()
    with torch.no_grad():
        features = backbone.features(transform(clips))
    for stage, m in maps.items():
        assert m.shape == (2, 8, 48, 48)
        assert m.min() >= 0                      # post-ReLU stage outputs
        expected = F.interpolate(activation_map(features[stage])[:, None], size=(8, 48, 48),
                                 mode="trilinear", align_corners=False)[:, 0]
        torch.testing.assert_close(m, expected)
    only = frame_maps(backbone, clips, transform, stages=("layer2",))
    assert list(only) == ["layer2"]


def test_frame_maps_lie_over_the_frames():
    """A bright square in the bottom-left of every frame gives the map's peak there."""
    clips = torch.zeros(1, 4, 64, 64, 3, dtype=torch.uint8)
    clips[:, :, 40:56, 8:24] = 255
    augment = SpatialAugment(AugmentConfig(size=32))
    maps = frame_maps(BrightnessBackbone(), clips, lambda c: augment.center(c, crop_fraction=1.0),
                      stages=("layer4",))["layer4"]
    assert maps.shape == (1, 4, 64, 64)
    heat = maps[0, 1]
    inside = heat[40:56, 8:24].mean()
    outside = torch.cat([heat[:32].flatten(), heat[:, 32:].flatten()]).mean()
    assert inside > 3 * outside
    row, col = divmod(int(heat.argmax()), 64)
    assert 36 <= row < 60 and 4 <= col < 28


def test_overlay_values():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    heat = rng.random((16, 16))
    out = overlay(frame, heat, alpha=0.5)
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    scaled = heat / heat.max()
    np.testing.assert_allclose(out, 0.5 * frame / 255 + 0.5 * JET(scaled)[..., :3], atol=1e-6)
    # alpha 0: the frame itself; alpha 1: the colour map alone
    np.testing.assert_allclose(overlay(frame, heat, alpha=0.0), frame / 255, atol=1e-6)
    np.testing.assert_allclose(overlay(frame, heat, alpha=1.0), JET(scaled)[..., :3], atol=1e-6)
    # the map's scale does not matter (it is divided by its maximum); the hottest pixel is the top colour
    np.testing.assert_allclose(overlay(frame, 1000 * heat), out, atol=1e-6)
    top = np.unravel_index(heat.argmax(), heat.shape)
    np.testing.assert_allclose(overlay(frame, heat, alpha=1.0)[top], JET(1.0)[:3], atol=1e-6)
    # an all-zero map: the bottom colour everywhere; float frames in [0, 1] and tensors work too
    zero = overlay(frame.astype(np.float32) / 255, torch.zeros(16, 16), alpha=1.0)
    np.testing.assert_allclose(zero, np.broadcast_to(JET(0.0)[:3], (16, 16, 3)), atol=1e-6)
    torch_out = overlay(torch.from_numpy(frame), torch.from_numpy(heat))
    np.testing.assert_allclose(torch_out, out, atol=1e-6)


def test_overlay_refuses_mismatched_sizes():
    with pytest.raises(ValueError):
        overlay(np.zeros((16, 16, 3), np.uint8), np.zeros((8, 8)))
    with pytest.raises(ValueError):
        overlay(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16)), alpha=1.5)


def test_overlay_on_a_shared_scale():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    heat = rng.random((16, 16))
    # vmax above the map's maximum: the colours of heat / vmax, the top colour never reached
    half = overlay(frame, heat, alpha=1.0, vmax=2 * heat.max())
    np.testing.assert_allclose(half, JET(heat / (2 * heat.max()))[..., :3], atol=1e-6)
    # vmax below it: clipped to the top colour
    clipped = overlay(frame, heat, alpha=1.0, vmax=heat.max() / 2)
    np.testing.assert_allclose(clipped[heat >= heat.max() / 2], np.broadcast_to(JET(1.0)[:3], clipped[heat >= heat.max() / 2].shape), atol=1e-6)
    # vmax = the map's own maximum is the default
    np.testing.assert_allclose(overlay(frame, heat, vmax=heat.max()), overlay(frame, heat), atol=1e-6)


def test_heat_rows_draw_each_row_on_its_own_shared_scale(tmp_path):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(3)]
    mask = np.zeros((24, 24), bool)
    mask[5:12, 5:12] = True
    heats = [rng.random((24, 24)) * scale for scale in (1.0, 4.0)]
    rows = {"frames": [{"frame": f, "title": f"video {i}"} for i, f in enumerate(frames)],
            "model": [{"frame": frames[0]},   # no heat: the frame alone
                      {"frame": frames[1], "heat": heats[0], "outlines": [(mask, "white", "-")], "note": "fg 1.00"},
                      {"frame": frames[2], "heat": heats[1]}]}
    fig = heat_rows(rows, suptitle="t", cmap="jet", alpha=0.6, path=tmp_path / "rows.png")
    panels = fig.axes[:6]
    # 2 x 3 panels and one colour bar: the frames-only row has none
    assert len(fig.axes) == 7
    drawn = lambda ax: np.asarray(ax.images[0].get_array())  # noqa: E731
    np.testing.assert_array_equal(drawn(panels[3]), frames[0])
    row_max = heats[1].max()   # the row's scale is its largest value, shared by both maps
    np.testing.assert_allclose(drawn(panels[4]), overlay(frames[1], heats[0], 0.6, "jet", vmax=row_max), atol=1e-6)
    np.testing.assert_allclose(drawn(panels[5]), overlay(frames[2], heats[1], 0.6, "jet", vmax=row_max), atol=1e-6)
    assert fig.axes[6].get_ylim() == pytest.approx((0.0, row_max))
    assert panels[0].get_title() == "video 0" and panels[4].texts[0].get_text() == "fg 1.00"
    assert (tmp_path / "rows.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="same number of panels"):
        heat_rows({"a": rows["frames"], "b": rows["frames"][:2]})


def test_probe_curves_draw_every_row_distinctly_with_its_points(tmp_path):
    # the full preset's 12 rows: no two share a colour and a line style (tab10 alone repeats at 11)
    rows = [f"row{k}" for k in range(12)]
    curves = {row: [{"step": 100 * (s + 1), "scene": 0.5 + 0.01 * k + 0.02 * s} for s in range(3)]
              for k, row in enumerate(rows)}
    fig = probe_curves(curves, ("scene",), {"scene": 0.125}, path=tmp_path / "curves.png")
    lines = [line for line in fig.axes[0].get_lines() if line.get_label() in curves]
    assert [line.get_label() for line in lines] == rows
    assert len({(matplotlib.colors.to_hex(line.get_color()), line.get_linestyle()) for line in lines}) == 12
    for line in lines:
        assert list(line.get_xdata()) == [100, 200, 300]
        assert list(line.get_ydata()) == [p["scene"] for p in curves[line.get_label()]]
    assert row_styles(rows)["row0"] == row_styles(rows[:1])["row0"]  # a row's style depends on its place only
    # the colours are fixed values, the same whatever colour cycle is active when drawn
    with matplotlib.rc_context({"axes.prop_cycle": matplotlib.cycler(color=["black", "white"])}):
        assert row_styles(rows)["row0"]["color"] == "#1f77b4"
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_activation_panels_still_draw(tmp_path):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = build_backbone("tiny")
            self.augment = SpatialAugment(AugmentConfig(size=32))

    clips = torch.randint(0, 256, (2, 8, 32, 32, 3), dtype=torch.uint8)
    fig = activation_panels({"a": Model(), "b": Model()}, clips, path=tmp_path / "p.png")
    assert len(fig.axes) == 2 * 3
    assert (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.parametrize("draw", ["hdc_schematic", "dclr_schematic"])
def test_method_schematics_are_drawn_and_saved_legibly(tmp_path, draw):
    from matplotlib.image import imread

    from hdc_lib import viz

    path = tmp_path / f"{draw}.png"
    fig = getattr(viz, draw)(path=path)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert ("v3 = S(b; θ1)" in texts and "SC positive" in texts) if draw == "hdc_schematic" else \
        ("ℓ(z_vd, k_dv)" in texts and "s: one frame" in texts)
    assert imread(path).shape[1] >= 1000  # 11 inches at 100 dpi, less the trimmed margins


@pytest.mark.parametrize("weighting,expected", [("invariance", "(W0)"), ("invariance_levels", "(W1)"),
                                                 ("uniform", "w_j = 1")])
def test_level_weights_titles_the_weighting_the_run_used(tmp_path, weighting, expected):
    import json

    from hdc_lib.viz import level_weights

    if weighting == "uniform":   # a record folder keeps its config in record.json
        (tmp_path / "record.json").write_text(json.dumps({"config": {"model": {"weighting": weighting}}}))
    else:
        (tmp_path / "config.yaml").write_text(f"method: hdc\nmodel:\n  weighting: {weighting}\n")
    records = [{"kind": "step", "epoch": 1, "step": s, "global_step": s, "weight/temporal_layer4": 1.0 + s / 10,
                "invariance/temporal_layer4": 0.9} for s in (1, 2)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    weight_ax = level_weights(tmp_path).axes[0]
    assert expected in weight_ax.get_title()
    assert list(weight_ax.lines[0].get_ydata()) == [1.1, 1.2]   # the logged weights, step by step
