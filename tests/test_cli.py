"""The `hdc` command: help works everywhere, config errors exit cleanly, evaluation on a run."""
import json
import subprocess
import sys

import pytest

from hdc_lib.cli import build_parser, main


@pytest.mark.parametrize("argv", [[], ["data"], ["data", "toyworld"], ["data", "check"], ["pretrain"],
                                  ["eval"], ["reproduce"], ["bench"], ["bench", "data"]])
def test_help_is_available_for_every_command(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: hdc" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["eval", "linear", "--run", "runs/x", "data.dataset=hmdb51", "data.fold=2"],
    ["eval", "linear", "data.dataset=hmdb51", "--run", "runs/x", "data.fold=2"],
    ["pretrain", "data.dataset=hmdb51", "--config", "c.yaml", "data.fold=2"]])
def test_overrides_may_come_before_or_after_options(argv, monkeypatch):
    """`hdc eval linear --run DIR key=value` (the README's transfer command) must parse."""
    seen = {}
    monkeypatch.setattr("hdc_lib.cli.build_parser", _recording_parser(seen))
    assert main(argv) == 0
    assert seen["overrides"] == ["data.dataset=hmdb51", "data.fold=2"]


def _recording_parser(seen):
    original = build_parser

    def build():
        parser = original()
        for action in parser._subparsers._group_actions[0].choices.values():
            action.set_defaults(func=lambda args: seen.update(overrides=args.overrides) or 0)
        return parser
    return build


def test_unknown_options_are_still_errors(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "linear", "--run", "runs/x", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["hdc_lib", "hdc_lib.cli"])
def test_python_dash_m_is_the_same_command(module):
    completed = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert completed.returncode == 0 and "pretrain" in completed.stdout


def test_a_config_error_exits_with_a_message_before_training(capsys):
    assert main(["pretrain", "train.epochs=zero"]) == 2
    assert "train.epochs: expected int" in capsys.readouterr().err


def test_pretrain_then_every_evaluation(tiny_overrides, tmp_path, capsys):
    assert main(["pretrain", "--config", "configs/toy/coupled.yaml", "--no-progress", *tiny_overrides]) == 0
    run = tmp_path / "run"
    for protocol in ("linear", "retrieval", "probes"):
        assert main(["eval", protocol, "--run", str(run), "--clips", "2"]) == 0
        result = json.loads((run / f"eval_{protocol}.json").read_text())
        assert result["protocol"] == protocol
    assert 0.0 <= json.loads((run / "eval_linear.json").read_text())["accuracy"] <= 1.0
    assert {"R@1", "R@5", "R@10"} <= set(json.loads((run / "eval_retrieval.json").read_text()))
    assert {"action", "object", "scene", "fg_ratio"} <= set(json.loads((run / "eval_probes.json").read_text()))
    assert len(list((run / "features").glob("features_*.pt"))) == 2  # cached for the next call
    assert main(["eval", "finetune", "--run", str(run), "--clips", "2", "--epochs", "1", "--no-progress"]) == 0
    assert 0.0 <= json.loads((run / "eval_finetune.json").read_text())["accuracy"] <= 1.0
