"""What a person inspecting a program sees: the workers' process titles in ``ps`` and ``top``
(with the ``setproctitle`` extra), and ``help(AsyncProcessExecutor)``."""

from __future__ import annotations

import inspect
import os
import pydoc
import re
from collections.abc import Callable
from pathlib import Path

import helpers
import pytest

from aioexec import AsyncProcessExecutor

# The constructor's arguments (aioexec's public contract): a new one must be explained too.
ARGUMENTS = (
    "max_workers",
    "mp_context",
    "initializer",
    "initargs",
    "max_tasks_per_child",
    "child_concurrency",
    "scheduler",
    "loop_factory",
    "fallback",
)


def _command_line(pid: int) -> str:
    """What ``ps -o args`` shows: /proc/PID/cmdline, NUL-separated (setproctitle may pad the
    rewritten area with NULs)."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_worker_process_title_names_the_worker_and_its_parent(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    pytest.importorskip("setproctitle")
    ex = make_executor(max_workers=1)
    child = ex.submit(helpers.pid).result(timeout=30)
    assert child != os.getpid()
    title = _command_line(child)  # the child is alive: it waits for more work
    match = re.fullmatch(r"aioexec worker (\d+) of (.+) \(pid (\d+)\)", title)
    assert match is not None, title
    assert int(match[3]) == os.getpid(), title


def test_help_explains_every_constructor_argument() -> None:
    assert tuple(inspect.signature(AsyncProcessExecutor).parameters) == ARGUMENTS
    text = pydoc.render_doc(AsyncProcessExecutor, renderer=pydoc.plaintext)
    for name in ARGUMENTS:
        # " |      max_workers: how many child processes ..." (the class docstring's Args)
        assert re.search(rf"^ \|\s+{name}: \S", text, re.MULTILINE), f"{name} is not explained"


def test_help_does_not_describe_thread_pool_arguments() -> None:
    text = pydoc.render_doc(AsyncProcessExecutor, renderer=pydoc.plaintext)
    assert "thread_name_prefix" not in text
    assert "Initializes a new ThreadPoolExecutor" not in text
