"""Official split files, read as distributed (UCF101, HMDB51) and Kinetics-style class folders.

Every reader returns a `Split`: `samples`, a list of (relative path, 0-based label), and
`classes`, the class names in label order. Problems in a split file raise `SplitFileError`
naming the file and the line: malformed lines, unknown classes, labels that disagree with their
folder, duplicated entries, paths that would leave the dataset root, and (when `video_root` is
given) listed videos missing on disk. Lines are stripped, so CRLF ends and trailing blanks are
fine, and blank lines are skipped.

UCF101 (classInd.txt `<idx> <Class>`, trainlistNN.txt `<Class>/<file> <idx>`, testlistNN.txt
`<Class>/<file>`, 1-based): class names match case-insensitively, because the official files
spell the class `HandstandPushups` while its videos are `v_HandStandPushups_*`; files on disk are
found case-insensitively for the same reason. Any extension is accepted as listed (the toy world
writes .mp4 in this layout).

HMDB51 (`<action>_test_split<N>.txt`, lines `<video> <flag>`, 1 = train, 2 = test, 0 = unused):
the action is the file stem minus `_test_split<N>` (actions contain underscores: brush_hair);
classes are the sorted action names.
"""
from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hdc_lib.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")

# Official sizes (train, test) of each fold, for `check_counts` (docs/data.md, "UCF101"). UCF101
# split 1 is the official one; folds 2 and 3 are the commonly cited sizes (each sums to 13,320),
# not yet checked against the official list files; HMDB51 is 70 train / 30 test videos in each of
# 51 classes in every fold.
OFFICIAL_COUNTS = {
    "ucf101": {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)},
    "hmdb51": {1: (3570, 1530), 2: (3570, 1530), 3: (3570, 1530)},
}
OFFICIAL_NUM_CLASSES = {"ucf101": 101, "hmdb51": 51}


class SplitFileError(UserError, ValueError):
    """A problem in a split file, naming the file and (when there is one) the line."""

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str):
        super().__init__(reason, path, line)

    def __reduce__(self):
        return (type(self), (self.path, self.line, self.reason))


@dataclass(frozen=True)
class Split:
    """Videos of one split: (path relative to the video root, 0-based label), and class names."""

    samples: list[tuple[str, int]]
    classes: list[str]


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, whitespace-separated fields) of the non-blank lines of a UTF-8 file
    (a UTF-8 byte-order mark is fine); an empty file, or one in another encoding, is an error."""
    if not path.is_file():
        raise SplitFileError(path, None, "split file not found")
    lines = []
    for number, raw in enumerate(path.read_bytes().removeprefix(codecs.BOM_UTF8).splitlines(), 1):
        if b"\0" in raw:
            raise SplitFileError(path, number, "NUL bytes: UTF-16 or binary, not UTF-8 text")
        try:
            fields = raw.decode("utf-8").split()
        except UnicodeDecodeError as error:
            raise SplitFileError(path, number, f"not UTF-8 text (byte {raw[error.start]:#04x} at "
                                               f"column {error.start + 1})") from None
        if fields:
            lines.append((number, fields))
    if not lines:
        raise SplitFileError(path, None, "empty split file (no lines)")
    return lines


def _safe_relative(value: str, path: Path, line: int, parts: int) -> PurePosixPath:
    """A listed path as a relative path of exactly `parts` components inside the root."""
    relative = PurePosixPath(value)
    if relative.is_absolute() or ".." in relative.parts or "\\" in value:
        raise SplitFileError(path, line, f"path {value!r} leaves the dataset root")
    if len(relative.parts) != parts:
        expected = "<Class>/<file>" if parts == 2 else "<file>"
        raise SplitFileError(path, line, f"expected {expected}, got {value!r}")
    return relative


class DiskLookup:
    """Finds listed videos under a root, matching names case-insensitively when the exact
    spelling is missing (each folder is listed once per lookup object)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError("no such video folder", root)
        self._listings: dict[Path, dict[str, str]] = {}

    def find(self, relative: str | PurePosixPath) -> str | None:
        """The relative path as spelled on disk, or None when no file matches."""
        relative = PurePosixPath(relative)
        if (self.root / relative).is_file():
            return relative.as_posix()
        actual: list[str] = []
        for part in relative.parts:
            name = self._listing(self.root.joinpath(*actual)).get(part.lower())
            if name is None:
                return None
            actual.append(name)
        return "/".join(actual) if self.root.joinpath(*actual).is_file() else None

    def _listing(self, directory: Path) -> dict[str, str]:
        """Lower-cased name -> actual name of a directory's entries (empty when missing)."""
        if directory not in self._listings:
            try:
                self._listings[directory] = {name.lower(): name for name in os.listdir(directory)}
            except OSError:
                self._listings[directory] = {}
        return self._listings[directory]


