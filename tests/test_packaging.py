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


# The extras environment.yml installs (`-e .[notebooks,test]`); others, such as tensorboard, are
# opt-in on either route.
CONDA_EXTRAS = ("notebooks", "test")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in CONDA_EXTRAS:
        specs += project["optional-dependencies"][extra]
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


def test_torch_and_torchvision_work_as_a_pair():
    """torchvision's compiled operators must be built for the installed torch: a mismatched pair
    fails to import or to load them. Non-maximum suppression runs in those operators: of two boxes
    that overlap by IoU 81/119 = 0.68 > 0.5, the lower-scored one goes; a distant box stays."""
    import torch
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert torchvision.ops.nms(boxes, scores, iou_threshold=0.5).tolist() == [0, 2]


def test_pyav_decodes_a_video_it_writes(tmp_path):
    """PyAV (which bundles its own FFmpeg) encodes five frames of distinct grey levels with H.264
    and decodes them back, in order and close to what was written."""
    import av
    import numpy as np

    frames = [np.full((32, 32, 3), 30 + 40 * t, dtype=np.uint8) for t in range(5)]
    path = tmp_path / "tiny.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == len(frames)
    for got, written in zip(decoded, frames):
        assert np.abs(got.astype(int) - written).mean() < 4
