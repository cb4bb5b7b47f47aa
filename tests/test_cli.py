"""The `hdc` command: help works everywhere, a mistake in the input is one line naming the file
(exit status 2), --no-progress means no bar, evaluation on a run."""
import json
import subprocess
import sys

import pytest
import yaml

from hdc_lib.cli import build_parser, main
from hdc_lib.experiment import build_dataset, load_config


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


def test_pretrain_then_every_evaluation(tiny_overrides, tiny_world, tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="hdc_lib.evaluate")
    assert main(["pretrain", "--config", "configs/toy/coupled.yaml", "--no-progress", *tiny_overrides]) == 0
    run = tmp_path / "run"
    for protocol in ("linear", "retrieval", "probes"):
        assert main(["eval", protocol, "--run", str(run), "--clips", "2"]) == 0
        result = json.loads((run / f"eval_{protocol}.json").read_text())
        assert result["protocol"] == protocol
        assert result["checkpoint"] == str((run / "final.pt").resolve()) and result["data"]["dataset"] == "toyworld"
    # Feature extraction says what it does (a bar only on a terminal).
    assert "features of the test split: 8 videos x 2 clips" in caplog.text
    assert 0.0 <= json.loads((run / "eval_linear.json").read_text())["accuracy"] <= 1.0
    assert {"R@1", "R@5", "R@10"} <= set(json.loads((run / "eval_retrieval.json").read_text()))
    probes = set(json.loads((run / "eval_probes.json").read_text()))
    assert {"action_biased", "action_unbiased", "direction", "object", "scene", "fg_ratio"} <= probes
    assert {"direction@layer2", "direction@layer3", "direction@layer4"} <= probes  # every tapped level
    assert len(list((run / "features").glob("features_*.pt"))) == 2  # cached for the next call
    # Another checkpoint and another dataset: results of their own, recording which.
    first_epoch = run / "ckpt_e0001_s000000.pt"
    same_videos_as_ucf101 = ["data.dataset=ucf101", f"data.root={tiny_world / 'videos'}",
                             f"data.split_dir={tiny_world / 'splits'}"]
    assert main(["eval", "linear", "--run", str(run), "--clips", "2", "--checkpoint", str(first_epoch),
                 *same_videos_as_ucf101]) == 0
    other = json.loads((run / "eval_linear_ucf101-split1_ckpt_e0001_s000000.json").read_text())
    assert other["checkpoint"] == str(first_epoch.resolve()) and other["data"]["dataset"] == "ucf101"
    assert json.loads((run / "eval_linear.json").read_text())["checkpoint"].endswith("final.pt")
    assert main(["eval", "finetune", "--run", str(run), "--clips", "2", "--epochs", "1", "--no-progress"]) == 0
    assert 0.0 <= json.loads((run / "eval_finetune.json").read_text())["accuracy"] <= 1.0


def test_the_fine_tuning_recipe_is_the_one_that_trains(tiny_overrides, tmp_path):
    """configs/finetune/standard.yaml (SGD, step schedule) reaches the fine-tuning run's config; an
    override of it wins; the pretrained run's batch size gives way to the recipe's."""
    assert main(["pretrain", "--config", "configs/toy/coupled.yaml", "--no-progress", *tiny_overrides,
                 "train.epochs=1", "train.knn_every=0"]) == 0
    run = tmp_path / "run"
    assert main(["eval", "finetune", "--run", str(run), "--clips", "1", "--recipe", "configs/finetune/standard.yaml",
                 "train.batch_size=8", "train.epochs=1", "optim.momentum=0.5", "--no-progress"]) == 0
    trained = yaml.safe_load((run / "finetune_standard" / "config.yaml").read_text())
    assert trained["method"] == "supervised" and trained["train"]["init_backbone"] == str(run / "final.pt")
    assert {k: trained["optim"][k] for k in ("name", "lr", "momentum", "weight_decay", "schedule", "milestones")} == \
           {"name": "sgd", "lr": 0.1, "momentum": 0.5, "weight_decay": 0.0001, "schedule": "step", "milestones": [6, 8]}
    assert (trained["train"]["epochs"], trained["train"]["batch_size"]) == (1, 8)
    assert json.loads((run / "eval_finetune.json").read_text())["recipe"]["optim"]["name"] == "sgd"


