"""The workloads, and :data:`WORKLOADS`, the registry that names them.

Each workload runs in its own subprocess (see ``_worker.py``) against one engine, starts the
pool itself (warm, unless start-up is what it measures), repeats the measurement and returns
the median. Units and directions (higher or lower is better) live in ``report.py``.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from benchmarks import _cpuacct, floors, tasks, workloads_big, workloads_more
from benchmarks._common import Params, Result, median_result, repeat, running, timed
from benchmarks.engines import Engine, NotSupported


async def latency(engine: Engine, p: Params, repeats: int) -> Result:
    """Mean round trip of a trivial task, awaited one after another, in microseconds."""
    noop = engine.fn("noop")
    async with running(engine):

        async def once() -> float:
            t0 = time.perf_counter()
            for i in range(p.latency_calls):
                await engine.call(noop, i)
            return (time.perf_counter() - t0) / p.latency_calls * 1e6

        samples, cpu = await _cpuacct.repeat_per_task(repeats, once, p.latency_calls)
        return median_result(
            samples, calls=p.latency_calls, cpu_us=_cpuacct.median_per_task(cpu), cpu_log=cpu
        )


async def throughput(engine: Engine, p: Params, repeats: int) -> Result:
    """``throughput_n`` trivial tasks gathered through the single-call path, tasks/s."""
    noop = engine.fn("noop")
    async with running(engine):

        async def once() -> float:
            elapsed = await timed(
                asyncio.gather(*(engine.call(noop, i) for i in range(p.throughput_n)))
            )
            return p.throughput_n / elapsed

        samples, cpu = await _cpuacct.repeat_per_task(repeats, once, p.throughput_n)
        return median_result(
            samples, n=p.throughput_n, cpu_us=_cpuacct.median_per_task(cpu), cpu_log=cpu
        )


async def throughput_map(engine: Engine, p: Params, repeats: int) -> Result:
    """``throughput_n`` trivial tasks through the engine's own map (chunksize where it has one)."""
    noop = engine.fn("noop")
    async with running(engine):

        async def once() -> float:
            elapsed = await timed(engine.bulk_map(noop, range(p.throughput_n), p.map_chunksize))
            return p.throughput_n / elapsed

        chunks = p.map_chunksize if engine.name != "aiomultiprocess" else None
        samples, cpu = await _cpuacct.repeat_per_task(repeats, once, p.throughput_n)
        return median_result(
            samples,
            n=p.throughput_n,
            chunksize=chunks,
            cpu_us=_cpuacct.median_per_task(cpu),
            cpu_log=cpu,
        )


async def throughput_amap(engine: Engine, p: Params, repeats: int) -> Result:
    """``throughput_n`` trivial tasks through ``async for r in ex.amap(...)``, tasks/s."""
    noop = engine.fn("noop")
    async with running(engine):

        async def once() -> float:
            elapsed = await timed(engine.amap(noop, range(p.throughput_n), p.map_chunksize))
            return p.throughput_n / elapsed

        samples, cpu = await _cpuacct.repeat_per_task(repeats, once, p.throughput_n)
        return median_result(
            samples,
            n=p.throughput_n,
            chunksize=p.map_chunksize,
            cpu_us=_cpuacct.median_per_task(cpu),
            cpu_log=cpu,
        )


async def sleep(engine: Engine, p: Params, repeats: int) -> Result:
    """``sleep_n`` tasks of a 50 ms sleep gathered; wall seconds and the engine's ideal."""
    fn = engine.fn("sleep")
    ideal = p.sleep_n / (engine.workers * engine.slots) * p.sleep_s
    async with running(engine):

        async def once() -> float:
            return await timed(
                asyncio.gather(*(engine.call(fn, p.sleep_s) for _ in range(p.sleep_n)))
            )

        samples = await repeat(repeats, once)
    return median_result(
        samples,
        ideal=ideal,
        n=p.sleep_n,
        slots=engine.slots,
        kind="coroutine" if engine.runs_coroutines else "time.sleep",
    )


