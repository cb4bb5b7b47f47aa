"""The reproduction pipeline end to end at smoke size (every row, probe, claim and figure); its
statistics are tested in test_stats.py."""
import json
from pathlib import Path

import pytest

from hdc_lib.data.toyworld import read_world_record
from hdc_lib.experiment import load_config
from hdc_lib.reproduce import (CLAIMS, HEADLINE, PRESETS, RANDOM_INIT, claim_lines, clips_per_video, epochs_for,
                               plan_runs, recorded_run, reproduce)

REPO = Path(__file__).resolve().parents[1]


def test_budgets_are_steps_and_every_self_supervised_row_shares_one():
    assert epochs_for(450, 600, 64) == 50  # 9 steps an epoch
    assert epochs_for(1, 600, 64) == 1
    for preset in PRESETS.values():
        claimed = {row for _, winner, other, _, _ in CLAIMS for row in (winner, other)}
        assert claimed & set(preset.rows), preset


def test_every_claim_compares_two_rows_of_one_preset():
    assert all(any({winner, other} <= {*preset.rows, RANDOM_INIT} for preset in PRESETS.values())
               for _, winner, other, _, _ in CLAIMS)


def test_the_shortcut_cost_claim_compares_unbiased_minus_biased_action():
    """DCLR's cost (0.70 - 0.66 = 0.04 per seed) against coupled's (0.20 - 0.12 = 0.08): -0.04."""
    dclr = [{"action_unbiased": 0.70 + d, "action_biased": 0.66 + d, "fg_ratio": 1.0, "scene": 0.9}
            for d in (-0.01, 0.0, 0.01)]
    coupled = [{"action_unbiased": 0.20 + d, "action_biased": 0.12 + 2 * d, "fg_ratio": 1.0, "scene": 0.9}
               for d in (-0.01, 0.0, 0.01)]
    line = next(c for c in claim_lines({"dclr": dclr, "coupled": coupled}) if c["metric"] == "shortcut_cost")
    assert line["difference"][0] == pytest.approx(-0.04)
    assert line["means"] == pytest.approx([0.04, 0.08])


@pytest.mark.parametrize("row, clips", [("coupled", 2), ("coupled_rev", 3), ("tc_only", 3), ("tc_only_nov3", 2),
                                        ("tc_only_rev", 4), ("hdc", 3), ("sc_only", 2), ("dclr", 6),
                                        ("supervised", 1)])
def test_clips_per_video_counts_every_view_a_step_encodes(row, clips):
    """By hand from docs/methods.md: coupled a, b (+ reversed a); TC v1, v2 (+ v3, + reversed v1);
    HDC v1, v2, v3 in one pass; SC only v1, v3; DCLR v, s, d of two windows; supervised one clip."""
    assert clips_per_video(load_config(f"configs/toy/{row}.yaml", [])) == clips


def test_claim_lines_are_decided_after_holms_correction_over_all_of_them():
    """Two lines, each significant alone (p 0.038 and 0.031, intervals above 0), are not after
    Holm's correction over both (0.031 x 2 = 0.062): too few seeds to tell, intervals shown."""
    tc_only = {"action_unbiased": [0.52, 0.56, 0.60], "direction": [0.53, 0.56, 0.59]}
    coupled = {"action_unbiased": [0.42, 0.46, 0.50], "direction": [0.45, 0.48, 0.51]}
    per_seed = {row: [{m: v[k] for m, v in values.items()} for k in range(3)]
                for row, values in (("tc_only", tc_only), ("coupled", coupled))}
    lines = claim_lines(per_seed)
    assert [line["metric"] for line in lines] == ["action_unbiased", "direction"]
    assert [line["p_value"] for line in lines] == pytest.approx([0.0376, 0.0309], abs=1e-4)
    assert all(line["difference"][1] > 0 for line in lines)
    assert [line["p_holm"] for line in lines] == pytest.approx([0.0618, 0.0618], abs=1e-4)
    assert all(line["verdict"].startswith("too few seeds to tell (interval [+0.0") for line in lines)


