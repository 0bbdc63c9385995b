"""Seeing what the pool does (``stats()``, the ``aioexec`` logger) and stopping running plain
calls (``ex.options(stoppable=True)``, ``timeout``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import helpers
import pytest

from aioexec import (
    AsyncProcessExecutor,
    BrokenWorkerError,
    TaskTimeout,
)

TIMEOUT = 30


def pids_in(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


# -- stats and logging -------------------------------------------------------------------------


def test_stats_agree_with_deaths_retirements_and_cancellations(
    make_executor: Callable[..., AsyncProcessExecutor], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioexec")
    ex = make_executor(2, max_tasks_per_child=3)
    assert ex.stats().workers == ()  # nothing started yet
    # Three tasks on one child retire it (max_tasks_per_child=3).
    for i in range(3):
        assert ex.submit(helpers.double, i).result(TIMEOUT) == 2 * i
    helpers.wait_until(lambda: ex.stats().workers_retired >= 1, TIMEOUT)
    # A child killed while it runs a task is lost; the task fails with BrokenWorkerError.
    doomed = ex.submit(helpers.async_sleep, 60)
    helpers.wait_until(lambda: any(w.coroutines for w in ex.stats().workers), TIMEOUT)
    [victim] = [w for w in ex.stats().workers if w.coroutines]
    os.kill(victim.pid, signal.SIGKILL)
    assert isinstance(doomed.exception(TIMEOUT), BrokenWorkerError)
    # A running coroutine cancelled; a task that fails.
    running = ex.submit(helpers.async_sleep, 60)
    helpers.wait_until(lambda: any(w.coroutines for w in ex.stats().workers), TIMEOUT)
    assert running.cancel()
    with pytest.raises(ValueError, match="boom"):
        ex.submit(helpers.raise_value_error, "boom").result(TIMEOUT)
    helpers.wait_until(lambda: ex.stats().tasks_cancelled == 1, TIMEOUT)

    stats = ex.stats()
    assert stats.tasks_sent == 6
    assert (stats.tasks_done, stats.tasks_failed, stats.tasks_cancelled) == (3, 2, 1)
    assert stats.workers_lost == 1
    assert stats.workers_retired >= 1
    assert stats.workers_started == len(stats.workers) + stats.workers_lost + stats.workers_retired
    assert stats.queued == 0
    assert stats.broken is None
    live = {w.pid for w in stats.workers}
    assert live == set(ex._processes)
    assert victim.pid not in live
    replaced = [w.replaced for w in stats.workers if w.replaced]
    assert any("SIGKILL" in r for r in replaced) or any("retired" in r for r in replaced)
    for worker in stats.workers:
        assert worker.state in ("starting", "ready", "retiring")
        assert worker.started_at <= time.time()

    messages = [r.getMessage() for r in caplog.records if r.name == "aioexec"]
    assert any(f"(pid {victim.pid}) was killed by SIGKILL" in m for m in messages)
    assert any("started (pid" in m for m in messages)
    assert any("retired after max_tasks_per_child=3 tasks" in m for m in messages)


def test_stats_count_the_calls_that_ran_on_this_processs_threads(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    ex = make_executor(1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ex)
        await loop.run_in_executor(None, helpers.pid)
        await asyncio.to_thread(helpers.pid)

    asyncio.run(main())  # asyncio.run shuts its default executor down: ex is done
    assert ex.stats().thread_calls == 2


def test_routing_decisions_are_logged_at_debug(
    shared_executor: AsyncProcessExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioexec")
    shared_executor.submit(helpers.double, 1).result(TIMEOUT)
    assert any("runs on a worker (direct call)" in r.getMessage() for r in caplog.records)


# -- stopping running plain calls --------------------------------------------------------------


def test_wait_for_stops_a_stoppable_plain_call_and_the_executor_goes_on(
    make_executor: Callable[..., AsyncProcessExecutor], tmp_path: Path
) -> None:
    ex = make_executor(2)
    record = tmp_path / "finally"

    async def main() -> float:
        started = time.monotonic()
        call = ex.options(stoppable=True, grace=5).run(
            helpers.sleep_recording_finally, 60, str(record)
        )
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(call, 1)
        return time.monotonic() - started

    assert asyncio.run(main()) < TIMEOUT
    helpers.wait_until(lambda: pids_in(record), TIMEOUT)  # its finally ran: interrupted, not killed
    [pid] = pids_in(record)
    helpers.wait_until(lambda: pid not in ex._processes, TIMEOUT)  # its child was replaced
    assert ex.submit(helpers.double, 21).result(TIMEOUT) == 42


def test_a_timeout_stops_a_plain_call_with_task_timeout(
    make_executor: Callable[..., AsyncProcessExecutor],
) -> None:
    ex = make_executor(1)
    future = ex.options(timeout=0.5).submit(helpers.sleep, 60)
    with pytest.raises(TaskTimeout, match=r"timeout of 0\.5 s"):
        future.result(TIMEOUT)
    # Stopped (interrupted, or killed after its grace), and its child replaced.
    helpers.wait_until(lambda: ex.stats().workers_retired == 1, TIMEOUT)
    assert ex.submit(helpers.double, 2).result(TIMEOUT) == 4


def test_a_timeout_cancels_a_coroutine_in_its_child_with_task_timeout(
    make_executor: Callable[..., AsyncProcessExecutor], tmp_path: Path
) -> None:
    ex = make_executor(1)
    record = tmp_path / "finally"

    async def main() -> None:
        with pytest.raises(TaskTimeout):
            await ex.options(timeout=0.3).run(
                helpers.async_sleep_recording_finally, 60, str(record)
            )

    asyncio.run(main())
    helpers.wait_until(lambda: pids_in(record), TIMEOUT)
    [pid] = pids_in(record)
    assert pid in ex._processes  # a coroutine's child is not replaced: it was only cancelled
    assert ex.options(timeout=5).submit(helpers.double, 3).result(TIMEOUT) == 6


def test_cancel_of_a_running_stoppable_call_returns_true_and_stops_it(
    make_executor: Callable[..., AsyncProcessExecutor], tmp_path: Path
) -> None:
    ex = make_executor(1)
    record, started = tmp_path / "finally", tmp_path / "started"
    future = ex.options(stoppable=True).submit(
        helpers.sleep_recording_finally, 60, str(record), str(started)
    )
    helpers.wait_until(started.exists, TIMEOUT)
    assert future.cancel()
    assert future.cancelled()
    helpers.wait_until(lambda: pids_in(record), TIMEOUT)
    # A plain call without the option cannot be stopped, as in the standard library.
    plain = ex.submit(helpers.sleep, 0.5, "ran to its end")
    helpers.wait_until(plain.running, TIMEOUT)
    assert not plain.cancel()
    assert plain.result(TIMEOUT) == "ran to its end"


def test_a_call_that_ignores_its_stop_is_killed_after_the_grace_period_alone(
    make_executor: Callable[..., AsyncProcessExecutor], tmp_path: Path
) -> None:
    ex = make_executor(2)
    started = tmp_path / "started"
    neighbour = ex.submit(helpers.async_sleep, 1.0, "untouched")  # on another child
    stubborn = ex.options(stoppable=True, grace=0.5).submit(
        helpers.sleep_ignoring_stops, 60, str(started)
    )
    helpers.wait_until(started.exists, TIMEOUT)
    assert stubborn.cancel()
    helpers.wait_until(lambda: ex.stats().workers_retired >= 1, TIMEOUT)
    assert neighbour.result(TIMEOUT) == "untouched"  # stoppable calls run alone
    assert ex.submit(helpers.double, 4).result(TIMEOUT) == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": "1"}, "timeout must be a positive number"),
        ({"grace": -1}, "grace must be a number of seconds >= 0"),
    ],
)
def test_options_reject_bad_values(
    shared_executor: AsyncProcessExecutor, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        shared_executor.options(**kwargs)  # type: ignore[arg-type]


def test_options_views_share_the_executor(shared_executor: AsyncProcessExecutor) -> None:
    view = shared_executor.options(timeout=10)
    assert isinstance(view, AsyncProcessExecutor)
    assert view.submit(helpers.double, 5).result(TIMEOUT) == 10
    assert view._engine is shared_executor._engine
    assert list(view.map(helpers.double, [1, 2])) == [2, 4]
