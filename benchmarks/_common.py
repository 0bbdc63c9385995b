"""Sizes of the workloads (full and ``--quick``) and small helpers shared by the workloads.

A workload function has the signature ``async def wl(engine, p: Params, repeats) -> Result``
and returns the median over ``repeats`` as ``value`` plus every sample and extras.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from benchmarks.engines import Engine

Result = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Params:
    """Every size a workload uses; ``FULL`` follows the issue, ``QUICK`` is a smoke test."""

    latency_calls: int = 2_000  # sequential awaited round trips per repeat
    throughput_n: int = 20_000  # trivial tasks gathered / mapped per repeat
    map_chunksize: int = 100  # chunksize for Executor.map (aiomultiprocess has none)
    sleep_n: int = 2_000  # sleeping tasks gathered
    sleep_s: float = 0.05
    payload_bytes: int = 4 * 1024 * 1024  # argument size; the result is the same size
    payload_trips: int = 20  # sequential round trips per repeat
    # payload64m, payload256m, payload1g: these sizes (MiB); each sample moves at least
    # big_payload_min_bytes per direction (so 4, 1 and 1 round trips)
    big_payload_mib: tuple[int, ...] = (64, 256, 1024)
    big_payload_min_bytes: int = 256 * 1024 * 1024
    cpu_tasks: int = 40  # the 40 CPU-bound tasks of 50 ms over 2 children
    cpu_task_s: float = 0.05  # the spin loop is calibrated to this serial time per task
    http_tasks: int = 4_000  # ``http``: tasks per repeat, one GET each
    http_batched_tasks: int = 400  # ``http10``: tasks per repeat, ``http_gets`` GETs each
    http_gets: int = 10
    startup_repeats_min: int = 3
    rss_n: int = 10_000_000  # aioexec: map(fn, range(rss_n), buffersize=rss_buffersize)
    rss_buffersize: int = 1_000
    rss_chunksize: int = 100  # 10M single-item tasks would take ~12 min; memory is the point
    rss_peer_n: int = 200_000  # peers: their map over range(rss_peer_n), no buffersize
    cancel_trials: int = 5  # cancellations per repeat (median of all)
    kill_task_s: float = 10.0  # how long the task running on the killed worker would sleep
    # scale1 ... scale128: pools of these sizes (gathered throughput, sequential latency)
    scale_workers: tuple[int, ...] = (1, 2, 8, 32, 128)
    scale_throughput_n: int = 20_000
    scale_latency_calls: int = 2_000
    pool_workers: int = 128  # pool128: start-up and shutdown of a pool this large
    warm_hold_s: float = 0.01  # a large pool is warmed with tasks that hold a worker this long


FULL = Params()
QUICK = Params(
    latency_calls=200,
    throughput_n=2_000,
    sleep_n=100,
    payload_trips=3,
    big_payload_mib=(8, 16, 32),
    big_payload_min_bytes=32 * 1024 * 1024,
    cpu_tasks=8,
    cpu_task_s=0.02,
    http_tasks=100,
    http_batched_tasks=20,
    http_gets=5,
    startup_repeats_min=1,
    rss_n=20_000,
    rss_peer_n=20_000,
    cancel_trials=2,
    kill_task_s=5.0,
    scale_workers=(1, 2, 4, 8, 16),
    scale_throughput_n=2_000,
    scale_latency_calls=200,
    pool_workers=16,
)


def median_result(samples: list[float], **extra: Any) -> Result:
    """Package the median of ``samples`` with the samples themselves."""
    return {"value": statistics.median(samples), "samples": samples, "extra": extra}


async def timed(awaitable: Awaitable[Any]) -> float:
    """Seconds that ``awaitable`` took."""
    t0 = time.perf_counter()
    await awaitable
    return time.perf_counter() - t0


@contextlib.asynccontextmanager
async def running(engine: Engine, warm: bool = True, hold_s: float = 0.0) -> AsyncIterator[Engine]:
    """Start the engine (and wait until every worker answered, see ``Engine.warm``); close
    it afterwards."""
    await engine.start()
    try:
        if warm:
            await engine.warm(hold_s)
        yield engine
    finally:
        await engine.close()


async def repeat(repeats: int, once: Callable[[], Awaitable[float]]) -> list[float]:
    """Run ``once`` ``repeats`` times and collect its measurements."""
    return [await once() for _ in range(max(1, repeats))]