# A parsed line: (relative path, label, split file, line number).
_Entry = tuple[PurePosixPath, int, Path, int]


def _split(entries: list[_Entry], classes: list[str],
           video_root: str | os.PathLike | None = None) -> Split:
    """The Split of parsed entries, each looked up on disk when `video_root` is given."""
    if video_root is None:
        return Split([(relative.as_posix(), label) for relative, label, _, _ in entries], classes)
    disk = DiskLookup(video_root)
    samples = []
    for relative, label, split_file, line in entries:
        found = disk.find(relative)
        if found is None:
            raise SplitFileError(split_file, line,
                                 f"listed video not found: {Path(video_root) / relative}")
        samples.append((found, label))
    return Split(samples, classes)


def check_official_counts(dataset: str, fold: int, train: bool, split: Split,
                          split_file: str | os.PathLike) -> None:
    """Raise SplitFileError unless `split` has the official size of that dataset's fold."""
    if fold not in OFFICIAL_COUNTS[dataset]:
        raise SplitFileError(split_file, None, f"{dataset} has no official fold {fold}")
    expected = OFFICIAL_COUNTS[dataset][fold][0 if train else 1]
    part = "train" if train else "test"
    if len(split.samples) != expected or len(split.classes) != OFFICIAL_NUM_CLASSES[dataset]:
        raise SplitFileError(
            split_file, None,
            f"{len(split.samples)} videos in {len(split.classes)} classes, but the official "
            f"{dataset} split {fold} {part} set has {expected} videos in "
            f"{OFFICIAL_NUM_CLASSES[dataset]} classes")


def read_ucf101_classes(split_dir: str | os.PathLike) -> list[str]:
    """Class names in label order from classInd.txt (`<1-based idx> <Class>` per line)."""
    path = Path(split_dir) / "classInd.txt"
    classes: list[str] = []
    for line, fields in _lines(path):
        if len(fields) != 2 or not fields[0].isdigit():
            raise SplitFileError(path, line, f"expected '<index> <ClassName>', got {fields}")
        if int(fields[0]) != len(classes) + 1:
            raise SplitFileError(path, line, f"class index {fields[0]} out of sequence "
                                             f"(expected {len(classes) + 1})")
        if fields[1].lower() in (name.lower() for name in classes):
            raise SplitFileError(path, line, f"class {fields[1]!r} listed twice")
        classes.append(fields[1])
    return classes