def test_smoke_reproduction_writes_the_claims_table_and_figures(tmp_path):
    report = reproduce("smoke", world_dir=tmp_path / "world", runs_dir=tmp_path / "runs",
                       results_dir=tmp_path / "results", figures_dir=tmp_path / "figures",
                       progress=False, jobs=2)
    assert set(report["table"]) == set(PRESETS["smoke"].rows) | {RANDOM_INIT}
    for row in report["table"].values():
        assert set(HEADLINE) <= set(row)
        assert all(0.0 <= row[m][0] <= 1.0 for m in HEADLINE if m != "fg_ratio")
        assert row["fg_ratio"][0] > 0
    rows = set(PRESETS["smoke"].rows) | {RANDOM_INIT}
    assert {c["claim"] for c in report["claims"]} == {c[0] for c in CLAIMS if {c[1], c[2]} <= rows}
    assert all(c["verdict"] == "too few seeds to tell (one seed: no interval)" for c in report["claims"])
    assert report["invariance"]["levels"]  # the premise, measured on the HDC runs
    assert set(report["curves"]) == set(PRESETS["smoke"].rows)
    table = (tmp_path / "results" / "smoke_ablation.md").read_text()
    assert "hdc reproduce --preset smoke" in table and "| dclr |" in table and "| random_init |" in table
    assert "## The claims" in table and "Decoupling: HDC" in table and "clips/video" in table
    assert (tmp_path / "runs" / "hdc" / "seed0" / "probes.json").exists()
    saved = json.loads((tmp_path / "results" / "smoke_ablation.json").read_text())
    assert saved["preset"] == "smoke"
    # the report says which world its runs saw: the version and every argument of the rendered world
    world = read_world_record(tmp_path / "world")
    assert saved["world"] == {"version": world["version"], **world["world"]}
    assert f"Toy world version {world['version']}: " in table
    for name in ("ablation", "probe_curves", "training_curves", "level_weights", "activation_maps"):
        png = tmp_path / "figures" / f"smoke_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second call, one run at a time in this process, finds every run that the two workers
    # finished and trains nothing again: same numbers, in the same order.
    again = reproduce("smoke", world_dir=tmp_path / "world", runs_dir=tmp_path / "runs",
                      results_dir=tmp_path / "results2", figures_dir=tmp_path / "figures2",
                      progress=False, jobs=1)
    assert again["per_seed"] == report["per_seed"]
    # a found run keeps the training time it took (its epochs' times), not this call's 0 s
    assert again["train_seconds"] == report["train_seconds"] and all(s[0] > 0 for s in report["train_seconds"].values())
    assert (report["trained_here"], again["trained_here"], again["runs"]) == (6, 0, 6)
    assert "this call trained" not in table
    assert "(this call trained 0 of its 6 runs and found the others finished)" in (
        tmp_path / "results2" / "smoke_ablation.md").read_text()


