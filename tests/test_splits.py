"""Official split files: labels, quirks, and errors that name the file and the line."""
import re

import pytest

from hdc_lib.data.splits import (SplitFileError, read_hmdb51_split, read_split,
                                 read_ucf101_split, read_video_folder)


def write_ucf_splits(directory, classes, train_lines, test_lines=()):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "classInd.txt").write_text(
        "".join(f"{i + 1} {name}\n" for i, name in enumerate(classes)))
    (directory / "trainlist01.txt").write_text("".join(f"{line}\n" for line in train_lines))
    (directory / "testlist01.txt").write_text("".join(f"{line}\n" for line in test_lines))
    return directory


def test_ucf101_labels_are_zero_based_and_test_labels_come_from_the_folder(ucf101_layout):
    for train, expected in ((True, ucf101_layout["train"]), (False, ucf101_layout["test"])):
        split = read_ucf101_split(ucf101_layout["splits"], fold=1, train=train,
                                  video_root=ucf101_layout["videos"])
        assert split.classes == ucf101_layout["classes"]
        assert split.samples == expected  # .mp4 accepted as listed (the toy world's layout)
    assert ("HandstandPushups/v_HandStandPushups_g01_c01.mp4", 1) in ucf101_layout["train"]


def test_ucf101_class_names_and_files_match_case_insensitively(ucf101_layout):
    """A list spelling the class like its files (HandStandPushups) still finds class and video."""
    splits = ucf101_layout["splits"]
    listed = "HandStandPushups/v_HandStandPushups_g01_c01.mp4"
    (splits / "testlist01.txt").write_text(f"{listed}\r\n")
    split = read_ucf101_split(splits, train=False, video_root=ucf101_layout["videos"])
    assert split.samples == [("HandstandPushups/v_HandStandPushups_g01_c01.mp4", 1)]


