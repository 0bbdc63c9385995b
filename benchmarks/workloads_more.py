"""Workloads that need more than a pool: a loopback HTTP server, memory, cancel, crashes.

- ``http``: GETs against a loopback aiohttp server in its own process (bounded request count).
- ``rss``: peak resident memory of the benchmark process while a long ``map`` is consumed.
- ``cancel``: from ``cancel()`` on a running coroutine to the child's ``except CancelledError``,
  timed with CLOCK_MONOTONIC markers sent over a Unix datagram socket.
- ``recovery``: from SIGKILL of a busy worker to the next task that completes, and to full
  capacity again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import resource
import signal
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from benchmarks import _cpuacct
from benchmarks._common import Params, Result, median_result, running, timed
from benchmarks.engines import Engine, NotSupported
from benchmarks.httpserver import ServerProcess


async def http(engine: Engine, p: Params, repeats: int) -> Result:
    """``http_tasks`` tasks of one GET each, gathered; requests per second. Each request is a
    call through the engine, so this measures how the engine carries I/O-bound calls."""
    return await _http(engine, repeats, p.http_tasks, 1)


async def http_batched(engine: Engine, p: Params, repeats: int) -> Result:
    """``http_batched_tasks`` tasks of ``http_gets`` GETs each: the engine's share of the
    work shrinks, and on a small machine the server and the HTTP clients in the workers
    decide the rate (every sample records who used the CPU)."""
    return await _http(engine, repeats, p.http_batched_tasks, p.http_gets)


async def _http(engine: Engine, repeats: int, tasks: int, gets: int) -> Result:
    """``tasks`` tasks of ``gets`` GETs each, gathered; requests per second.

    Each sample records the CPU (ms) that the server, the benchmark process, the pool's
    workers and processes outside the benchmark used meanwhile: on a small machine the server
    and the clients share the cores, so whatever else runs there slows every engine. A sample
    during which the others took more than ``_cpuacct.OTHERS_MAX`` of the machine is set aside and
    taken again (up to ``4 x repeats``); the value is the median of the clean ones."""
    fn = engine.fn("http_get")
    per_repeat = tasks * gets
    warm_tasks = engine.workers * engine.slots * 2
    server = ServerProcess(max_requests=per_repeat * 4 * max(1, repeats) + warm_tasks + 1000)
    try:
        async with running(engine):
            # open each worker's session/connection before timing
            await asyncio.gather(*(engine.call(fn, server.url, 1) for _ in range(warm_tasks)))

            async def once() -> dict[str, Any]:
                a = _cpuacct.snapshot()
                elapsed = await timed(
                    asyncio.gather(*(engine.call(fn, server.url, gets) for _ in range(tasks)))
                )
                cpu = _cpuacct.by_role(a, _cpuacct.snapshot(), server.proc.pid, elapsed)
                clean = _cpuacct.is_clean(cpu.get("others"), elapsed)
                return {"req_s": per_repeat / elapsed, "clean": clean, "cpu_ms": cpu}

            log = await _cpuacct.sample_until_clean(once, repeats)
    finally:
        server.stop()
    client = "aiohttp.ClientSession per child" if engine.runs_coroutines else "http.client"
    return _cpuacct.clean_median(
        log, "req_s", requests=per_repeat, gets_per_task=gets, client=client
    )


def _rss_mb() -> float:
    """Current resident set size of this process, MB (10^6 B)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


async def rss(engine: Engine, p: Params, repeats: int) -> Result:
    """Peak RSS (MB) of this process, the pool's parent, while a long map is consumed.

    aioexec: ``map(fn, range(rss_n), buffersize=...)``. Peers have no buffersize (before
    3.14), so they map a smaller ``range(rss_peer_n)`` instead; the table says so.
    """
    noop = engine.fn("noop")
    async with running(engine):
        base = _rss_mb()
        try:
            t0 = time.perf_counter()
            count = await engine.buffered_map_count(
                noop, p.rss_n, p.rss_buffersize, p.rss_chunksize
            )
            n, how = p.rss_n, f"map(buffersize={p.rss_buffersize}, chunksize={p.rss_chunksize})"
        except NotSupported:
            t0 = time.perf_counter()
            count = len(await engine.bulk_map(noop, range(p.rss_peer_n), p.rss_chunksize))
            n, how = p.rss_peer_n, "map without buffersize"
        elapsed = time.perf_counter() - t0
    if count != n:
        raise RuntimeError(f"map yielded {count} results for {n} inputs")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB on Linux
    return median_result(
        [peak],
        n=n,
        method=how,
        baseline_mb=round(base, 1),
        seconds=round(elapsed, 2),
        tasks_per_s=round(n / elapsed),
    )