@pytest.mark.parametrize("argv, message", [
    (["eval", "linear", "optim.name=sgd"], "override 'optim.name=sgd' is not read by `hdc eval linear`"),
    (["eval", "retrieval", "--epochs", "3"], "--recipe, --epochs and --lr configure fine-tuning"),
    (["eval", "finetune", "model.backbone=r3d_18"], "fine-tuning starts from the pretrained run's backbone"),
])
def test_an_override_the_command_would_ignore_is_an_error(argv, message, capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(load_config(None).to_dict()))
    assert message in one_line_error([*argv, "--run", str(run)], capsys)


def test_a_new_run_into_a_used_folder_is_refused_in_one_line(tiny_overrides, tmp_path, capsys):
    argv = ["pretrain", "--config", "configs/toy/coupled.yaml", "--no-progress", *tiny_overrides,
            "train.epochs=1", "train.knn_every=0"]
    assert main(argv) == 0
    message = one_line_error(argv, capsys)
    assert message.startswith(f"hdc: {tmp_path / 'run'}: holds another run") and "--overwrite" in message
    assert main([*argv, "--resume"]) == 0
    assert f"already finished: {tmp_path / 'run'} (nothing trained)" in capsys.readouterr().out
    assert main([*argv, "--overwrite"]) == 0 and "done: " in capsys.readouterr().out


@pytest.mark.parametrize("outcome, code, expected", [
    (KeyboardInterrupt(), 130, "stopped at once; the last checkpoint in runs/default is kept"),
    ({"interrupted": None, "finished_before": False, "stopped_at_max_steps": False, "is_main": False,
      "out_dir": "runs/default"}, 0, ""),
])
def test_pretrain_reports_a_second_ctrl_c_and_only_rank_0_says_done(outcome, code, expected, monkeypatch, capsys):
    def fake_train(cfg, **kwargs):
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr("hdc_lib.train.train", fake_train)
    assert main(["pretrain"]) == code
    out, err = capsys.readouterr()
    assert (expected in err) if expected else (out == "" and err == "")


def test_the_help_describes_the_command_in_whole_sentences():
    description = build_parser().description
    assert description.startswith("The `hdc` command") and description.endswith("benchmark.")


