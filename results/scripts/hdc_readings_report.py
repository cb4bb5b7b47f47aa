"""The results of results/hdc_readings.md's screening, as markdown: every arm's probes on the
validation world, its score, the rule applied (only once every candidate has run), and E1's
gradient cosines per checkpoint.

    python results/scripts/hdc_readings_report.py   # prints; the page's "Results" quotes it
"""
from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARMS = ("E0", "E2", "E3", "E4", "E2d", "TC", "W1")
CANDIDATES = ("E0", "E2", "E3", "E4")
MARGIN = 0.05  # a candidate replaces E0 only if its score exceeds E0's by more than this


def read(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    return {r.get("name") or r["run"]: r for r in map(json.loads, path.read_text().splitlines())}


def score(record: dict) -> float:
    probes = record["probes"]["layer4"]
    return probes["action_unbiased"] + probes["direction"]


def rule(arms: dict[str, dict]) -> str:
    missing = [a for a in CANDIDATES if a not in arms]
    if missing:
        return f"The rule waits for {', '.join(missing)}: it is applied once every candidate has run."
    base = score(arms["E0"])
    better = {a: score(arms[a]) for a in CANDIDATES[1:] if score(arms[a]) > base + MARGIN}
    if not better:
        return (f"No candidate's score exceeds E0's ({base:.3f}) by more than {MARGIN}: "
                "**E0 (same_appearance) stays the default reading**.")
    best = max(better, key=better.get)
    return f"**{best} ({arms[best]['overrides']}) becomes the default reading** (score {better[best]:.3f} vs E0's {base:.3f})."


def main() -> None:
    arms = read(REPO / "results" / "hdc_readings.jsonl")
    lines = ["| arm | overrides | action_unbiased | direction | action_biased | scene | score | train s | commit |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in ARMS:
        if name not in arms:
            lines.append(f"| {name} | not run yet | | | | | | | |")
            continue
        r, p = arms[name], arms[name]["probes"]["layer4"]
        overrides = " ".join(o for o in r["overrides"] if o.startswith("model.")) or r["config"]
        lines.append(f"| {name} | `{overrides}` | {p['action_unbiased']:.3f} | {p['direction']:.3f} | "
                     f"{p['action_biased']:.3f} | {p['scene']:.3f} | {score(r):.3f} | {r['train_seconds']:.0f} | {r['commit']} |")
    lines += ["", rule(arms), "", "E1, cos(grad SC, grad TC) on the backbone at layer4, mean of 4 fixed batches "
              "(per checkpoint, epochs of 18 steps):", "", "| run | " + " | ".join(f"epoch {e}" for e in (10, 20, 30, 40, 50)) + " |",
              "|---|---|---|---|---|---|"]
    for name, record in read(REPO / "results" / "hdc_gradient_conflict.jsonl").items():
        cells = {c["epoch"]: c["layer4"] for c in record["curve"]}
        lines.append(f"| {name} | " + " | ".join(f"{cells[e]:+.3f}" if e in cells else "" for e in (10, 20, 30, 40, 50)) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
