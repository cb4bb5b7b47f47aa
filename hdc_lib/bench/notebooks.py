"""`hdc bench notebooks`: every notebook run top to bottom in its default mode, timed."""
from __future__ import annotations

import os
import time
from pathlib import Path


def time_notebooks(paths: list[Path], inplace: bool = False, timeout: int = 900) -> dict[str, float]:
    """Run each notebook top to bottom in its default mode (HDC_FAST unset) with the python3
    kernel, from its own folder; seconds per notebook. `inplace` stores the fresh outputs."""
    import nbformat
    from nbconvert.preprocessors import ExecutePreprocessor

    seconds = {}
    environment = {k: v for k, v in os.environ.items() if k not in ("HDC_FAST", "HDC_LONG")}
    previous = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment)  # the kernel inherits this process's environment
    try:
        for path in paths:
            path = Path(path)
            notebook = nbformat.read(path, as_version=4)
            started = time.perf_counter()
            ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(
                notebook, {"metadata": {"path": str(path.parent)}})
            seconds[path.name] = time.perf_counter() - started
            if inplace:
                nbformat.write(notebook, path)
    finally:
        os.environ.clear()
        os.environ.update(previous)
    return seconds
