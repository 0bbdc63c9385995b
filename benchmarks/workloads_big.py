"""Workloads of issue 16: large payloads, pools from 1 to 128 workers, a 128-worker pool's
start-up and shutdown.

- ``payload64m``, ``payload256m``, ``payload1g``: a ``bytes`` argument of that size echoed
  back, with the peak resident memory (``VmHWM``) of the parent and of the busiest child.
- ``scale1`` ... ``scale128``: the gathered ``throughput`` and the sequential ``latency``
  workloads on a pool of that many workers (on a 2-core machine), with the CPU per task of
  the parent and of the children.
- ``pool128``: from creating a 128-worker pool until every worker has answered a task, and
  its shutdown.

The sizes come from ``Params`` (``--quick`` uses smaller ones; the table's labels follow).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

from benchmarks import _cpuacct, floors
from benchmarks._common import Params, Result, median_result, running
from benchmarks.engines import Engine


def payload_data(nbytes: int) -> bytes:
    """``nbytes`` of incompressible bytes, made quickly (1 MiB of randomness repeated)."""
    return os.urandom(1 << 20) * (nbytes >> 20) + os.urandom(nbytes & ((1 << 20) - 1))


def big_payload(index: int) -> Any:
    """The workload for the ``index``-th size of ``Params.big_payload_mib``."""

    async def workload(engine: Engine, p: Params, repeats: int) -> Result:
        return await _big_payload(engine, p, repeats, p.big_payload_mib[index] << 20)

    workload.__doc__ = f"Large payload number {index}: see :func:`_big_payload`."
    return workload


async def _big_payload(engine: Engine, p: Params, repeats: int, nbytes: int) -> Result:
    """A ``bytes`` argument of ``nbytes`` echoed back: MB/s (10^6 B, both directions), the
    first (cold) round trip's seconds, and the peak RSS of this process (the pool's parent,
    which also holds the argument) and of the busiest child, from ``VmHWM``.

    One untimed round trip at full size comes first (its time is ``first_trip_s``); each
    sample then moves at least ``big_payload_min_bytes`` each way (``floors.payload_trips``)."""
    trips = floors.payload_trips(p, nbytes)
    echo = engine.fn("echo")
    data = payload_data(nbytes)
    async with running(engine):
        t0 = time.perf_counter()
        out = await engine.call(echo, data)
        first = time.perf_counter() - t0
        _check_echo(out, data)
        del out

        async def once() -> float:
            t0 = time.perf_counter()
            for _ in range(trips):
                out = await engine.call(echo, data)
                if len(out) != nbytes:
                    raise RuntimeError("payload came back truncated")
                del out  # as a caller that handles the result and lets it go
            return 2 * nbytes * trips / (time.perf_counter() - t0) / 1e6

        samples, cpu = await _cpuacct.repeat_per_task(repeats, once, trips)
        children = [_cpuacct.peak_rss(pid) for pid in engine.pids]
        peaks = {
            "parent": _cpuacct.peak_rss(os.getpid()),
            "child": max((c for c in children if c is not None), default=None),
        }
    return median_result(
        samples,
        bytes=nbytes,
        payload_mib=nbytes / 2**20,
        trips=trips,
        first_trip_s=round(first, 3),
        cpu_us=_cpuacct.median_per_task(cpu),
        cpu_log=cpu,
        children_peak_mib=[round(c / 2**20, 1) for c in children if c is not None],
        **floors._peak_extras(peaks, nbytes),
    )


def _check_echo(out: Any, data: bytes) -> None:
    if len(out) != len(data) or out[:4096] != data[:4096] or out[-4096:] != data[-4096:]:
        raise RuntimeError("the payload came back different")


def scaled(index: int) -> Any:
    """The workload for the ``index``-th pool size of ``Params.scale_workers``."""

    async def workload(engine: Engine, p: Params, repeats: int) -> Result:
        return await _scaled(engine, p, repeats, p.scale_workers[index])

    workload.__doc__ = f"Pool size number {index}: see :func:`_scaled`."
    return workload


async def _scaled(engine: Engine, p: Params, repeats: int, workers: int) -> Result:
    """On a pool of ``workers`` workers: ``scale_throughput_n`` trivial tasks gathered
    (tasks/s, the value) and ``scale_latency_calls`` awaited one after another (µs), each
    with the CPU per task of the parent and of the children."""
    engine.workers = workers
    noop = engine.fn("noop")
    n, calls = p.scale_throughput_n, p.scale_latency_calls
    async with running(engine, hold_s=p.warm_hold_s if workers > 2 else 0.0):
        if len(engine.pids) < workers:
            raise RuntimeError(f"only {len(engine.pids)} of {workers} workers answered")

        async def gathered() -> float:
            t0 = time.perf_counter()
            await asyncio.gather(*(engine.call(noop, i) for i in range(n)))
            return n / (time.perf_counter() - t0)

        async def sequential() -> float:
            t0 = time.perf_counter()
            for i in range(calls):
                await engine.call(noop, i)
            return (time.perf_counter() - t0) / calls * 1e6

        rates, rate_cpu = await _cpuacct.repeat_per_task(repeats, gathered, n)
        latencies, latency_cpu = await _cpuacct.repeat_per_task(repeats, sequential, calls)
    return median_result(
        rates,
        workers=workers,
        n=n,
        cpu_us=_cpuacct.median_per_task(rate_cpu),
        cpu_log=rate_cpu,
        latency_us=statistics.median(latencies),
        latency_samples=latencies,
        latency_calls=calls,
        latency_cpu_us=_cpuacct.median_per_task(latency_cpu),
        latency_cpu_log=latency_cpu,
    )


async def pool_start_stop(engine: Engine, p: Params, repeats: int) -> Result:
    """Seconds from creating a ``pool_workers`` pool until every worker has answered a task
    (batches of tasks that hold a worker ``warm_hold_s``, as ``Engine.warm``), the value;
    and seconds for its shutdown (``shutdown(wait=True)``; aiomultiprocess: ``terminate``
    and ``join``, its only way). The CPU the parent and the children used to start is
    recorded too (ms, whole pool)."""
    workers = engine.workers = p.pool_workers
    ups: list[float] = []
    downs: list[float] = []
    cpu: list[dict[str, float]] = []
    for _ in range(max(1, repeats)):
        a = _cpuacct.usage()
        t0 = time.perf_counter()
        await engine.start()
        try:
            pids = await engine.warm(hold_s=p.warm_hold_s)
            up = time.perf_counter() - t0
            cpu.append(_cpuacct.per_task(a, _cpuacct.usage(), 1))
            if len(pids) < workers:
                raise RuntimeError(f"only {len(pids)} of {workers} workers answered")
        finally:
            t1 = time.perf_counter()
            await engine.close()
            down = time.perf_counter() - t1
        ups.append(up)
        downs.append(down)
    cpu_ms = {k: round(v / 1e3, 1) for k, v in _cpuacct.median_per_task(cpu).items()}
    return median_result(
        ups,
        workers=workers,
        shutdown_s=statistics.median(downs),
        shutdown_samples=downs,
        startup_cpu_ms=cpu_ms,
        startup_cpu_log=cpu,
    )