def read_ucf101_split(split_dir: str | os.PathLike, fold: int = 1, train: bool = True,
                      video_root: str | os.PathLike | None = None,
                      check_counts: bool = False) -> Split:
    """The videos of trainlist0<fold>.txt or testlist0<fold>.txt with 0-based labels.

    The label is the class of the path's folder; a listed label (always in trainlists) must
    agree with it. `check_counts` compares the size with the official split before any file on
    disk is looked at.
    """
    classes = read_ucf101_classes(split_dir)
    label_of = {name.lower(): label for label, name in enumerate(classes)}
    path = Path(split_dir) / f"{'train' if train else 'test'}list{fold:02d}.txt"
    entries: list[_Entry] = []
    first_line: dict[str, int] = {}
    for line, fields in _lines(path):
        if len(fields) not in (1, 2) or (len(fields) == 2 and not fields[1].isdigit()):
            raise SplitFileError(path, line, f"expected '<Class>/<file> [<index>]', got {fields}")
        relative = _safe_relative(fields[0], path, line, parts=2)
        label = label_of.get(relative.parts[0].lower())
        if label is None:
            raise SplitFileError(path, line, f"unknown class {relative.parts[0]!r} "
                                             "(not in classInd.txt)")
        if len(fields) == 2 and int(fields[1]) != label + 1:
            raise SplitFileError(path, line, f"label {fields[1]} disagrees with the folder's "
                                             f"class {classes[label]} ({label + 1})")
        key = relative.as_posix().lower()
        if key in first_line:
            raise SplitFileError(path, line, f"{fields[0]} already listed on line "
                                             f"{first_line[key]}")
        first_line[key] = line
        entries.append((relative, label, path, line))
    if check_counts:
        check_official_counts("ucf101", fold, train, _split(entries, classes), path)
    return _split(entries, classes, video_root)


def read_hmdb51_split(split_dir: str | os.PathLike, fold: int = 1, train: bool = True,
                      video_root: str | os.PathLike | None = None,
                      check_counts: bool = False) -> Split:
    """The videos flagged 1 (train) or 2 (test) in the `<action>_test_split<fold>.txt` files."""
    suffix = f"_test_split{fold}.txt"
    files = sorted(Path(split_dir).glob(f"*{suffix}"))
    if not files:
        raise SplitFileError(Path(split_dir) / f"*{suffix}", None, "no HMDB51 split files")
    classes = [file.name[: -len(suffix)] for file in files]
    wanted_flag = "1" if train else "2"
    entries: list[_Entry] = []
    for label, file in enumerate(files):
        first_line: dict[str, int] = {}
        for line, fields in _lines(file):
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise SplitFileError(file, line, f"expected '<video> <0|1|2>', got {fields}")
            name = _safe_relative(fields[0], file, line, parts=1).as_posix()
            if name.lower() in first_line:
                raise SplitFileError(file, line, f"{name} already listed on line "
                                                 f"{first_line[name.lower()]}")
            first_line[name.lower()] = line
            if fields[1] == wanted_flag:
                entries.append((PurePosixPath(classes[label], name), label, file, line))
    if check_counts:
        check_official_counts("hmdb51", fold, train, _split(entries, classes),
                              Path(split_dir) / f"*{suffix}")
    return _split(entries, classes, video_root)


def read_video_folder(root: str | os.PathLike,
                      extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> Split:
    """Kinetics-style `<root>/<class>/<video>`: classes are the sorted folder names, 0-based.

    Hidden folders (e.g. a `.cache` beside the videos) are not classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError("no such video folder", root)
    classes = sorted(entry.name for entry in root.iterdir()
                     if entry.is_dir() and not entry.name.startswith("."))
    samples = [(f"{name}/{video.name}", label)
               for label, name in enumerate(classes)
               for video in sorted((root / name).iterdir())
               if video.is_file() and video.suffix.lower() in extensions]
    if not samples:
        raise UserError(f"no videos ({', '.join(extensions)}) in its <class>/ folders", root)
    return Split(samples, classes)


def read_split(format: str, root: str | os.PathLike, split_dir: str | os.PathLike | None = None,
               fold: int = 1, train: bool = True, check_files: bool = True,
               check_counts: bool = False) -> Split:
    """Dispatch on `format` ("ucf101", "hmdb51" or "folder"); the one entry point for tools."""
    video_root = root if check_files else None
    if format == "ucf101":
        return read_ucf101_split(split_dir, fold, train, video_root, check_counts)
    if format == "hmdb51":
        return read_hmdb51_split(split_dir, fold, train, video_root, check_counts)
    if format == "folder":
        return read_video_folder(root)
    raise ValueError(f"unknown dataset format {format!r} (ucf101, hmdb51 or folder)")