def test_records_stand_for_finished_runs_on_another_clone(tmp_path, monkeypatch):
    """A preset with records leaves one per run in results/<preset>_runs/; a later call with those
    records and no run folders at all trains nothing and rebuilds the same table; a record made
    under another config does not stand for the run."""
    import dataclasses
    import shutil

    preset = dataclasses.replace(PRESETS["smoke"], rows=("hdc",), records=True)
    monkeypatch.setitem(PRESETS, "recorded", preset)
    kwargs = dict(world_dir=tmp_path / "world", results_dir=tmp_path / "results", progress=False, jobs=1)
    report = reproduce("recorded", runs_dir=tmp_path / "runs", figures_dir=tmp_path / "figures", **kwargs)
    record = tmp_path / "results" / "recorded_runs" / "hdc" / "seed0"
    saved = json.loads((record / "record.json").read_text())
    assert saved["run"]["probes"] == report["per_seed"]["hdc"][0] and saved["commit"]
    assert report["run_commits"] == [saved["commit"]]

    shutil.rmtree(tmp_path / "runs")  # another clone: only the committed results/ came along
    again = reproduce("recorded", runs_dir=tmp_path / "runs2", figures_dir=tmp_path / "figures2", **kwargs)
    assert again["per_seed"] == report["per_seed"] and again["train_seconds"] == report["train_seconds"]
    assert not (tmp_path / "runs2" / "hdc" / "seed0" / "final.pt").exists()  # nothing trained
    assert "this call trained 0 of its 1 runs, the records stand for the others" in (
        tmp_path / "results" / "recorded_ablation.md").read_text()
    assert json.dumps(again["invariance"]) == json.dumps(report["invariance"])  # from the record's metrics (NaN-safe)
    assert (tmp_path / "figures2" / "recorded_level_weights.png").exists()
    assert not (tmp_path / "figures2" / "recorded_activation_maps.png").exists()  # needs the models

    saved["config"]["optim"]["lr"] *= 2
    (record / "record.json").write_text(json.dumps(saved))
    reproduce("recorded", runs_dir=tmp_path / "runs2", figures_dir=tmp_path / "figures2", **kwargs)
    assert (tmp_path / "runs2" / "hdc" / "seed0" / "final.pt").exists()  # trained again
    assert json.loads((record / "record.json").read_text())["config"]["optim"]["lr"] == saved["config"]["optim"]["lr"] / 2


