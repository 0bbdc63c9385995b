"""Cancellation storm: thousands of random cancels leave every ``finally`` run once, no slot lost.

Two threads and an event loop submit coroutines that record their start and their ``finally``
in two files (one line per event, appended atomically by each child; see
``reliability_helpers.async_storm_task``), and cancel them at random: at once (mostly still
queued in the parent), a little later (mostly running in a child), through ``Future.cancel``,
through the awaiting asyncio task, and through ``asyncio.wait_for`` timeouts. Then:

- every future ended with its own result or cancelled, nothing else;
- every task that started ran its ``finally`` exactly once, and no task ran it without
  starting; a task whose future has a result did run;
- no slot leaked: ``child_concurrency * max_workers`` coroutines can all run at once.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import multiprocessing
import random
import threading
from pathlib import Path

import reliability_helpers as rh

from aioexec import AsyncProcessExecutor

MAX_WORKERS = 2
CHILD_CONCURRENCY = 8
PER_SUBMITTER = 1200
THREAD_SUBMITTERS = 2
# How long a task holds its slot: mostly short; the long ones are always cancelled.
HOLDS = [0.0, 0.001, 0.005, 0.02, 0.05, 10.0]


def _thread_submitter(
    ex: AsyncProcessExecutor,
    directory: str,
    first_id: int,
    later: collections.deque[concurrent.futures.Future[int]],
    out: dict[int, concurrent.futures.Future[int]],
) -> None:
    rng = random.Random(first_id)
    for task_id in range(first_id, first_id + PER_SUBMITTER):
        hold = rng.choice(HOLDS)
        future = ex.submit(rh.async_storm_task, directory, task_id, hold)
        out[task_id] = future
        fate = rng.random()
        if fate < 0.3:
            future.cancel()  # most likely still queued
        elif fate < 0.8 or hold >= 1:
            later.append(future)  # cancelled by the canceller thread, most likely running


def _canceller(
    later: collections.deque[concurrent.futures.Future[int]], stop: threading.Event
) -> None:
    rng = random.Random(7)
    while not (stop.is_set() and not later):
        if not later:
            stop.wait(0.001)
            continue
        future = later.popleft()
        stop.wait(rng.uniform(0, 0.01))  # spacing between cancels, not a wait for a condition
        future.cancel()


def _loop_submitter(
    ex: AsyncProcessExecutor, directory: str, first_id: int, out: dict[int, object]
) -> None:
    async def one(task_id: int, hold: float, how: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            if how == 0:
                out[task_id] = await ex.run(rh.async_storm_task, directory, task_id, hold)
            else:
                awaitable = loop.run_in_executor(ex, rh.async_storm_task, directory, task_id, hold)
                out[task_id] = await asyncio.wait_for(awaitable, rng.uniform(0, 0.03))
        except (asyncio.CancelledError, asyncio.TimeoutError):  # 3.10: not the builtin
            out[task_id] = "cancelled"

    rng = random.Random(first_id)

    async def main() -> None:
        tasks = []
        for task_id in range(first_id, first_id + PER_SUBMITTER):
            hold = rng.choice(HOLDS)
            task = asyncio.ensure_future(one(task_id, hold, task_id % 2))
            tasks.append(task)
            if task_id % 2 == 0 and (rng.random() < 0.7 or hold >= 1):
                asyncio.get_running_loop().call_later(rng.uniform(0, 0.03), task.cancel)
            if task_id % 50 == 0:
                await asyncio.sleep(0)  # let the cancels interleave with the submissions
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), rh.TIMEOUT)

    asyncio.run(main())


def test_a_storm_of_cancels_runs_every_finally_once_and_leaks_no_slot(tmp_path: Path) -> None:
    directory = str(tmp_path)
    started_file, finally_file = tmp_path / "started", tmp_path / "finally"
    ex = AsyncProcessExecutor(
        MAX_WORKERS,
        mp_context=multiprocessing.get_context("forkserver"),
        child_concurrency=CHILD_CONCURRENCY,
    )
    try:
        later: collections.deque[concurrent.futures.Future[int]] = collections.deque()
        futures: dict[int, concurrent.futures.Future[int]] = {}
        loop_outcomes: dict[int, object] = {}
        stop = threading.Event()
        ids = itertools.count(0, PER_SUBMITTER)
        submitters = [
            threading.Thread(
                target=_thread_submitter, args=(ex, directory, next(ids), later, futures)
            )
            for _ in range(THREAD_SUBMITTERS)
        ]
        loop_first = next(ids)
        submitters.append(
            threading.Thread(
                target=_loop_submitter, args=(ex, directory, loop_first, loop_outcomes)
            )
        )
        canceller = threading.Thread(target=_canceller, args=(later, stop))
        for thread in [*submitters, canceller]:
            thread.start()
        for thread in submitters:
            thread.join(2 * rh.TIMEOUT)
        stop.set()
        canceller.join(rh.TIMEOUT)
        assert not any(t.is_alive() for t in [*submitters, canceller]), "a thread never ended"

        _, not_done = concurrent.futures.wait(futures.values(), timeout=rh.TIMEOUT)
        assert not not_done, f"{len(not_done)} futures never ended"
        outcomes: dict[int, object] = dict(loop_outcomes)
        for task_id, future in futures.items():
            if future.cancelled():
                outcomes[task_id] = "cancelled"
            else:
                error = future.exception()
                outcomes[task_id] = error if error is not None else future.result()
        total = THREAD_SUBMITTERS * PER_SUBMITTER + PER_SUBMITTER
        assert len(outcomes) == total
        wrong = {i: o for i, o in outcomes.items() if o not in (i, "cancelled")}
        assert not wrong, f"{len(wrong)} tasks ended otherwise, e.g. {list(wrong.items())[:5]}"

        # The child runs a cancelled coroutine's finally after the future is already
        # cancelled: wait until every task that started has finished.
        def settled() -> bool:
            return set(rh.read_lines(started_file)) == set(rh.read_lines(finally_file))

        assert rh.wait_until(settled), (
            f"{len(set(rh.read_lines(started_file)) - set(rh.read_lines(finally_file)))} "
            "started tasks never ran their finally"
        )
        _check_exactly_once(started_file, finally_file, outcomes)

        # No slot leaked: all of them run at once.
        slots = MAX_WORKERS * CHILD_CONCURRENCY
        barrier = str(tmp_path / "barrier")
        full = [ex.submit(rh.async_wait_until_all_running, barrier, slots) for _ in range(slots)]
        pids = {f.result(timeout=rh.TIMEOUT + 10) for f in full}  # the barrier times out first
        assert len(pids) == MAX_WORKERS
    finally:
        closed = rh.close_bounded(ex)
    assert closed, "shutdown(wait=True) did not return"
    # Nothing ran a finally late, or twice, during shutdown.
    _check_exactly_once(started_file, finally_file, outcomes)
    cancelled = {i for i, o in outcomes.items() if o == "cancelled"}
    started = set(map(int, rh.read_lines(started_file)))
    print(
        f"{total} tasks: {len(cancelled & started)} cancelled while running, "
        f"{len(cancelled - started)} before they started, {total - len(cancelled)} completed"
    )
    # The storm really mixed both kinds of cancellation.
    assert len(cancelled & started) >= 50
    assert len(cancelled - started) >= 50


def _check_exactly_once(
    started_file: Path, finally_file: Path, outcomes: dict[int, object]
) -> None:
    started = collections.Counter(map(int, rh.read_lines(started_file)))
    finished = collections.Counter(map(int, rh.read_lines(finally_file)))
    twice = {i: n for i, n in (started + finished).items() if started[i] != 1 or finished[i] != 1}
    assert not twice, "tasks not started and finished exactly once (id: starts, finallys): " + str(
        {i: (started[i], finished[i]) for i in list(twice)[:10]}
    )
    ran = {i for i, o in outcomes.items() if o == i}
    assert ran <= set(finished), (
        f"tasks with a result that never ran: {sorted(ran - set(finished))[:10]}"
    )