def test_official_quirks_crlf_trailing_blanks_and_blank_lines(tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_bytes(b"1 Archery \r\n2 Bowling\t\r\n\r\n")
    (splits / "trainlist01.txt").write_bytes(
        b"\r\nBowling/v_Bowling_g08_c01.avi 2  \r\n\r\nArchery/v_Archery_g08_c02.avi 1\r\n  \r\n")
    split = read_ucf101_split(splits)
    assert split.classes == ["Archery", "Bowling"]
    assert split.samples == [("Bowling/v_Bowling_g08_c01.avi", 1),
                             ("Archery/v_Archery_g08_c02.avi", 0)]


@pytest.mark.parametrize("line, bad_line, reason", [
    ("Archery/v_Archery_g01_c01.avi 2", 2, "disagrees with the folder"),
    ("Archery/v_Archery_g01_c01.avi one", 2, "expected"),
    ("Archery/v_Archery_g01_c01.avi 1 extra", 2, "expected"),
    ("v_Archery_g01_c01.avi 1", 2, "expected <Class>/<file>"),
    ("Juggling/v_Juggling_g01_c01.avi 1", 2, "unknown class 'Juggling'"),
    ("Bowling/v_Bowling_g01_c01.avi 2", 2, "already listed on line 1"),
    ("Archery/../../etc/passwd 1", 2, "leaves the dataset root"),
    ("/data/Archery/v_Archery_g01_c01.avi 1", 2, "leaves the dataset root"),
])
def test_ucf101_bad_lines_name_the_file_and_line(tmp_path, line, bad_line, reason):
    splits = write_ucf_splits(tmp_path / "splits", ["Archery", "Bowling"],
                              ["Bowling/v_Bowling_g01_c01.avi 2", line])
    with pytest.raises(SplitFileError, match=reason) as caught:
        read_ucf101_split(splits)
    assert caught.value.line == bad_line
    assert str(caught.value).startswith(f"{splits / 'trainlist01.txt'}:{bad_line}: ")


@pytest.mark.parametrize("name, content, bad_line, reason", [
    ("classInd.txt", "1 Archery\n2 Bowling\n".encode("utf-16"), 1, "NUL bytes: UTF-16"),
    ("testlist01.txt", "Archery/v_Archery_g01_c01.avi\n".encode("utf-16-le"), 1, "NUL bytes"),
    ("trainlist01.txt",
     "Bowling/v_Bowling_g01_c01.avi 2\nArchery/v_Café_g01.avi 1\n".encode("latin-1"), 2,
     "not UTF-8 text (byte 0xe9 at column 14)"),
    ("classInd.txt", b"", None, "empty split file"),
    ("trainlist01.txt", b"", None, "empty split file"),
    ("testlist01.txt", b"\r\n   \r\n", None, "empty split file"),
    ("classInd.txt", b"1 Archery\n2\n", 2, "expected '<index> <ClassName>'"),
    ("trainlist01.txt", b"Bowling/v_Bowling_g01_c01.avi 2\nArchery\\..\\..\\x.avi 1\n", 2,
     "leaves the dataset root"),
], ids=["utf16-bom", "utf16-no-bom", "latin1", "empty-classInd", "empty-trainlist",
        "blank-testlist", "missing-field", "backslash-escape"])
def test_malformed_ucf101_files_name_the_file_and_line(tmp_path, name, content, bad_line, reason):
    """Wrong encodings, empty files and missing fields: a SplitFileError, never a crash."""
    splits = write_ucf_splits(tmp_path / "splits", ["Archery", "Bowling"],
                              ["Bowling/v_Bowling_g01_c01.avi 2"],
                              ["Archery/v_Archery_g01_c01.avi"])
    (splits / name).write_bytes(content)
    with pytest.raises(SplitFileError, match=re.escape(reason)) as caught:
        read_ucf101_split(splits, train=name != "testlist01.txt")
    assert (caught.value.path, caught.value.line) == (str(splits / name), bad_line)
    assert str(caught.value).startswith(str(splits / name))


@pytest.mark.parametrize("content, bad_line, reason", [
    (b"", None, "empty split file"), ("clip.avi 1\n".encode("utf-16"), 1, "NUL bytes"),
    (b"clip.avi 1\nsecond\xff.avi 2\n", 2, "not UTF-8 text (byte 0xff at column 7)")],
    ids=["empty", "utf16", "invalid-utf8"])
def test_malformed_hmdb51_files_name_the_file_and_line(tmp_path, content, bad_line, reason):
    (tmp_path / "brush_hair_test_split1.txt").write_text("clip.avi 1\n")
    bad = tmp_path / "cartwheel_test_split1.txt"
    bad.write_bytes(content)
    with pytest.raises(SplitFileError, match=re.escape(reason)) as caught:
        read_hmdb51_split(tmp_path)
    assert (caught.value.path, caught.value.line) == (str(bad), bad_line)


def test_missing_video_is_reported_with_its_line(ucf101_layout):
    missing = ucf101_layout["videos"] / ucf101_layout["train"][2][0]
    missing.unlink()
    with pytest.raises(SplitFileError, match="listed video not found") as caught:
        read_ucf101_split(ucf101_layout["splits"], video_root=ucf101_layout["videos"])
    assert caught.value.line == 3 and str(missing) in str(caught.value)
    assert caught.value.path.endswith("trainlist01.txt")


@pytest.mark.parametrize("class_ind, reason", [("1 Archery\n3 Bowling\n", "out of sequence"),
                                               ("1 Archery\n2 archery\n", "listed twice"),
                                               ("Archery 1\n", "expected")])
def test_bad_class_index_files(tmp_path, class_ind, reason):
    splits = write_ucf_splits(tmp_path / "splits", ["Archery"], [])
    (splits / "classInd.txt").write_text(class_ind)
    with pytest.raises(SplitFileError, match=reason) as caught:
        read_ucf101_split(splits)
    assert f"classInd.txt:{caught.value.line}: " in str(caught.value)


def test_missing_split_file_is_named(tmp_path):
    splits = write_ucf_splits(tmp_path / "splits", ["Archery"], [])
    with pytest.raises(SplitFileError, match="testlist02.txt: split file not found"):
        read_ucf101_split(splits, fold=2, train=False)


def official_size_ucf101(directory, num_train):
    classes = [f"Class{c:03d}" for c in range(101)]
    lines = [f"{classes[i % 101]}/v_{classes[i % 101]}_g{i:05d}.avi {i % 101 + 1}"
             for i in range(num_train)]
    return write_ucf_splits(directory, classes, lines, [f"{classes[0]}/v_{classes[0]}_g00001.avi"])


def test_ucf101_official_counts(tmp_path):
    """Counts are checked from the split files alone, before any video is looked at."""
    split = read_ucf101_split(official_size_ucf101(tmp_path / "ok", 9537), check_counts=True)
    assert len(split.samples) == 9537 and len(split.classes) == 101
    with pytest.raises(SplitFileError, match="9536 videos .* official ucf101 split 1 train "
                                             "set has 9537"):
        read_ucf101_split(official_size_ucf101(tmp_path / "short", 9536), check_counts=True)
    with pytest.raises(SplitFileError, match="official ucf101 split 1 test set has 3783"):
        read_ucf101_split(tmp_path / "ok", train=False, check_counts=True)


def test_hmdb51_official_counts(tmp_path):
    for action in range(51):
        lines = [f"video_{action}_{v}.avi {1 if v < 70 else 2}" for v in range(100)]
        (tmp_path / f"action_{action:02d}_test_split1.txt").write_text("\n".join(lines))
    assert len(read_hmdb51_split(tmp_path, check_counts=True).samples) == 3570
    assert len(read_hmdb51_split(tmp_path, train=False, check_counts=True).samples) == 1530
    (tmp_path / "action_00_test_split1.txt").write_text("video_extra.avi 1\n")
    with pytest.raises(SplitFileError, match="official hmdb51 split 1 train set has 3570"):
        read_hmdb51_split(tmp_path, check_counts=True)


def test_hmdb51_actions_flags_and_sorted_classes(hmdb51_layout):
    train = read_hmdb51_split(hmdb51_layout["splits"], video_root=hmdb51_layout["videos"])
    test = read_hmdb51_split(hmdb51_layout["splits"], train=False,
                             video_root=hmdb51_layout["videos"])
    assert train.classes == test.classes == ["brush_hair", "cartwheel"]
    assert train.samples == [("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 0),
                             ("cartwheel/cartwheel_on_grass_cartwheel_f_cm_np1_ri_goo_0.avi", 1)]
    assert [label for _, label in test.samples] == [0, 1]  # flag 0 (unused) is in neither


@pytest.mark.parametrize("line, reason", [("video.avi 3", "expected"), ("video.avi", "expected"),
                                          ("sub/video.avi 1", "expected <file>"),
                                          ("../video.avi 1", "leaves the dataset root"),
                                          ("clip.avi 2", "already listed on line 1")])
def test_hmdb51_bad_lines_name_the_file_and_line(tmp_path, line, reason):
    split_file = tmp_path / "brush_hair_test_split1.txt"
    split_file.write_text(f"clip.avi 1\n{line}\n")
    with pytest.raises(SplitFileError, match=reason) as caught:
        read_hmdb51_split(tmp_path)
    assert str(split_file) in str(caught.value) and caught.value.line == 2


def test_hmdb51_missing_video_names_its_action_file(hmdb51_layout):
    (hmdb51_layout["videos"] / "cartwheel" / "cartwheel_on_grass_cartwheel_f_cm_np1_ri_goo_0.avi"
     ).unlink()
    with pytest.raises(SplitFileError, match="not found") as caught:
        read_hmdb51_split(hmdb51_layout["splits"], video_root=hmdb51_layout["videos"])
    assert caught.value.path.endswith("cartwheel_test_split1.txt") and caught.value.line == 2


def test_video_folder_classes_are_sorted_and_zero_based(tmp_path):
    for relative in ("walk/b.mp4", "walk/a.avi", "jump/c.mp4", "jump/notes.txt", ".cache/x.mp4"):
        (tmp_path / relative).parent.mkdir(exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    split = read_video_folder(tmp_path)
    assert split.classes == ["jump", "walk"]
    assert split.samples == [("jump/c.mp4", 0), ("walk/a.avi", 1), ("walk/b.mp4", 1)]
    assert read_split("folder", tmp_path) == split
    with pytest.raises(ValueError, match="unknown dataset format"):
        read_split("kinetics", tmp_path)
