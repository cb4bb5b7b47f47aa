"""The install files agree with each other and with the design card."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DESIGN_CARD = ["torch", "torchvision", "jupyterlab", "matplotlib", "seaborn", "ipywidgets", "av",
               "nbval", "pytest"]


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0].lower()


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    return {requirement_name(s): s for s in specs}


def conda_pip_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return {requirement_name(s): s for s in pip_section if not s.startswith("-e")}


def test_environment_yml_is_a_conda_environment_that_installs_the_project():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] and env["channels"]
    plain = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("python") for d in plain) and "pip" in plain
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e .[notebooks,test]" in pip_section


def test_every_design_card_package_is_listed_in_both_files():
    for package in DESIGN_CARD:
        assert package in pyproject_requirements(), package
        assert package in conda_pip_requirements(), package


def test_environment_yml_agrees_with_pyproject():
    pyproject, conda = pyproject_requirements(), conda_pip_requirements()
    assert set(conda) == set(pyproject)
    for name, spec in conda.items():
        assert spec == pyproject[name], f"{name}: {spec!r} in environment.yml, {pyproject[name]!r} in pyproject"


def test_torch_pair_is_pinned():
    pyproject = pyproject_requirements()
    assert pyproject["torch"] == "torch==2.14.1"
    assert pyproject["torchvision"] == "torchvision==0.29.1"
