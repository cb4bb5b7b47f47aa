"""The project's documents are in the project: nothing points outside it, and every citation of a
docs/ section names a heading that exists.

Code cites a section as `docs/<file>.md, "<heading>"` (the heading may wrap onto the next line of
a docstring); notebooks and the README also link `docs/<file>.md#<anchor>`, which must be the
GitHub anchor of one of that file's headings.
"""
import functools
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Text of a project file; anything else (figures, binary data) is not read.
TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".yaml", ".yml", ".toml", ".json", ".txt", ".cfg", ".ini", ""}
# Folders that are generated or installed, never part of the project (see .gitignore).
NOT_PROJECT = {".git", ".venv", "data", "runs", "__pycache__", ".pytest_cache", ".ipynb_checkpoints"}

# Material that lives beside the project for its developers and that a clone does not have: the
# folder itself and the names of its files. Spelled in pieces so this file does not match itself.
OUTSIDE = re.compile("|".join([
    r"\.\./" + "shared", "shared/" + "reference",
    "method-" + "spec", "data-" + "spec", r"\b(method|data) " + r"spec\b",
    "dclr-" + "digest", "toyworld-" + "findings", "env-" + "facts", "anchors" + r"\.md",
]), re.IGNORECASE)
CITATION = re.compile(r'docs/([\w-]+\.md),\s+"([^"]+)"')
LINK = re.compile(r"docs/([\w-]+\.md)#([\w-]+)")
MENTION = re.compile(r"docs/([\w-]+\.md)")


def project_files() -> list[Path]:
    """The tracked files (git ls-files); without git, every file outside the generated folders."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True,
                                text=True).stdout.split("\0")
        paths = [ROOT / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*")
                 if not NOT_PROJECT & set(p.relative_to(ROOT).parts) and not p.name.endswith(".egg-info")]
    return sorted(p for p in paths if p.is_file() and p.suffix in TEXT_SUFFIXES)


def readable_text(path: Path) -> str:
    """What a reader sees: a notebook's cell sources (not its JSON escapes), any other file as is."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        return "\n".join("".join(cell["source"]) for cell in json.loads(raw)["cells"])
    return raw


@functools.cache
def headings(doc: str) -> tuple[str, ...]:
    """The Markdown headings of docs/<doc>, any level (a `#` line inside a code fence is none)."""
    found, fenced = [], False
    for line in (DOCS / doc).read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.append(line.lstrip("#").strip())
    return tuple(found)


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


@pytest.fixture(scope="module")
def texts() -> dict[Path, str]:
    return {path: readable_text(path) for path in project_files()}


def test_the_scan_sees_the_project(texts):
    # A scan that found no files (or not these) would pass every check below vacuously.
    names = {path.relative_to(ROOT).as_posix() for path in texts}
    assert {"README.md", "docs/methods.md", "docs/data.md", "hdc_lib/dclr.py",
            "notebooks/05_dclr_static_dynamic.ipynb", "configs/ucf101/dclr_r2plus1d.yaml"} <= names


def test_no_file_refers_to_material_outside_the_project(texts):
    found = [f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
             for path, text in texts.items() if path != Path(__file__).resolve()
             for match in OUTSIDE.finditer(text)]
    assert not found, "references to files a clone does not have:\n" + "\n".join(found)


def test_every_section_citation_names_an_existing_heading(texts):
    cited, missing = 0, []
    for path, text in texts.items():
        for doc, section in CITATION.findall(text):
            cited += 1
            section = " ".join(section.split())  # a heading wrapped over two docstring lines
            if not (DOCS / doc).is_file() or section not in headings(doc):
                missing.append(f"{path.relative_to(ROOT)}: docs/{doc}, {section!r}")
    assert not missing, "citations of headings that do not exist:\n" + "\n".join(missing)
    assert cited >= 20  # the code, tests, configs and notebooks cite sections throughout


def test_every_docs_link_and_mention_resolves(texts):
    broken = []
    for path, text in texts.items():
        for doc in MENTION.findall(text):
            if not (DOCS / doc).is_file():
                broken.append(f"{path.relative_to(ROOT)}: docs/{doc} does not exist")
        for doc, anchor in LINK.findall(text):
            if (DOCS / doc).is_file() and anchor not in {github_anchor(h) for h in headings(doc)}:
                broken.append(f"{path.relative_to(ROOT)}: docs/{doc}#{anchor} is no heading's anchor")
    assert not broken, "\n".join(broken)


def test_github_anchor_matches_githubs_rule():
    assert github_anchor("HDC (our reading)") == "hdc-our-reading"
    assert github_anchor("DCLR official code: bugs fixed") == "dclr-official-code-bugs-fixed"
    assert github_anchor("Toy-world probes") == "toy-world-probes"


def test_the_defaults_docs_methods_states_are_the_codes():
    """docs/methods.md states defaults in sentences; each is built here from the dataclass (or
    preset) it describes, so changing a default without the docs (or the docs alone) fails."""
    from hdc_lib.augment import AugmentConfig
    from hdc_lib.contrastive import ContrastConfig
    from hdc_lib.experiment import OptimConfig, TrainConfig
    from hdc_lib.reproduce import PRESETS

    contrast, paper, optim, train = ContrastConfig(), AugmentConfig(), OptimConfig(), TrainConfig()
    toy = contrast.augment
    lo, hi = contrast.window_offset
    scientific = f"{optim.lr:.0e}".replace("e-0", "e-")  # 2e-3
    stated = [
        f"`model.window_offset` defaults to `[{lo}, {hi}]` (the toy setting): the two windows start {lo}-{hi} frames",
        f"the channel shuffle is {paper.channel_shuffle_p:g} in the paper setting (`AugmentConfig`) and "
        f"{toy.channel_shuffle_p:g} in the toy setting",
        f"{paper.size} px crops of area scale {paper.scale[0]:g}-{paper.scale[1]:g}",
        f"flip {paper.flip_p:g}, jitter ({paper.brightness:g}, {paper.contrast:g}, {paper.saturation:g}, "
        f"{paper.hue:g}) with probability {paper.jitter_p:g}, grayscale {paper.gray_p:g}, blur {paper.blur_p:g}",
        f"Toy setting (`ClipModelConfig` defaults): {toy.size} px crops of area scale {toy.scale[0]:g}-{toy.scale[1]:g}",
        f"{contrast.clip_frames}-frame clips at stride {contrast.clip_stride} cropped to {toy.size} px",
        f"temperature {contrast.temperature:g}",
        f"`m` = {contrast.momentum:g}",
        f"with lr {scientific}, weight decay {optim.weight_decay:g} and a {optim.schedule} schedule, batch "
        f"{train.batch_size}, {train.epochs} epochs",
        f"`hdc reproduce --preset toy` trains every row, supervised ones included, for {PRESETS['toy'].steps} "
        f"optimiser steps",
        f"`--preset full` for {PRESETS['full'].steps} optimiser steps",
    ]
    assert PRESETS["toy"].supervised_steps == PRESETS["toy"].steps  # "supervised ones included"
    text = " ".join((DOCS / "methods.md").read_text(encoding="utf-8").split())
    missing = [sentence for sentence in stated if sentence not in text]
    assert not missing, "docs/methods.md no longer states these defaults:\n" + "\n".join(missing)
