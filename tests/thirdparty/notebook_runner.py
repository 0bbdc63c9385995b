"""Run notebook cells in a real Jupyter kernel (ipykernel, driven by nbclient), for
``tests/test_main_module.py``; and find the processes a run left behind.

Imported by the test, this module builds (once, cached) a *notebook venv*: nbclient, nbformat,
ipykernel and cloudpickle from the package index, pinned, installed into a venv made from the
running interpreter, under the same cache directory and file lock as the third-party suites
(``harness.cache_root()``). Never into aioexec's own test venv: ipykernel drags in IPython,
pyzmq and tornado, and the CI venvs would drift. aioexec itself comes from this repository
through ``PYTHONPATH``, so the venv never needs rebuilding when aioexec changes.

Run as a script by that venv's python (``python notebook_runner.py CELLS.json OUT.json``), it
executes the cells (a JSON list of source strings) in a fresh ``python3`` kernel of that venv
and writes each cell's stdout, stderr and error to ``OUT.json``. The kernel talks to nbclient
over Unix sockets (``transport = "ipc"``), never TCP; nbclient starts the kernel in a session of
its own and shuts it down at the end. The caller tags the run with an environment variable
that the kernel and every process it starts inherit (:func:`processes_with`), which is how it
checks that nothing was left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# The tools, pinned: the newest on the index when this was written. ipykernel 7 needs Python
# 3.11; 6.31 is the newest for 3.10. typing-extensions is aioexec's one dependency.
NOTEBOOK_TOOLS = (
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0; python_version >= '3.11'",
    "ipykernel==6.31.0; python_version < '3.11'",
    "cloudpickle==3.1.3",
    "typing-extensions==4.16.0",
)

VENV_BUILD_LIMIT = 150  # measured: 20-26 s with pip's cache warm, on a busy 2-core machine
CELL_LIMIT = 60  # one cell (nbclient's timeout)
STARTUP_LIMIT = 60  # the kernel's start (nbclient's startup_timeout)


def notebook_venv() -> Path:
    """The python of the cached notebook venv; built when missing. Raises
    ``harness.IndexUnreachableError`` when pip cannot reach the index."""
    from thirdparty import harness  # tests/ is on sys.path in a pytest run

    base_python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    identity = "\n".join([sys.version, base_python, *NOTEBOOK_TOOLS])
    key = f"notebook-py{sys.version_info[0]}.{sys.version_info[1]}-"
    key += hashlib.sha256(identity.encode()).hexdigest()[:12]
    venv = harness.cache_root() / "venvs" / key
    stamp = venv / "aioexec-notebook-complete"
    python = venv / "bin" / "python"
    with harness.locked(venv.with_name(venv.name + ".lock")):
        if stamp.exists() and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        deadline = time.monotonic() + VENV_BUILD_LIMIT
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                check=True,
                capture_output=True,
                timeout=VENV_BUILD_LIMIT,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"python -m venv failed:\n{exc.stderr.decode()}") from exc
        harness.run_pip(python, ["install", *NOTEBOOK_TOOLS], max(deadline - time.monotonic(), 1))
        stamp.write_text(identity)
        return python


def isolated_jupyter_env(base: Path) -> dict[str, str]:
    """Environment variables that keep Jupyter and IPython away from the user's own
    configuration, kernels and startup files (all under ``base``)."""
    return {
        "JUPYTER_DATA_DIR": str(base / "jupyter-data"),  # no user kernel spec shadows ours
        "JUPYTER_CONFIG_DIR": str(base / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(base / "jupyter-runtime"),
        "IPYTHONDIR": str(base / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",  # jupyter_core warns at import without it
    }


# ------------------------------------------------------------------------------ leftovers


def processes_with(name: str, value: str) -> list[str]:
    """``pid command line`` of every process whose environment holds ``name=value``."""
    wanted = f"{name}={value}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if wanted not in environ.read_bytes().split(b"\0"):
                continue
            argv = (environ.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        found.append(f"{environ.parent.name} {b' '.join(argv).decode(errors='replace')[:200]}")
    return found


def reap(name: str, value: str, grace: float = 15.0) -> list[str]:
    """Processes tagged ``name=value`` still alive ``grace`` seconds from now (children
    exit on their own once their parent is gone: polled for); they are killed."""
    deadline = time.monotonic() + grace
    left = processes_with(name, value)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_with(name, value)
    for line in left:
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return left


# ------------------------------------------------------------------------------ the runner


def _text(outputs: list[dict[str, object]], stream: str) -> str:
    return "".join(
        str(o.get("text", ""))
        for o in outputs
        if o.get("output_type") == "stream" and o.get("name") == stream
    )


def _run(cells_path: str, out_path: str) -> None:
    import nbclient
    from nbformat.v4 import new_code_cell, new_notebook
    from traitlets.config import Config

    sources = json.loads(Path(cells_path).read_text())
    notebook = new_notebook(cells=[new_code_cell(source) for source in sources])
    config = Config()
    config.KernelManager.transport = "ipc"  # Unix sockets in the working directory
    client = nbclient.NotebookClient(
        notebook,
        config=config,
        kernel_name="python3",  # the venv's own ipykernel (JUPYTER_DATA_DIR hides the user's)
        timeout=CELL_LIMIT,
        startup_timeout=STARTUP_LIMIT,
        allow_errors=True,  # every cell runs, the last one (which shuts executors down) too
        resources={"metadata": {"path": os.getcwd()}},
    )
    started = time.monotonic()
    client.execute()
    cells = []
    for cell in notebook.cells:
        outputs = cell.get("outputs", [])
        errors = [o for o in outputs if o.get("output_type") == "error"]
        cells.append(
            {
                "stdout": _text(outputs, "stdout"),
                "stderr": _text(outputs, "stderr"),
                "error": (
                    f"{errors[0]['ename']}: {errors[0]['evalue']}\n"
                    + "\n".join(errors[0].get("traceback", []))
                    if errors
                    else None
                ),
            }
        )
    result = {"cells": cells, "seconds": time.monotonic() - started}
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    _run(sys.argv[1], sys.argv[2])