# -- a mistake in the input: one line naming the file (and line), exit status 2 ---------------
def one_line_error(argv, capsys) -> str:
    """Run `hdc argv` in-process; it must exit with 2 and print exactly one line on stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("hdc: ") and "Traceback" not in err, err
    return err.strip()


def write_ucf_layout(root, train_lines, test_lines):
    """A UCF101 layout with two classes and the given split lines (no videos needed)."""
    splits = root / "splits"
    splits.mkdir(parents=True)
    (splits / "classInd.txt").write_text("1 Archery\n2 Bowling\n")
    (splits / "trainlist01.txt").write_text("".join(line + "\n" for line in train_lines))
    (splits / "testlist01.txt").write_text("".join(line + "\n" for line in test_lines))
    (root / "videos").mkdir()
    return root / "videos", splits


def test_a_missing_config_file_is_named(capsys, tmp_path):
    missing = tmp_path / "missing.yaml"
    message = one_line_error(["pretrain", "--config", str(missing)], capsys)
    assert message == f"hdc: {missing}: no such config file"


def test_a_folder_given_as_config_is_named(capsys, tmp_path):
    assert one_line_error(["pretrain", "--config", str(tmp_path)], capsys).startswith(f"hdc: {tmp_path}: ")


def test_bad_yaml_syntax_names_the_line(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: hdc\ntrain:\n  epochs: 3\n bad: [\n")
    message = one_line_error(["pretrain", "--config", str(path)], capsys)
    assert message.startswith(f"hdc: {path}:4: not valid YAML")


def test_a_bad_key_in_a_config_names_its_line(capsys, tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("method: hdc\ntrain:\n  epochs: 3\n  epoch: 4\noptim:\n  lr: -1\n")
    assert one_line_error(["pretrain", "--config", str(path)], capsys).startswith(
        f"hdc: {path}:4: unknown key 'train.epoch'")
    path.write_text("method: hdc\noptim:\n  lr: -1\n")
    message = one_line_error(["pretrain", "--config", str(path)], capsys)
    assert message == f"hdc: {path}:3: optim.lr must be > 0, got -1.0"


def test_a_bad_value_set_by_an_override_is_not_blamed_on_the_file(capsys, tmp_path):
    path = tmp_path / "fine.yaml"
    path.write_text("train:\n  epochs: 3\n")
    message = one_line_error(["pretrain", "--config", str(path), "train.epochs=zero"], capsys)
    assert message == "hdc: train.epochs: expected int, got 'zero'"


@pytest.mark.parametrize("override, message", [
    ("train.epochs", "hdc: override 'train.epochs' is not of the form key.path=value"),
    ("train.epochs=[", "hdc: override 'train.epochs=[': not valid YAML"),
    ("data.toyworld={size: 15}", "hdc: data.toyworld: size must be even and >= 16"),
])
def test_bad_override_syntax(override, message, capsys):
    assert one_line_error(["pretrain", override], capsys).startswith(message)


def test_eval_of_a_folder_that_is_no_run(capsys, tmp_path):
    message = one_line_error(["eval", "linear", "--run", str(tmp_path / "nowhere")], capsys)
    assert message.startswith(f"hdc: {tmp_path / 'nowhere'}: not a run folder")


def test_eval_with_a_missing_or_unreadable_checkpoint(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(load_config(None).to_dict()))
    message = one_line_error(["eval", "linear", "--run", str(run)], capsys)
    assert message == f"hdc: {run / 'final.pt'}: no such checkpoint"
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    message = one_line_error(["eval", "linear", "--run", str(run), "--checkpoint", str(garbage)], capsys)
    assert message.startswith(f"hdc: {garbage}: cannot be loaded safely")


def test_a_split_file_with_a_bad_line_names_file_and_line(capsys, tmp_path):
    videos, splits = write_ucf_layout(tmp_path, ["Archery/v_Archery_g01_c01.avi 1", "one two three"],
                                      ["Bowling/v_Bowling_g01_c01.avi"])
    message = one_line_error(["data", "check", str(videos), "--splits", str(splits)], capsys)
    assert message.startswith(f"hdc: {splits / 'trainlist01.txt'}:2: expected '<Class>/<file> [<index>]'")


def test_an_empty_split_file_is_named(capsys, tmp_path):
    videos, splits = write_ucf_layout(tmp_path, ["Archery/v_Archery_g01_c01.avi 1"], [])
    message = one_line_error(["data", "check", str(videos), "--splits", str(splits)], capsys)
    assert message == f"hdc: {splits / 'testlist01.txt'}: empty split file (no lines)"


def test_a_split_folder_of_no_known_format_is_named(capsys, tmp_path):
    message = one_line_error(["data", "check", str(tmp_path), "--splits", str(tmp_path)], capsys)
    assert message.startswith(f"hdc: {tmp_path}: cannot tell the split format")


@pytest.mark.parametrize("argv", [
    ["data", "check", "{missing}", "--splits", "{splits}"],
    ["data", "check", "{missing}"],
    ["pretrain", "data.dataset=ucf101", "data.root={missing}", "data.split_dir={splits}"],
    ["pretrain", "data.dataset=folder", "data.root={missing}"],
    ["bench", "data", "{missing}"],
])
def test_a_missing_data_root_is_named(argv, capsys, tmp_path):
    _, splits = write_ucf_layout(tmp_path, ["Archery/v_Archery_g01_c01.avi 1"],
                                 ["Bowling/v_Bowling_g01_c01.avi"])
    missing = tmp_path / "no_such_root"
    argv = [item.format(missing=missing, splits=splits) for item in argv]
    assert one_line_error(argv, capsys) == f"hdc: {missing}: no such video folder"


def test_bad_toy_world_arguments(capsys, tmp_path):
    message = one_line_error(["data", "toyworld", "--out", str(tmp_path), "--size", "15"], capsys)
    assert message == "hdc: size must be even and >= 16 (H.264 yuv420p), got 15"


@pytest.mark.parametrize("argv", [
    ["data", "toyworld", "--out", "{blocked}", "--videos-per-class", "2", "--frames", "4", "--size", "16",
     "--no-progress"],
    ["pretrain", "--no-progress", "train.out_dir={blocked}"],
])
def test_a_path_that_cannot_be_written_is_named(argv, capsys, tmp_path, tiny_overrides):
    """A folder to create under a regular file: the OSError is the input's fault, one line too."""
    (tmp_path / "a_file").write_text("")
    blocked = tmp_path / "a_file" / "out"
    argv = [item.format(blocked=blocked) for item in argv]
    if argv[0] == "pretrain":
        argv = [*argv[:2], *tiny_overrides, argv[2]]  # the out_dir override comes last and wins
    message = one_line_error(argv, capsys)
    assert message.startswith(f"hdc: {tmp_path / 'a_file'}") and message.endswith(": Not a directory")