async def payload(engine: Engine, p: Params, repeats: int) -> Result:
    """4 MiB bytes argument echoed back, sequential round trips; MB/s (10^6 B) both ways."""
    echo = engine.fn("echo")
    data = os.urandom(p.payload_bytes)
    async with running(engine):
        await engine.call(echo, data)

        async def once() -> float:
            t0 = time.perf_counter()
            for _ in range(p.payload_trips):
                out = await engine.call(echo, data)
                if len(out) != len(data):
                    raise RuntimeError("payload came back truncated")
            return 2 * p.payload_bytes * p.payload_trips / (time.perf_counter() - t0) / 1e6

        samples, cpu = await _cpuacct.repeat_per_task(repeats, once, p.payload_trips)
        return median_result(
            samples,
            trips=p.payload_trips,
            bytes=p.payload_bytes,
            cpu_us=_cpuacct.median_per_task(cpu),
            cpu_log=cpu,
        )


def calibrate_spin(seconds: float) -> int:
    """Iterations of :func:`tasks.spin` that take about ``seconds`` in this process."""
    n = 100_000
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        tasks.spin(n)
        best = min(best, time.perf_counter() - t0)
    return max(1000, int(n * seconds / best))


async def cpu(engine: Engine, p: Params, repeats: int) -> Result:
    """Speed-up of ``cpu_tasks`` pure-Python loops over running them serially in-process.

    aioexec and aiomultiprocess run them as coroutines that never await, ProcessPoolExecutor
    and loky as plain functions (``cpu_plain``: aioexec with plain functions).

    The serial reference is timed right before each parallel run. On a shared machine other
    processes can take a core during either; a sample during which they used more than
    ``_cpuacct.OTHERS_MAX`` of the machine measures them, not the pool, so it is set aside
    and another is taken (up to ``4 x repeats``). The value is the median of the clean ones.

    Each task reports its process and when it ran (``tasks.spin_report``), so every sample
    records how many tasks each child ran, when each child finished, and how long it was busy:
    the distribution of the work over the children, which the speed-up alone hides."""
    return await _cpu(engine, p, repeats, engine.fn("spin_report"))


async def cpu_plain(engine: Engine, p: Params, repeats: int) -> Result:
    """:func:`cpu` with plain functions (``def``), for aioexec: the same work as
    ProcessPoolExecutor's and loky's in ``cpu``."""
    return await _cpu(engine, p, repeats, tasks.spin_report)


async def _cpu(engine: Engine, p: Params, repeats: int, fn: Callable[..., Any]) -> Result:
    n = calibrate_spin(p.cpu_task_s)
    async with running(engine):

        async def once() -> dict[str, Any]:
            a = _cpuacct.snapshot()
            t0 = time.perf_counter()
            for _ in range(p.cpu_tasks):
                tasks.spin(n)
            serial = time.perf_counter() - t0
            b = _cpuacct.snapshot()
            t1 = time.perf_counter()
            reports = await asyncio.gather(*(engine.call(fn, n) for _ in range(p.cpu_tasks)))
            parallel = time.perf_counter() - t1
            others = (_cpuacct.others_ms(a, b), _cpuacct.others_ms(b, _cpuacct.snapshot()))
            clean = _cpuacct.is_clean(others[0], serial) and _cpuacct.is_clean(others[1], parallel)
            return {
                "speedup": serial / parallel,
                "serial_s": serial,
                "parallel_s": parallel,
                "others_ms": others,
                "clean": clean,
                "children": _distribution(reports, t1),
            }

        log = await _cpuacct.sample_until_clean(once, repeats)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result = _cpuacct.clean_median(
        log, "speedup", iterations=n, tasks=p.cpu_tasks, ideal=min(engine.workers, cores or 1)
    )
    result["extra"]["kind"] = "coroutine" if asyncio.iscoroutinefunction(fn) else "plain"
    return result


def _distribution(reports: list[tuple[int, float, float]], t0: float) -> list[dict[str, Any]]:
    """Per child (busiest first): tasks run, ms busy, and ms after ``t0`` of its first start
    and last end."""
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for pid, start, end in reports:
        by_pid.setdefault(pid, []).append((start, end))
    out = [
        {
            "tasks": len(spans),
            "busy_ms": round(sum(e - s for s, e in spans) * 1e3, 1),
            "first_start_ms": round((min(s for s, _ in spans) - t0) * 1e3, 1),
            "last_end_ms": round((max(e for _, e in spans) - t0) * 1e3, 1),
        }
        for spans in by_pid.values()
    ]
    return sorted(out, key=lambda c: -c["tasks"])


