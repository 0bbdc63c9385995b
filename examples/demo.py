"""aioexec demo: coroutines spread over child processes, and what that buys.

Run it with ``python examples/demo.py`` (no network needed; about 12 seconds).

The workload is what a scraper or an API fan-out looks like: each job waits on I/O (simulated
by ``asyncio.sleep``) and then does some CPU work on what it received (pure-Python arithmetic,
then a hash). Three ways to run ``JOBS`` (100) such jobs, each printed with the call it makes:

* one event loop: the waits overlap, but the CPU work is serialised on one core;
* ProcessPoolExecutor: the CPU work spreads over the cores, but each worker runs one job at a
  time, so the waits add up;
* AsyncProcessExecutor: each child runs many jobs concurrently on its own event loop, so the
  waits overlap *and* the CPU work spreads over the cores.

Then it shows what else the executor does: the remote traceback of a failed job, and the
cancellation of a running coroutine inside its child.

All three use the ``spawn`` start method (the children import this module afresh), so that
neither pool gets a head start from ``fork``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import multiprocessing
import os
import tempfile
import time
from collections import Counter

from aioexec import AsyncProcessExecutor

JOBS = 100
WAIT = 0.1  # seconds of simulated I/O per job
CPU_LOOPS = 200_000  # pure-Python work per job (about 10-20 ms)
WORKERS = min(4, os.cpu_count() or 1)


def crunch(seed: int) -> str:
    """The CPU part of a job: pure Python, so it holds the GIL like real parsing code."""
    acc = seed
    for i in range(CPU_LOOPS):
        acc = (acc * 31 + i) % 1_000_003
    return hashlib.sha256(str(acc).encode()).hexdigest()[:8]


async def job(seed: int) -> tuple[int, str]:
    """An I/O wait, then CPU work: runs as a coroutine."""
    await asyncio.sleep(WAIT)
    return os.getpid(), crunch(seed)


def sync_job(seed: int) -> tuple[int, str]:
    """The same job for an executor that runs plain functions."""
    time.sleep(WAIT)
    return os.getpid(), crunch(seed)


async def failing_job() -> None:
    raise ValueError("the upstream answered 503")


async def long_job(started: str, cancelled: str) -> None:
    with open(started, "w") as f:
        f.write(str(os.getpid()))
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        with open(cancelled, "w") as f:
            f.write(f"cancelled in child {os.getpid()}")
        raise


async def one_loop() -> tuple[float, list[str]]:
    start = time.perf_counter()
    results = await asyncio.gather(*(job(i) for i in range(JOBS)))
    return time.perf_counter() - start, [digest for _, digest in results]


def process_pool(ctx: multiprocessing.context.BaseContext) -> tuple[float, list[str]]:
    with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=ctx) as pool:
        pool.submit(os.getpid).result()  # start-up is not part of the measurement
        start = time.perf_counter()
        results = list(pool.map(sync_job, range(JOBS)))
        return time.perf_counter() - start, [digest for _, digest in results]


async def aioexec_pool(
    ctx: multiprocessing.context.BaseContext,
) -> tuple[float, list[str], Counter[int]]:
    async with AsyncProcessExecutor(WORKERS, mp_context=ctx, child_concurrency=64) as ex:
        await asyncio.gather(*(ex.run(os.getpid) for _ in range(WORKERS)))  # start-up
        start = time.perf_counter()
        results = await asyncio.gather(*(ex.run(job, i) for i in range(JOBS)))
        elapsed = time.perf_counter() - start
        return elapsed, [digest for _, digest in results], Counter(pid for pid, _ in results)


async def errors_and_cancellation(ctx: multiprocessing.context.BaseContext) -> None:
    async with AsyncProcessExecutor(WORKERS, mp_context=ctx) as ex:
        print("\nA failed job keeps its exception type and the child's traceback:")
        try:
            await ex.run(failing_job)
        except ValueError as exc:
            print(f"  caught ValueError: {exc}")
            print("  remote traceback ends with:", str(exc.__cause__).strip().splitlines()[-2])

        print("\nCancelling a running coroutine cancels it inside its child:")
        with tempfile.TemporaryDirectory() as tmp:
            started = os.path.join(tmp, "started")
            cancelled = os.path.join(tmp, "cancelled")
            task = asyncio.ensure_future(ex.run(long_job, started, cancelled))
            await wait_for_file(started)  # the coroutine is running in its child
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            print(f"  the task awaiting ex.run(long_job) is cancelled: {task.cancelled()}")
            await wait_for_file(cancelled)
            with open(cancelled) as f:
                print(f"  the child's except-CancelledError block ran: {f.read()!r}")


async def wait_for_file(path: str) -> None:
    """Poll for a file the child writes, for at most 30 s (the demo's only cross-process sign)."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: {path} did not appear within 30 s")
        await asyncio.sleep(0.02)


def main() -> None:
    ctx = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    crunch(0)
    cpu_ms = (time.perf_counter() - start) * 1000
    print(
        f"{JOBS} jobs, each a {WAIT} s wait (asyncio.sleep, or time.sleep for the pool) "
        f"then about {cpu_ms:.0f} ms of CPU work; {WORKERS} workers, start method spawn\n"
    )
    print(f"  one event loop: asyncio.gather(*(job(i) for i in range({JOBS})))")
    loop_time, loop_digests = asyncio.run(one_loop())
    print(f"    {loop_time:6.2f} s   (waits overlap, CPU on one core)")
    print(f"  ProcessPoolExecutor({WORKERS}).map(sync_job, range({JOBS}))")
    pool_time, pool_digests = process_pool(ctx)
    print(f"    {pool_time:6.2f} s   (CPU spread, waits add up)")
    print(
        f"  AsyncProcessExecutor({WORKERS}, child_concurrency=64): "
        f"asyncio.gather(*(ex.run(job, i) for i in range({JOBS})))"
    )
    aio_time, aio_digests, per_child = asyncio.run(aioexec_pool(ctx))
    print(f"    {aio_time:6.2f} s   (both)")
    print(f"  jobs per child process: {sorted(per_child.values(), reverse=True)}")
    if not loop_digests == pool_digests == aio_digests:
        raise SystemExit("demo: the three ways computed different results")
    print(f"  all three computed the same {JOBS} results, in order")
    print(
        f"\nAsyncProcessExecutor ran {pool_time / aio_time:.1f}x as fast as "
        f"ProcessPoolExecutor and {loop_time / aio_time:.1f}x as fast as one event loop"
        f".\n(Load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: other "
        "processes on the machine slow all three.)"
    )
    asyncio.run(errors_and_cancellation(ctx))
    print("demo: OK")


if __name__ == "__main__":
    main()
