"""`make lab` works: JupyterLab starts headless on notebooks/, lists every notebook, opens each one
and serves the lab page. The server runs on a free loopback port with a random token and temporary
Jupyter config / data / runtime folders, and is always stopped."""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, token: str, timeout: float = 10.0) -> tuple[int, str, str]:
    """(status, content type, body) of a GET with the token in the Authorization header."""
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback only
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


@pytest.fixture
def lab_server(tmp_path):
    """A running JupyterLab on notebooks/: yields (base url, token); stopped afterwards."""
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        folder = tmp_path / name.lower()
        folder.mkdir()
        env[name] = str(folder)
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "lab-settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "lab-workspaces")
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={NOTEBOOKS}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if server.poll() is not None:
                log.flush()
                pytest.fail(f"jupyter lab exited with {server.returncode}:\n{(tmp_path / 'lab.log').read_text()}")
            try:
                if get(f"{base}/api/status", token, timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"jupyter lab did not answer within {START_TIMEOUT:.0f} s:\n"
                            f"{(tmp_path / 'lab.log').read_text()}")
            time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)
        log.close()


def test_lab_lists_and_opens_every_notebook(lab_server):
    base, token = lab_server
    expected = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
    assert expected, "no notebooks found"

    status, _, body = get(f"{base}/api/contents", token)
    assert status == 200
    listing = json.loads(body)
    listed = {item["name"]: item["type"] for item in listing["content"]}
    for name in expected:
        assert listed.get(name) == "notebook", f"{name} not listed as a notebook: {listed.get(name)}"

    for name in expected:
        status, _, body = get(f"{base}/api/contents/{urllib.parse.quote(name)}?content=1", token)
        model = json.loads(body)
        assert status == 200 and model["type"] == "notebook", name
        assert model["content"]["cells"], f"{name} opened with no cells"

    status, content_type, body = get(f"{base}/lab", token)
    assert status == 200 and content_type.startswith("text/html")
    assert "<html" in body.lower()


def test_the_lab_loads_the_widget_manager(lab_server):
    """The explorer in 06 is an ipywidgets view: JupyterLab must load the widget manager extension
    (jupyterlab_widgets) and serve its code, or the widget shows as a plain-text repr."""
    base, token = lab_server
    _, _, page = get(f"{base}/lab", token)
    marker = '<script id="jupyter-config-data" type="application/json">'
    assert marker in page
    config = json.loads(page.split(marker, 1)[1].split("</script>", 1)[0])
    extensions = {ext["name"]: ext for ext in config["federated_extensions"]}
    manager = extensions.get("@jupyter-widgets/jupyterlab-manager")
    assert manager is not None, f"widget manager not loaded; extensions: {sorted(extensions)}"
    status, content_type, code = get(f"{base}/lab/extensions/{manager['name']}/{manager['load']}", token)
    assert status == 200 and "javascript" in content_type and code


def test_make_lab_serves_the_notebooks_with_a_kernel_that_imports_this_checkout():
    """`make lab` runs the venv's JupyterLab on notebooks/, with --allow-root exactly when run as
    root (Jupyter refuses root without it). Its kernels run the server's own interpreter (Jupyter
    replaces a kernelspec's "python" with it: the one in the jupyter script's #! line), which must
    import hdc_lib from this checkout, or the notebooks would document another copy of the library."""
    jupyter = REPO / ".venv" / "bin" / "jupyter"
    if not jupyter.exists():
        pytest.skip("no .venv here: `make lab` builds it")
    # `make test` runs this test: a make inside it would print make[1]'s directory lines and read its flags
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry_run = subprocess.run(["make", "--no-print-directory", "-n", "lab"], cwd=REPO, capture_output=True,
                             text=True, check=True, env=env).stdout
    command = dry_run.splitlines()[-1].split()
    assert command[:3] == [".venv/bin/jupyter", "lab", "notebooks"], dry_run
    assert ("--allow-root" in command) == (os.geteuid() == 0), dry_run
    interpreter = jupyter.read_text().splitlines()[0].removeprefix("#!").strip()
    found = subprocess.run([interpreter, "-c", "import hdc_lib; print(hdc_lib.__file__)"], cwd=NOTEBOOKS,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(found).resolve() == (REPO / "hdc_lib" / "__init__.py").resolve()