@contextlib.contextmanager
def marker_socket() -> Iterator[tuple[str, socket.socket]]:
    """A bound Unix datagram socket in a private temporary folder: (path, socket)."""
    with tempfile.TemporaryDirectory(prefix="aioexec-bench-") as tmp:
        path = os.path.join(tmp, "marker.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        try:
            yield path, sock
        finally:
            sock.close()


async def _marker(sock: socket.socket, timeout: float) -> tuple[str, float, int]:
    """Wait for one ``tag perf_counter pid`` datagram: (tag, timestamp, pid)."""
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(sock, 256), timeout)
    tag, stamp, pid = data.decode().split()
    return tag, float(stamp), int(pid)


async def cancel(engine: Engine, p: Params, repeats: int) -> Result:
    """Milliseconds from ``cancel()`` on a running coroutine to its ``except CancelledError``."""
    fn = engine.fn("cancellable")
    samples: list[float] = []
    with marker_socket() as (path, sock):
        async with running(engine):
            for _ in range(max(1, repeats) * p.cancel_trials):
                do_cancel = engine.submit_cancellable(fn, path, 5.0)
                await _marker(sock, 30.0)  # "started": the coroutine is running
                t0 = time.perf_counter()
                if not do_cancel():
                    raise NotSupported("cancel() returned False for a running call")
                try:
                    tag, stamp, _ = await _marker(sock, 3.0)
                except asyncio.TimeoutError:
                    raise NotSupported(
                        "cancel() is local only: no CancelledError reached the child within 3 s"
                    ) from None
                if tag != "cancelled":
                    raise RuntimeError(f"unexpected marker {tag!r}")
                samples.append((stamp - t0) * 1e3)
    return median_result(samples, trials=len(samples))


async def _until_ok(engine: Engine, fn: Callable[[], Awaitable[bool]], deadline: float) -> bool:
    """Retry ``fn`` until it returns True; rebuild a pool that broke. Returns "rebuilt"."""
    rebuilt = False
    while True:
        try:
            if await asyncio.wait_for(fn(), max(0.1, deadline - time.perf_counter())):
                return rebuilt
        except concurrent.futures.BrokenExecutor:
            if engine.breaks_on_worker_death():
                rebuilt = True
                await engine.restart()
        if time.perf_counter() > deadline:
            raise RuntimeError("the pool did not recover within 60 s of the kill")


async def _kill_one(
    engine: Engine, p: Params, path: str, sock: socket.socket
) -> tuple[float, float, bool]:
    """Kill the worker running a task; return (first task ms, full capacity ms, rebuilt)."""
    fn, noop, getpid = engine.fn("announce_and_sleep"), engine.fn("noop"), engine.fn("getpid")
    victim = asyncio.ensure_future(engine.call(fn, path, p.kill_task_s))
    _, _, pid = await _marker(sock, 30.0)
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    deadline = t0 + 60.0
    seen: set[int] = set()

    async def one_task() -> bool:
        await engine.call(noop, 1)
        return True

    async def capacity() -> bool:
        batch = [engine.call(getpid) for _ in range(engine.workers * engine.slots)]
        seen.update(await asyncio.gather(*batch))
        seen.discard(pid)
        return len(seen) >= engine.workers

    rebuilt = await _until_ok(engine, one_task, deadline)
    first = (time.perf_counter() - t0) * 1e3
    rebuilt |= await _until_ok(engine, capacity, deadline)
    full = (time.perf_counter() - t0) * 1e3
    victim.cancel()
    with contextlib.suppress(BaseException):
        await victim
    return first, full, rebuilt


async def recovery(engine: Engine, p: Params, repeats: int) -> Result:
    """Milliseconds from SIGKILL of a busy worker until a newly submitted task completes.

    The killed worker is running a task (it announced its pid). Pools that break as a whole
    (ProcessPoolExecutor, loky) are rebuilt at the first BrokenProcessPool, as a user must:
    that time is part of their recovery. A first task can still slip through before such a
    pool notices the death, so ``full_ms`` also times the return to full capacity: tasks seen
    on ``workers`` distinct live processes (none of them the victim).
    """
    first: list[float] = []
    full: list[float] = []
    rebuilt = False
    with marker_socket() as (path, sock):
        for _ in range(max(1, repeats)):
            async with running(engine):
                a, b, r = await _kill_one(engine, p, path, sock)
            first.append(a)
            full.append(b)
            rebuilt |= r
    return median_result(
        first, full_ms=statistics.median(full), full_samples=full, pool_rebuilt=rebuilt
    )
