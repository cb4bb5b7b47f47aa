"""hdc_lib's modules import one way, in the order the data flows (README, "Layout").

Every import of an hdc_lib module, at the top of a file or inside a function, must name a module
that comes earlier in ORDER. A lazy import is still a dependency: it only hides a cycle until the
function runs.
"""
import ast
from pathlib import Path

import hdc_lib

PACKAGE = Path(hdc_lib.__file__).parent

ORDER = [
    "hdc_lib", "hdc_lib.errors", "hdc_lib.config",
    "hdc_lib.data.video_io", "hdc_lib.data.splits", "hdc_lib.data.cache", "hdc_lib.data.samplers",
    "hdc_lib.data.datasets", "hdc_lib.data.check", "hdc_lib.data.toyworld", "hdc_lib.data",
    "hdc_lib.augment", "hdc_lib.views", "hdc_lib.precision", "hdc_lib.backbones", "hdc_lib.receptive_field",
    "hdc_lib.heads",
    "hdc_lib.losses", "hdc_lib.moco", "hdc_lib.contrastive", "hdc_lib.coupled", "hdc_lib.hdc",
    "hdc_lib.dclr", "hdc_lib.supervised",
    "hdc_lib.experiment", "hdc_lib.checkpoint", "hdc_lib.runtime", "hdc_lib.features", "hdc_lib.train",
    "hdc_lib.evaluate", "hdc_lib.probes", "hdc_lib.viz", "hdc_lib.stats", "hdc_lib.provenance",
    "hdc_lib.reproduce", "hdc_lib.shipped_weights", "hdc_lib.trained_models",
    "hdc_lib.bench.timing", "hdc_lib.bench.steps", "hdc_lib.bench.decode",
    "hdc_lib.bench.augmentation", "hdc_lib.bench.stall", "hdc_lib.bench.methods", "hdc_lib.bench.precision",
    "hdc_lib.bench.scaling", "hdc_lib.bench.presets", "hdc_lib.bench.precision_probes",
    "hdc_lib.bench.notebooks", "hdc_lib.bench.report", "hdc_lib.bench.cli", "hdc_lib.bench",
    "hdc_lib.notebook", "hdc_lib.cli", "hdc_lib.__main__",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The hdc_lib modules a file imports anywhere in it; `from hdc_lib import viz` names
    hdc_lib.viz, and relative imports are resolved against the file's package."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in ORDER else base)
    return {m for m in found if m == "hdc_lib" or m.startswith("hdc_lib.")}


def test_every_module_has_a_place_in_the_order():
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    assert modules - set(ORDER) == set(), "add the new module to ORDER at its place in the data flow"


def test_no_module_imports_a_later_one():
    rank = {name: i for i, name in enumerate(ORDER)}
    unplaced = len(ORDER)  # a module missing from ORDER counts as the last (and fails the test above)
    backwards = sorted(f"{module_name(p)} imports {imported}"
                       for p in PACKAGE.rglob("*.py") for imported in imported_modules(p)
                       if rank.get(imported, unplaced) >= rank.get(module_name(p), unplaced))
    assert backwards == []


def test_the_check_sees_function_level_and_relative_imports():
    """The parser itself, on a file with a lazy import and a relative one."""
    source = PACKAGE / "data" / "check.py"  # uses `from .splits import ...`
    assert {"hdc_lib.data.splits", "hdc_lib.data.video_io"} <= imported_modules(source)
    lazy = PACKAGE / "cli.py"  # imports every subcommand's module inside functions
    assert {"hdc_lib.train", "hdc_lib.probes", "hdc_lib.bench"} <= imported_modules(lazy)
    viz_user = PACKAGE / "reproduce.py"  # `from hdc_lib import viz`
    assert "hdc_lib.viz" in imported_modules(viz_user)
