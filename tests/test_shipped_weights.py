"""Shipped weights (hdc_lib/shipped_weights.py): exported from a finished run, loaded back only when
their hash, config and world version match, found by find_or_train in its order, within the size
limits; and every file a clone ships loads and reproduces its fingerprint."""
import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from hdc_lib.checkpoint import load_checkpoint
from hdc_lib.cli import main
from hdc_lib.errors import UserError
from hdc_lib.reproduce import PRESETS, plan_runs, probe_curve, reproduce
from hdc_lib.runtime import setup
from hdc_lib.shipped_weights import (FP16_TOLERANCE, MAX_ROW_BYTES, MAX_TOTAL_BYTES, HalfPrecisionTrial,
                                     check_shipped, check_sizes, export_run, export_weights, load_shipped,
                                     manifest_path, read_manifest, shipped_part)
from hdc_lib.viz import read_metrics

REPO = Path(__file__).resolve().parents[1]
# Two kinds of row: coupled ships its backbone only, HDC its heads and level weights as well.
TINY = dataclasses.replace(PRESETS["smoke"], rows=("coupled", "hdc"), records=True, curve_points=0)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A clone's layout (data/toyworld, runs/reproduce/full, results/) in which the `full` preset is
    TINY: its two runs trained and recorded, then exported."""
    root = tmp_path_factory.mktemp("clone")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(PRESETS, "full", TINY)
        dirs = dict(world_dir=root / "data" / "toyworld", runs_dir=root / "runs" / "reproduce" / "full",
                    results_dir=root / "results")
        reproduce("full", **dirs, figures_dir=root / "figures", progress=False, jobs=1)
        plan = plan_runs("full", **dirs, seeds=(0,))
        trials = {row: HalfPrecisionTrial(plan, row, setup().device) for row in TINY.rows}
        # The smoke world tests a handful of videos, so whether float16 moves one of its probes by
        # more than FP16_TOLERANCE is luck (one video is a step of 1/16): here both rows ship in
        # float16 (the float32 branch has its own test), whatever the rounding did.
        patch.setattr("hdc_lib.shipped_weights.FP16_TOLERANCE", 1.0)
        export_weights(plan, TINY.rows, setup().device)
    # PRESETS["full"] is the real preset again: a test that needs TINY patches it for itself, so
    # that the tests of the committed files, later in this module, read the preset they were made by
    yield {"root": root, "plan": plan, "trials": trials, **dirs}


def copy_of_results(shipped, tmp_path) -> Path:
    """Another clone with the same results/ and world and no runs: only shipped weights to find."""
    (tmp_path / "data").mkdir(parents=True)
    (tmp_path / "data" / "toyworld").symlink_to(shipped["world_dir"])
    shutil.copytree(shipped["results_dir"], tmp_path / "results")
    return tmp_path


def test_export_ships_the_runs_own_weights_in_the_precision_its_probes_allow(shipped):
    manifest = manifest_path(shipped["results_dir"], "full")
    entries = read_manifest(manifest)
    assert set(entries) == {"coupled", "hdc"}
    for row, entry in entries.items():
        final = load_checkpoint(shipped["runs_dir"] / row / "seed0" / "final.pt")["model"]
        saved = load_checkpoint(manifest.parent / entry["file"])
        method = "hdc" if row == "hdc" else "coupled"
        assert set(saved) == set(shipped_part(final, method))
        assert entry["dtype"] == "float16" and entry["fp16_probe_change"] == [shipped["trials"][row].change,
                                                                           shipped["trials"][row].metric]
        rounded = {k: v.half() if v.is_floating_point() else v for k, v in final.items()}
        assert all(torch.equal(saved[k], rounded[k]) for k in saved)
        assert entry["bytes"] == (manifest.parent / entry["file"]).stat().st_size <= MAX_ROW_BYTES
        record = json.loads((manifest.parent / row / "seed0" / "record.json").read_text())
        assert entry["trained_at"] == record["commit"]
        assert entry["steps"] == shipped["plan"].epochs[row] * shipped["plan"].steps_per_epoch
    # the page beside the manifest names each row's precision, the commit it was trained at, and the total
    page = manifest.with_suffix(".md").read_text().splitlines()
    for row, entry in entries.items():
        [line] = [l for l in page if l.startswith(f"| {row} |")]
        assert "| float16 |" in line and f"`{entry['trained_at']}`" in line
    total = sum(e["bytes"] for e in entries.values()) / 1e6
    assert any(f"{total:.1f} MB in all" in l for l in page)
    assert any(k.startswith("online.heads.") for k in load_checkpoint(manifest.parent / entries["hdc"]["file"]))
    assert not any(k.startswith("online.heads.") for k in load_checkpoint(manifest.parent / entries["coupled"]["file"]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(PRESETS, "full", TINY)
        # loads as a notebook loads it, and its features of the fixed clips are the manifest's
        assert check_shipped("full", shipped["results_dir"], shipped["world_dir"], shipped["runs_dir"],
                             setup().device) == ["coupled", "hdc"]


def test_find_or_train_takes_the_own_run_then_the_shipped_weights_then_a_short_run(shipped, tmp_path, monkeypatch, capsys):
    from hdc_lib.trained_models import find_or_train

    monkeypatch.setitem(PRESETS, "full", TINY)
    find_or_train("hdc", shipped["root"], short=[])
    assert "hdc: the `hdc reproduce --preset full` run (1 epoch, runs/reproduce/full/hdc/seed0)" in capsys.readouterr().out

    clone = copy_of_results(shipped, tmp_path)
    cfg, model = find_or_train("hdc", clone, short=[])
    steps = read_manifest(manifest_path(clone / "results", "full"))["hdc"]["steps"]
    assert capsys.readouterr().out == (f"hdc: the weights shipped from the `full` preset's run ({steps} steps, seed 0, "
                                       "results/full_runs/hdc/seed0/weights.pt)\n")
    saved = load_checkpoint(clone / "results" / "full_runs" / "hdc" / "seed0" / "weights.pt")
    assert all(torch.equal(v.float(), model.state_dict()[k].float()) for k, v in saved.items())
    assert not model.training and cfg.method == "hdc"
    # Its metrics and probe curve are the record's (the run's own every fifth step; the curve it
    # recorded, none for TINY), read without writing into results/.
    record = clone / "results" / "full_runs" / "hdc" / "seed0"
    assert Path(cfg.train.out_dir) == record
    assert read_metrics(cfg.train.out_dir, "step") == read_metrics(shipped["runs_dir"] / "hdc" / "seed0", "step")[::5]
    assert probe_curve(cfg, 0, "cpu", 0, 0) == []
    saved_run = json.loads((record / "record.json").read_text())
    saved_run["run"]["curve"] = [{"step": 18, "action_unbiased": 0.25, "direction": 0.5, "scene": 0.75}]
    (record / "record.json").write_text(json.dumps(saved_run))
    assert probe_curve(cfg, 0, "cpu", 0, 0) == saved_run["run"]["curve"]
    assert not (record / "probe_curve.json").exists()

    weights = clone / "results" / "full_runs" / "coupled" / "seed0" / "weights.pt"
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2] ^= 1
    weights.write_bytes(bytes(damaged))
    short = [f"data.root={shipped['world_dir']}", f"data.toyworld={json.dumps(TINY.world)}", "train.epochs=1",
             "train.batch_size=16", "train.knn_every=0", f"train.out_dir={clone / 'runs' / 'nb' / 'coupled'}"]
    find_or_train("coupled", clone, short=short)
    line = capsys.readouterr().out.splitlines()[0]  # (training's own lines follow it)
    assert "(the shipped weights were refused: " in line and "sha256 differs" in line
    assert line.endswith("so a short run of 1 epoch (runs/nb/coupled)")


def test_a_damaged_or_mismatched_file_is_refused_with_one_line(shipped, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(PRESETS, "full", TINY)
    clone = copy_of_results(shipped, tmp_path)
    manifest = manifest_path(clone / "results", "full")
    weights = manifest.parent / "hdc" / "seed0" / "weights.pt"
    args = dict(preset_name="full", row="hdc", results_dir=clone / "results", world_dir=shipped["world_dir"],
                runs_dir=clone / "runs", device=setup().device)
    good_bytes, good_manifest = weights.read_bytes(), manifest.read_text()

    def refusal(change) -> str:
        weights.write_bytes(good_bytes)
        manifest.write_text(good_manifest)
        change()
        with pytest.raises(UserError) as err:
            load_shipped(**args)
        return str(err.value)

    def edit(key, value):
        saved = json.loads(good_manifest)
        entry = saved["rows"]["hdc"]
        if key == "lr":
            entry["config"]["optim"]["lr"] *= 2
        else:
            entry[key] = value
        manifest.write_text(json.dumps(saved))

    flipped = good_bytes[:100] + bytes([good_bytes[100] ^ 1]) + good_bytes[101:]
    assert "sha256 differs" in refusal(lambda: weights.write_bytes(flipped))
    assert "differs in optim.lr" in refusal(lambda: edit("lr", None))
    assert "trained on toy world version 0" in refusal(lambda: edit("world_version", 0))
    assert "listed in the manifest but missing" in refusal(weights.unlink)

    # at the command line: one line naming the file, exit status 2
    weights.write_bytes(flipped)
    manifest.write_text(good_manifest)
    status = main(["reproduce", "--preset", "full", "--check-weights", "--results", str(clone / "results"),
                   "--world", str(shipped["world_dir"]), "--runs", str(clone / "runs")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"hdc: {weights}: sha256 differs")


def test_a_run_whose_probes_float16_moves_ships_in_float32(shipped, tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS, "full", TINY)
    clone = copy_of_results(shipped, tmp_path)
    plan = dataclasses.replace(shipped["plan"], sources=clone / "results" / "full_runs")
    trial = copy.copy(shipped["trials"]["coupled"])
    trial.change, trial.fp16 = FP16_TOLERANCE + 0.0025, False   # one test video more than the tolerance
    monkeypatch.setattr("hdc_lib.shipped_weights.MAX_ROW_BYTES", 10 * MAX_ROW_BYTES)  # the backbone in float32
    monkeypatch.setattr("hdc_lib.shipped_weights.MAX_TOTAL_BYTES", 10 * MAX_TOTAL_BYTES)
    manifest = plan.sources / "shipped_weights.json"
    entry = export_run(plan, trial, manifest, read_manifest(manifest), setup().device)
    saved = load_checkpoint(clone / "results" / "full_runs" / entry["file"])
    final = load_checkpoint(shipped["runs_dir"] / "coupled" / "seed0" / "final.pt")["model"]
    assert entry["dtype"] == "float32" and entry["probes"] == trial.full_probes
    assert set(saved) == set(shipped_part(final, "coupled")) and all(torch.equal(v, final[k]) for k, v in saved.items())


def test_when_float32_would_break_the_size_limit_float16_ships_marked_over_tolerance(shipped, tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS, "full", TINY)
    clone = copy_of_results(shipped, tmp_path)
    plan = dataclasses.replace(shipped["plan"], sources=clone / "results" / "full_runs")
    trial = copy.copy(shipped["trials"]["coupled"])
    trial.change, trial.fp16 = FP16_TOLERANCE + 0.0075, False
    manifest = plan.sources / "shipped_weights.json"
    entry = export_run(plan, trial, manifest, read_manifest(manifest), setup().device)
    saved = load_checkpoint(clone / "results" / "full_runs" / entry["file"])
    final = load_checkpoint(shipped["runs_dir"] / "coupled" / "seed0" / "final.pt")["model"]
    assert shipped_part(final, "coupled") and 2 * entry["bytes"] > MAX_ROW_BYTES   # float32 would not fit
    assert entry["dtype"] == "float16" and entry["over_tolerance"] is True and entry["bytes"] <= MAX_ROW_BYTES
    assert entry["fp16_probe_change"][0] == FP16_TOLERANCE + 0.0075 and entry["probes"] == trial.half_probes
    assert all(torch.equal(v, final[k].half()) for k, v in saved.items())


def test_size_guard_per_row_and_in_all(shipped, tmp_path, monkeypatch):
    manifest = tmp_path / "shipped_weights.json"
    rows = {f"row{i}": {"file": f"row{i}/seed0/weights.pt", "bytes": MAX_ROW_BYTES} for i in range(16)}
    check_sizes(rows, manifest)  # 16 rows at the row limit: 24 MB, within 25
    with pytest.raises(UserError, match=f"row3/seed0/weights.pt: {MAX_ROW_BYTES + 1} bytes, over the"):
        check_sizes({**rows, "row3": {"file": "row3/seed0/weights.pt", "bytes": MAX_ROW_BYTES + 1}}, manifest)
    with pytest.raises(UserError, match=f"17 rows ship {17 * MAX_ROW_BYTES} bytes, over the {MAX_TOTAL_BYTES}"):
        check_sizes({**rows, "row16": {"file": "x", "bytes": MAX_ROW_BYTES}}, manifest)

    # an export over the limit is refused and leaves the shipped file as it was
    clone = copy_of_results(shipped, tmp_path / "clone")
    plan = dataclasses.replace(shipped["plan"], sources=clone / "results" / "full_runs")
    manifest = plan.sources / "shipped_weights.json"
    before = manifest.read_text()
    with pytest.MonkeyPatch.context() as patch, pytest.raises(UserError, match="over the 1000 a row may ship"):
        patch.setattr("hdc_lib.shipped_weights.MAX_ROW_BYTES", 1000)
        export_run(plan, shipped["trials"]["hdc"], manifest, read_manifest(manifest), setup().device)
    assert manifest.read_text() == before
    assert sorted(p.name for p in (plan.sources / "hdc" / "seed0").iterdir()) == ["metrics.jsonl", "record.json", "weights.pt"]
    monkeypatch.setitem(PRESETS, "full", TINY)
    assert check_shipped("full", clone / "results", shipped["world_dir"], clone / "runs", setup().device)


@pytest.mark.parametrize("preset_name", [name for name, preset in PRESETS.items() if preset.records])
def test_every_committed_shipped_file_loads_matches_its_hash_and_fingerprint(preset_name):
    """Over whatever results/<preset>_runs/shipped_weights.json the repository holds (none yet: the
    full preset's new run exports them), within the size limits."""
    checked = check_shipped(preset_name, REPO / "results", REPO / "data" / "toyworld",
                            REPO / "runs" / "reproduce" / preset_name, setup().device)
    assert checked == list(read_manifest(manifest_path(REPO / "results", preset_name)))


@pytest.mark.slow
def test_two_shipped_rows_probe_as_their_records_say_on_the_default_world():
    from hdc_lib.features import eval_transform
    from hdc_lib.probes import toy_probes

    manifest = manifest_path(REPO / "results", "full")
    rows = list(read_manifest(manifest))[:2]
    if len(rows) < 2:
        pytest.skip(f"fewer than two rows ship weights ({manifest} lists {len(rows)}): the full preset's new run exports them")
    device = setup().device
    for row in rows:
        cfg, model = load_shipped("full", row, REPO / "results", REPO / "data" / "toyworld",
                                  REPO / "runs" / "reproduce" / "full", device)
        probes = toy_probes(cfg, model.backbone, eval_transform(model), device, PRESETS["full"].eval_clips)
        entry = read_manifest(manifest)[row]
        recorded = json.loads((manifest.parent / row / "seed0" / "record.json").read_text())["run"]["probes"]
        # float16 moved no probe by more than its tolerance at the export (or by the change the
        # manifest states, for a row over it); allow as much again for another machine's arithmetic
        # flipping a test video or two
        moved = entry["fp16_probe_change"][0] if entry["over_tolerance"] else FP16_TOLERANCE
        assert max(abs(probes[m] - recorded[m]) for m in recorded) <= moved + FP16_TOLERANCE, row
        assert max(abs(probes[m] - entry["probes"][m]) for m in recorded) <= FP16_TOLERANCE, row


def test_a_change_of_two_test_videos_in_400_is_the_tolerance_itself():
    from hdc_lib.shipped_weights import probe_change

    before, after = {"direction@layer2": 217 / 400, "scene": 0.98}, {"direction@layer2": 215 / 400, "scene": 0.98}
    assert 217 / 400 - 215 / 400 > FP16_TOLERANCE            # what float subtraction leaves
    assert probe_change(before, after) == (FP16_TOLERANCE, "direction@layer2")
