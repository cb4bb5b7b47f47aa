"""The reproduction pipeline end to end at smoke size: every row, every metric, every figure."""
import json

from hdc_lib.reproduce import METRICS, REFERENCES, VARIANTS, reproduce


def test_smoke_reproduction_writes_the_table_and_figures(tmp_path):
    report = reproduce("smoke", world_dir=tmp_path / "world", runs_dir=tmp_path / "runs",
                       results_dir=tmp_path / "results", figures_dir=tmp_path / "figures",
                       progress=False)
    assert set(report["table"]) == set(VARIANTS) | set(REFERENCES)
    for row in report["table"].values():
        assert set(row) == set(METRICS)
        assert all(0.0 <= row[m][0] <= 1.0 for m in METRICS if m != "fg_ratio")
        assert row["fg_ratio"][0] > 0
    table = (tmp_path / "results" / "smoke_ablation.md").read_text()
    assert "hdc reproduce --preset smoke" in table and "| dclr |" in table and "| random_init |" in table
    assert json.loads((tmp_path / "results" / "smoke_ablation.json").read_text())["preset"] == "smoke"
    for name in ("ablation", "training_curves", "level_weights", "activation_maps"):
        png = tmp_path / "figures" / f"smoke_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second call finds every run finished and trains nothing again: same numbers.
    again = reproduce("smoke", world_dir=tmp_path / "world", runs_dir=tmp_path / "runs",
                      results_dir=tmp_path / "results2", figures_dir=tmp_path / "figures2",
                      progress=False)
    assert again["per_seed"] == report["per_seed"]