async def startup(engine: Engine, p: Params, repeats: int) -> Result:
    """Seconds from creating the pool to the first result of a trivial task (cold pool).

    As in ``cpu``, a sample during which other processes used more than
    ``_cpuacct.OTHERS_MAX`` of the machine is set aside and taken again."""
    noop = engine.fn("noop")

    async def once() -> dict[str, Any]:
        a = _cpuacct.snapshot()
        t0 = time.perf_counter()
        await engine.start()
        try:
            await engine.call(noop, 0)
            elapsed = time.perf_counter() - t0
            # before close(): the pool's processes must be alive to count as this benchmark's
            others = _cpuacct.others_ms(a, _cpuacct.snapshot())
        finally:
            await engine.close()
        return {"s": elapsed, "others_ms": others, "clean": _cpuacct.is_clean(others, elapsed)}

    log = await _cpuacct.sample_until_clean(once, max(repeats, p.startup_repeats_min))
    return _cpuacct.clean_median(log, "s")


@dataclass(frozen=True)
class Workload:
    """A registry entry: the function and the subprocess timeout (full run, seconds)."""

    fn: Callable[[Engine, Params, int], Coroutine[Any, Any, Result]]
    timeout: float
    engines: tuple[str, ...] | None = None  # None: every engine
    why_not: str = ""
    # Measured in the same run, in a cell of its own (engine "floor"); rows of other
    # workloads may compare themselves to it too (report.Row.floor).
    floor: floors.FloorFn | None = None


def _pipe_floor(size: Callable[[Params], int]) -> floors.FloorFn:
    async def floor(p: Params, repeats: int, start_method: str) -> Result:
        nbytes = size(p)
        return await floors.pipe(nbytes, floors.payload_trips(p, nbytes), repeats, start_method)

    return floor


def _big(index: int) -> Workload:
    return Workload(
        workloads_big.big_payload(index),
        (300, 600, 1200)[index],
        floor=_pipe_floor(lambda p: p.big_payload_mib[index] << 20),
    )


def _scale(index: int) -> Workload:
    return Workload(workloads_big.scaled(index), (300, 300, 400, 600, 900)[index])


WORKLOADS: dict[str, Workload] = {
    "latency": Workload(latency, 300, floor=floors.pingpong),
    "throughput": Workload(throughput, 600, floor=floors.loop_alone),
    "map": Workload(throughput_map, 600),
    "amap": Workload(throughput_amap, 600, ("aioexec",), "no async map in this engine"),
    "sleep": Workload(sleep, 400),
    "payload": Workload(payload, 180, floor=_pipe_floor(lambda p: p.payload_bytes)),
    "payload64m": _big(0),
    "payload256m": _big(1),
    "payload1g": _big(2),
    "cpu": Workload(cpu, 300),
    "cpu_plain": Workload(
        cpu_plain, 300, ("aioexec",), "the cpu row already runs plain functions here"
    ),
    "http": Workload(workloads_more.http, 600),
    "http10": Workload(workloads_more.http_batched, 600),
    "startup": Workload(startup, 180),
    "rss": Workload(workloads_more.rss, 1800),
    "cancel": Workload(workloads_more.cancel, 180),
    "recovery": Workload(workloads_more.recovery, 300),
    "scale1": _scale(0),
    "scale2": _scale(1),
    "scale8": _scale(2),
    "scale32": _scale(3),
    "scale128": _scale(4),
    "pool128": Workload(workloads_big.pool_start_stop, 900),
}


async def run_workload(name: str, engine: Engine, p: Params, repeats: int) -> Result:
    """Run workload ``name`` against ``engine`` (raises NotSupported for n/a)."""
    wl = WORKLOADS[name]
    if wl.engines is not None and engine.name not in wl.engines:
        raise NotSupported(wl.why_not)
    return await wl.fn(engine, p, repeats)


async def run_floor(name: str, p: Params, repeats: int, start_method: str) -> Result:
    """Measure workload ``name``'s floor (see ``floors``)."""
    floor = WORKLOADS[name].floor
    if floor is None:
        raise NotSupported(f"{name} has no floor of its own")
    return await floor(p, repeats, start_method)
