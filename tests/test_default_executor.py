"""As asyncio's default executor: ``run_in_executor(None, coro_fn)`` runs in a child while
asyncio's own work (``to_thread``, ``getaddrinfo``, ``getnameinfo``) runs locally, and
``asyncio.run`` returns promptly afterwards.

The scenario runs in a fresh interpreter under a hard timeout, so that a hang at
``asyncio.run``'s shutdown of the default executor cannot wedge pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import json
    import os
    import socket
    import threading
    import time

    import helpers
    from aioexec import AsyncProcessExecutor


    def where():
        return os.getpid(), threading.current_thread().name


    async def main(report):
        loop = asyncio.get_running_loop()
        loop.set_default_executor(AsyncProcessExecutor(2))
        report["coroutine_pid"] = await loop.run_in_executor(None, helpers.async_pid)
        report["plain_pid"] = await loop.run_in_executor(None, helpers.pid)
        report["doubled"] = await loop.run_in_executor(None, helpers.async_double, 21)
        report["to_thread"] = await asyncio.to_thread(where)
        infos = await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        report["addresses"] = sorted({info[4][0] for info in infos})
        report["nameinfo"] = await loop.getnameinfo(
            ("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        )
        report["main_returned_at"] = time.monotonic()


    if __name__ == "__main__":
        report = {"parent_pid": os.getpid()}
        asyncio.run(main(report))
        report["shutdown_seconds"] = time.monotonic() - report.pop("main_returned_at")
        print(json.dumps(report))
    """
)


def test_default_executor_runs_coroutines_in_children_and_asyncio_work_locally(
    tmp_path: Path,
) -> None:
    script = tmp_path / "default_executor_scenario.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=45,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the asyncio.run scenario hung (killed after 45 s); stderr:\n{exc.stderr}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    parent_pid = report["parent_pid"]
    assert report["coroutine_pid"] != parent_pid
    assert report["plain_pid"] != parent_pid
    assert report["doubled"] == 42
    to_thread_pid, to_thread_name = report["to_thread"]
    assert to_thread_pid == parent_pid  # asyncio's own work stays in this process
    assert to_thread_name.startswith("aioexec-local")
    assert report["addresses"]
    assert set(report["addresses"]) <= {"127.0.0.1", "::1"}
    assert report["nameinfo"] == ["127.0.0.1", "80"]
    # asyncio.run shuts the default executor down: promptly, not after a timeout.
    assert report["shutdown_seconds"] < 15
