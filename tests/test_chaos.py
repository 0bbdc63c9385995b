"""Chaos: children SIGKILLed every 50 ms under mixed load lose nothing and break nothing.

Several threads and an event loop submit coroutines and plain functions (through ``submit``,
``ex.run`` and ``run_in_executor``) while a killer thread SIGKILLs a live child every 50 ms.
Every future must end, within a bound, with its own correct result or ``BrokenWorkerError``;
then the pool heals (``max_workers`` live children, every slot usable), and after shutdown no
process is left and the process's descriptors and threads are back to their baseline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import itertools
import multiprocessing
import os
import random
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import reliability_helpers as rh

from aioexec import AsyncProcessExecutor, BrokenWorkerError

MAX_WORKERS = 3
CHILD_CONCURRENCY = 8
KILL_INTERVAL = 0.05
KILLING_FOR = 3.0  # seconds of killing; submissions go on all along
THREAD_SUBMITTERS = 3
BATCH = 40  # a submitter waits for each batch before the next, so the queue stays short

Outcome = tuple[int, object]  # (expected result, what came: a value or an exception)


def _warm_up(ctx: multiprocessing.context.BaseContext) -> None:
    """Start what lives as long as this process (forkserver, resource tracker) before the
    baseline is measured."""
    with AsyncProcessExecutor(1, mp_context=ctx) as ex:
        assert ex.submit(rh.triple, 1).result(timeout=rh.TIMEOUT) == 3


def _thread_submitter(
    ex: AsyncProcessExecutor, seed: int, stop: threading.Event, out: list[Outcome]
) -> None:
    rng = random.Random(seed)
    numbers = itertools.count(seed * 1_000_000)
    kinds: list[Callable[[int], Any]] = [
        lambda x: ex.submit(rh.triple, x),
        lambda x: ex.submit(rh.async_triple, x),
        lambda x: ex.submit(rh.async_triple_later, x, rng.uniform(0, 0.05)),
    ]
    while not stop.is_set():
        batch = []
        for _ in range(BATCH):
            x = next(numbers)
            try:
                batch.append((3 * x, rng.choice(kinds)(x)))
            except BaseException as exc:  # submit itself must not fail
                out.append((3 * x, exc))
        concurrent.futures.wait([f for _, f in batch], timeout=rh.TIMEOUT)
        for expected, future in batch:
            if not future.done():
                out.append((expected, "never done"))
            elif future.cancelled():
                out.append((expected, "cancelled"))
            else:
                error = future.exception()
                out.append((expected, error if error is not None else future.result()))


def _loop_submitter(ex: AsyncProcessExecutor, stop: threading.Event, out: list[Outcome]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        numbers = itertools.count(9_000_000)
        while not stop.is_set():
            xs = [next(numbers) for _ in range(BATCH)]
            awaitables = []
            for i, x in enumerate(xs):
                if i % 3 == 0:
                    awaitables.append(ex.run(rh.async_triple, x))
                elif i % 3 == 1:
                    awaitables.append(ex.run(rh.triple, x))
                else:
                    awaitables.append(loop.run_in_executor(ex, rh.async_triple, x))
            try:
                outcomes = await asyncio.wait_for(
                    asyncio.gather(*awaitables, return_exceptions=True), rh.TIMEOUT
                )
            except asyncio.TimeoutError:  # 3.10: not the builtin TimeoutError
                outcomes = ["never done"] * len(xs)
            out.extend(zip((3 * x for x in xs), outcomes, strict=True))

    asyncio.run(main())


def _killer(ex: AsyncProcessExecutor, stop: threading.Event, killed: list[int]) -> None:
    rng = random.Random(12)
    while not stop.wait(KILL_INTERVAL):
        pids = list(ex._processes)
        if pids:
            pid = rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.append(pid)


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_children_killed_every_50ms_lose_no_task_and_the_pool_heals(
    start_method: str, tmp_path: Path
) -> None:
    ctx = multiprocessing.get_context(start_method)
    _warm_up(ctx)
    gc.collect()
    base_fds = rh.fd_count()
    base_threads = threading.active_count()
    base_processes = rh.descendants(os.getpid())

    ex = AsyncProcessExecutor(MAX_WORKERS, mp_context=ctx, child_concurrency=CHILD_CONCURRENCY)
    seen_pids: set[int] = set()
    killed: list[int] = []
    try:
        # Every child ready once: a child killed before any was ready would break the
        # executor by design (it then looks like a main module without its guard).
        warm = [ex.submit(rh.getpid) for _ in range(MAX_WORKERS * 3)]
        seen_pids |= {f.result(timeout=rh.TIMEOUT) for f in warm}

        stop_killing = threading.Event()
        stop_submitting = threading.Event()
        outcomes: list[list[Outcome]] = [[] for _ in range(THREAD_SUBMITTERS + 1)]
        threads = [
            threading.Thread(
                target=_thread_submitter, args=(ex, seed, stop_submitting, outcomes[seed])
            )
            for seed in range(THREAD_SUBMITTERS)
        ]
        threads.append(
            threading.Thread(target=_loop_submitter, args=(ex, stop_submitting, outcomes[-1]))
        )
        killer = threading.Thread(target=_killer, args=(ex, stop_killing, killed))
        for thread in [*threads, killer]:
            thread.start()
        stop_killing.wait(KILLING_FOR)  # a duration, not a condition
        stop_killing.set()
        killer.join(rh.TIMEOUT)
        stop_submitting.set()
        for thread in threads:
            thread.join(2 * rh.TIMEOUT)
        assert not any(t.is_alive() for t in [*threads, killer]), "a submitter never finished"
        seen_pids |= set(killed)

        everything = [o for per_thread in outcomes for o in per_thread]
        wrong = [
            (expected, got)
            for expected, got in everything
            if got != expected and type(got) is not BrokenWorkerError
        ]
        broken = sum(type(got) is BrokenWorkerError for _, got in everything)
        assert not wrong, (
            f"{len(wrong)} of {len(everything)} tasks ended with neither their result nor "
            f"BrokenWorkerError, e.g. {wrong[:5]}"
        )
        assert len(killed) >= 10, f"only {len(killed)} kills"
        assert broken < len(everything), "no task succeeded"

        # Healed: max_workers live children (a child runs one plain function at a time) ...
        barrier = str(tmp_path / "plain-barrier")
        pids = [
            ex.submit(rh.wait_until_all_running, barrier, MAX_WORKERS) for _ in range(MAX_WORKERS)
        ]
        live = {f.result(timeout=rh.TIMEOUT + 10) for f in pids}  # the barrier times out first
        assert len(live) == MAX_WORKERS
        assert not any(map(rh.process_gone, live))
        seen_pids |= live
        # ... and every slot of every child usable at once.
        barrier = str(tmp_path / "async-barrier")
        slots = MAX_WORKERS * CHILD_CONCURRENCY
        futures = [ex.submit(rh.async_wait_until_all_running, barrier, slots) for _ in range(slots)]
        seen_pids |= {f.result(timeout=rh.TIMEOUT + 10) for f in futures}
        seen_pids |= set(ex._processes)
    finally:
        closed = rh.close_bounded(ex)
    assert closed, "shutdown(wait=True) did not return"
    del ex
    print(
        f"{len(everything)} tasks, {broken} BrokenWorkerError, {len(killed)} kills, "
        f"{len(seen_pids)} children seen"
    )

    assert rh.wait_until_gone(seen_pids) == set(), "children left after shutdown"
    assert rh.wait_until(lambda: not rh.descendants(os.getpid()) - base_processes), (
        rh.descendants(os.getpid()) - base_processes
    )

    def back_to_baseline() -> bool:
        gc.collect()
        return rh.fd_count() <= base_fds and threading.active_count() <= base_threads

    assert rh.wait_until(back_to_baseline, 5), (
        f"fds {base_fds} -> {rh.fd_count()}, "
        f"threads {base_threads} -> {threading.active_count()}: {threading.enumerate()}"
    )