def test_find_or_train_loads_the_reproductions_run_or_trains_a_short_one(tmp_path, monkeypatch, capsys):
    import dataclasses

    import torch

    from hdc_lib.checkpoint import load_checkpoint
    from hdc_lib.reproduce import run_config
    from hdc_lib.train import train
    from hdc_lib.trained_models import find_or_train

    preset = dataclasses.replace(PRESETS["smoke"], rows=("coupled",))
    monkeypatch.setitem(PRESETS, "tiny", preset)
    world, runs = tmp_path / "data" / "toyworld", tmp_path / "runs" / "reproduce" / "tiny"
    train(run_config("coupled", preset, 0, world, runs, 1, curve=True), progress=False)

    cfg, model = find_or_train("coupled", tmp_path, short=[], presets=("tiny",))
    assert "`hdc reproduce --preset tiny` run" in capsys.readouterr().out
    saved = load_checkpoint(runs / "coupled" / "seed0" / "final.pt")["model"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert not model.training

    short = [f"data.root={world}", f"data.toyworld={json.dumps(preset.world)}", "train.epochs=1",
             "train.batch_size=16", "train.knn_every=0", f"train.out_dir={tmp_path / 'runs' / 'nb' / 'supervised'}"]
    cfg, model = find_or_train("supervised", tmp_path, short=short, presets=("tiny",))
    assert "so a short run of 1 epoch (runs/nb/supervised)" in capsys.readouterr().out
    assert (tmp_path / "runs" / "nb" / "supervised" / "final.pt").exists() and cfg.method == "supervised"


def test_rows_and_seeds_train_only_those_runs_and_a_later_call_only_the_missing(tmp_path, monkeypatch, capfd):
    """--rows/--seeds: the runs asked for, trained side by side with a line per epoch each (their
    row and seed first, no bars), their probes printed, no table; a later call trains nothing it
    has, quietly without progress; the whole preset then trains only the run still missing."""
    import dataclasses

    from hdc_lib.errors import UserError

    preset = dataclasses.replace(PRESETS["smoke"], rows=("coupled", "hdc", "supervised_static"), curve_points=0)
    monkeypatch.setitem(PRESETS, "three", preset)
    dirs = dict(world_dir=tmp_path / "world", runs_dir=tmp_path / "runs", results_dir=tmp_path / "results",
                figures_dir=tmp_path / "figures")
    with pytest.raises(UserError, match=r"--rows: nope not in the three preset \(it has coupled, hdc, supervised_static\)"):
        reproduce("three", **dirs, rows=("nope",))
    with pytest.raises(UserError, match="--seeds: 4 not in the three preset"):
        reproduce("three", **dirs, seeds=(4,))

    first = reproduce("three", **dirs, rows=("hdc", "coupled"), seeds=(0,), progress=True, jobs=2)
    out, err = capfd.readouterr()
    assert [(d["row"], d["trained_here"]) for d in first["finished"]] == [("coupled", True), ("hdc", True)]
    for row in ("coupled", "hdc"):
        assert any(line.startswith(f"{row} seed0 epoch 1/1") and "elapsed" in line for line in out.splitlines())
        assert f"{row} seed 0: action_unbiased " in out
    assert "epoch" not in err  # the workers' training bars go nowhere (the world's render bar stays)
    assert not (tmp_path / "runs" / "supervised_static").exists() and not (tmp_path / "results").exists()

    again = reproduce("three", **dirs, rows=("coupled", "hdc"), progress=False, jobs=1)
    assert not any(d["trained_here"] for d in again["finished"])
    assert [d["probes"] for d in again["finished"]] == [d["probes"] for d in first["finished"]]
    assert "epoch" not in capfd.readouterr().out

    whole = reproduce("three", **dirs, progress=False, jobs=1)
    assert (whole["trained_here"], whole["runs"]) == (1, 3)
    assert (tmp_path / "results" / "three_ablation.md").exists()


def test_the_demo_sets_its_runs_beside_the_records_of_the_same_runs(tmp_path, monkeypatch):
    """A preset with a `reference` ends its report with its runs beside that preset's records of
    the same configs (and the full preset's seed 0, whose weights ship); until they exist, a line
    says how to make them."""
    import dataclasses

    reference = dataclasses.replace(PRESETS["smoke"], rows=("coupled",), seeds=(0, 1), records=True, curve_points=0)
    monkeypatch.setitem(PRESETS, "tinyref", reference)
    monkeypatch.setitem(PRESETS, "tinydemo", dataclasses.replace(reference, seeds=(0,), records=False, reference="tinyref"))
    monkeypatch.setitem(PRESETS, "full", dataclasses.replace(reference, seeds=(0,)))
    dirs = dict(world_dir=tmp_path / "world", runs_dir=tmp_path / "runs", results_dir=tmp_path / "results",
                figures_dir=tmp_path / "figures", progress=False, jobs=1)

    reproduce("tinydemo", **dirs)
    table = (tmp_path / "results" / "tinydemo_ablation.md").read_text()
    assert table.endswith("## This machine against the records\n\nNo records of these runs yet (results/tinyref_runs/): "
                          "`hdc reproduce --preset tinyref --runs runs/reproduce/tinydemo` makes them (it finds this demo's "
                          "seed-0 runs and trains the other seeds).\n\n")

    assert reproduce("tinyref", **dirs)["trained_here"] == 1  # seed 1: seed 0 is the demo's own run
    assert reproduce("full", **dirs)["trained_here"] == 0  # the same run again, recorded as the full preset's
    report = reproduce("tinydemo", **dirs)
    compared = report["against_records"]["rows"]["coupled"]
    recorded = [json.loads((tmp_path / "results" / "tinyref_runs" / "coupled" / f"seed{s}" / "record.json").read_text())
                ["run"]["probes"] for s in (0, 1)]
    for metric, c in compared.items():
        this = report["per_seed"]["coupled"][0][metric]
        assert c["records"] == [r[metric] for r in recorded] and c["record_seeds"] == [0, 1]
        assert c["this"] == c["same_seed"] == c["shipped"] == this  # one machine, one config: the same run
        assert c["difference"] == pytest.approx(this - (recorded[0][metric] + recorded[1][metric]) / 2)
        assert c["within"] is True  # its own seed is one of the records
    table = (tmp_path / "results" / "tinydemo_ablation.md").read_text()
    this = report["per_seed"]["coupled"][0]["action_unbiased"]
    assert f"| coupled | action_unbiased | {this:.3f} | " in table and f" | yes | {this:.3f} | {this:.3f} |" in table


def test_the_convergence_preset_compares_twice_the_budget_with_the_full_record(tmp_path, monkeypatch):
    """Each row at twice the budget against the full preset's record of the same row and seed:
    converged when action_unbiased moves by at most CONVERGED_WITHIN; without that record, one line
    says how to make it."""
    import dataclasses

    from hdc_lib.errors import UserError
    from hdc_lib.reproduce import CONVERGED_WITHIN

    full = dataclasses.replace(PRESETS["smoke"], rows=("coupled",), records=True, curve_points=0)
    monkeypatch.setitem(PRESETS, "full", full)
    dirs = dict(world_dir=tmp_path / "world", runs_dir=tmp_path / "runs", results_dir=tmp_path / "results",
                figures_dir=tmp_path / "figures", progress=False, jobs=1)
    one_epoch = reproduce("full", **dirs)["steps"]["coupled"]
    monkeypatch.setitem(PRESETS, "convergence", dataclasses.replace(full, steps=2 * one_epoch))
    with pytest.raises(UserError, match="no record of coupled seed 0 in the full preset: `hdc reproduce --preset full "
                                        "--rows coupled --seeds 0` trains it"):
        reproduce("convergence", **{**dirs, "runs_dir": tmp_path / "long", "results_dir": tmp_path / "elsewhere"})
    assert not (tmp_path / "long").exists()   # refused before anything trained
    assert reproduce("convergence", **{**dirs, "runs_dir": tmp_path / "long"})["trained_here"] == 1
    record_path = tmp_path / "results" / "full_runs" / "coupled" / "seed0" / "record.json"
    saved = json.loads(record_path.read_text())
    long = json.loads((tmp_path / "results" / "convergence_runs" / "coupled" / "seed0" / "record.json").read_text())
    twice = long["run"]["probes"]["action_unbiased"]
    assert long["config"]["train"]["epochs"] == 2 * saved["config"]["train"]["epochs"]
    for moved, converged in ((0.0, True), (CONVERGED_WITHIN - 0.005, True), (CONVERGED_WITHIN + 0.005, False),
                             (-(CONVERGED_WITHIN + 0.005), False)):
        saved["run"]["probes"]["action_unbiased"] = twice - moved     # the full record, moved by hand
        record_path.write_text(json.dumps(saved))
        check = reproduce("convergence", **{**dirs, "runs_dir": tmp_path / "long"})["convergence"]["rows"]["coupled"]
        assert check["full"] == twice - moved and check["long"] == twice
        assert check["converged"] is converged, moved
    table = (tmp_path / "results" / "convergence_ablation.md").read_text()
    assert f'| coupled | {twice - moved:.3f} ({one_epoch} steps) | {twice:.3f} ({2 * one_epoch} steps) |' in table
    assert f'**no**: the tables say "at {one_epoch} steps"' in table


@pytest.mark.parametrize("preset_name", [name for name, preset in PRESETS.items() if preset.records])
def test_every_committed_record_still_stands_for_its_run(preset_name, tmp_path):
    """A record whose config no longer matches its preset's is set aside with a warning, so a report
    would silently lose it (the demo's comparison with toy_reference's seeds, say): every record the
    repository holds must read as its run under today's configs, and a demo preset's reference
    must hold every seed of every row the demo compares."""
    folder = REPO / "results" / f"{preset_name}_runs"
    committed = sorted(folder.glob("*/seed*/record.json"))
    if not committed:
        pytest.skip(f"no records of the {preset_name} preset committed")
    plan = plan_runs(preset_name, REPO / "data" / "toyworld", tmp_path / "runs", REPO / "results")
    stale = [str(path.relative_to(REPO)) for path in committed
             if recorded_run(plan, preset_name, path.parent.parent.name, int(path.parent.name[len("seed"):])) is None]
    assert not stale, f"records made with another config than today's: {stale}"
    for demo in (p for p in PRESETS.values() if p.reference == preset_name):
        missing = [(row, seed) for row in demo.rows for seed in PRESETS[preset_name].seeds
                   if not (folder / row / f"seed{seed}" / "record.json").exists()]
        assert not missing, missing