@pytest.mark.parametrize("error", [RuntimeError("a bug"), OSError("a bug, no file named")])
def test_an_unexpected_error_keeps_its_traceback(error, monkeypatch):
    """Only the input's mistakes are turned into one line; a bug in hdc_lib still raises."""
    def broken(cfg, **options):
        raise error

    monkeypatch.setattr("hdc_lib.train.train", broken)
    with pytest.raises(type(error), match="a bug"):
        main(["pretrain"])


@pytest.mark.parametrize("argv", [["pretrain", "--config", "missing.yaml"],
                                  ["data", "check", "{videos}", "--splits", "{splits}"]])
def test_the_installed_command_prints_no_traceback(argv, tmp_path):
    """The two cases found by hand, through the real entry point (no in-process shortcuts)."""
    videos, splits = write_ucf_layout(tmp_path, ["Archery/v_Archery_g01_c01.avi 1"], [])
    argv = [item.format(videos=videos, splits=splits) for item in argv]
    completed = subprocess.run([sys.executable, "-m", "hdc_lib", *argv], capture_output=True,
                               text=True, cwd=tmp_path)
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert len(completed.stderr.splitlines()) == 1 and completed.stderr.startswith("hdc: ")


# -- --no-progress: no progress bar anywhere, including the toy world's render -----------------
def test_no_progress_silences_the_toy_world_render(tiny_overrides, tmp_path, capfd):
    world = tmp_path / "fresh_world"  # not rendered yet: pretraining renders it on demand
    argv = ["pretrain", "--no-progress", *tiny_overrides, f"data.root={world}", "train.epochs=1",
            "train.knn_every=0"]
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert (world / "toyworld.json").is_file()  # it did render
    assert "\r" not in out + err and "rendering" not in err and "video/s" not in err, err


def test_the_render_bar_shows_without_no_progress(tmp_path, capfd):
    """The control for the test above: the same render with progress on does draw its bar."""
    cfg = load_config(None, [f"data.root={tmp_path / 'world'}",
                             'data.toyworld={"videos_per_class": 2, "frames": 8, "size": 16}'])
    build_dataset(cfg, train=True, clip_sampler=None, progress=True)
    assert "\r" in capfd.readouterr().err


def test_the_reproduce_command_offers_every_preset():
    from hdc_lib.cli import PRESET_NAMES
    from hdc_lib.reproduce import PRESETS

    assert set(PRESET_NAMES) == set(PRESETS)
