"""Sync and async initializers run in every child before its first task; a failing
initializer breaks the executor promptly with a clear error and never respawns children."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import helpers
import pytest

from aioexec import AsyncProcessExecutor

TIMEOUT = 30


@pytest.mark.parametrize(
    "initializer", [helpers.set_init_value, helpers.async_set_init_value], ids=["sync", "async"]
)
def test_initializer_runs_in_every_child_before_its_tasks(
    make_executor: Callable[..., AsyncProcessExecutor], initializer: Callable[[object], object]
) -> None:
    ex = make_executor(2, initializer=initializer, initargs=("initialized",))
    # Tasks that hold a child busy, submitted together: the second one starts a second child.
    fs = [ex.submit(helpers.async_read_init_value, 0.5) for _ in range(8)]
    results = [f.result(TIMEOUT) for f in fs]
    assert {value for _, value in results} == {"initialized"}
    assert len({pid for pid, _ in results}) == 2


def test_initializer_arguments_reach_the_child(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    value = {"nested": [1, 2, 3], "bytes": b"\x00\xff"}
    ex = make_executor(1, initializer=helpers.set_init_value, initargs=(value,))
    assert ex.submit(helpers.async_read_init_value).result(TIMEOUT)[1] == value


def test_failing_initializer_breaks_the_executor_without_respawning_children(
    make_executor: Callable[..., AsyncProcessExecutor], tmp_path: Path
) -> None:
    started_log = tmp_path / "initializer-pids"
    max_workers = 2
    ex = make_executor(
        max_workers, initializer=helpers.record_pid_then_fail, initargs=(str(started_log),)
    )
    started = time.monotonic()
    fs = [ex.submit(helpers.async_sleep, 0.2, i) for i in range(4)]
    fs.append(ex.submit(helpers.double, 1))
    for future in fs:
        exc = future.exception(TIMEOUT)
        assert isinstance(exc, BrokenProcessPool)
        assert "initializer exploded on purpose" in str(exc)
    assert time.monotonic() - started < 20  # broken within seconds, not after a long retry

    with pytest.raises(BrokenProcessPool, match="initializer exploded on purpose"):
        ex.submit(helpers.async_double, 1)

    # Watch the children for a while: no new ones may appear, and the failed ones go away.
    seen_pids: set[int] = set()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        seen_pids.update(ex._processes)
        time.sleep(0.02)
    assert len(seen_pids) <= max_workers
    assert not ex._processes
    # Every child that ran the initializer logged its pid (a child may also be stopped
    # before it got that far): all children ever started are at most max_workers.
    initialized_pids = {int(pid) for pid in started_log.read_text().split()}
    assert 1 <= len(initialized_pids) <= max_workers
    assert len(seen_pids | initialized_pids) <= max_workers

    with pytest.raises(BrokenProcessPool):
        ex.submit(helpers.double, 2)
