"""What ``loop.run_in_executor`` costs with no worker process at all: the floor under the
``latency`` and ``throughput`` workloads on this machine.

``python -m benchmarks.floor`` drives two do-nothing executors exactly as those workloads
drive the real ones (``FULL`` sizes, median of 3) and prints their numbers:

- ``inline``: ``submit`` completes the ``concurrent.futures.Future`` before returning, so
  only asyncio's bridge (``wrap_future``, one ``call_soon_threadsafe`` per result), the
  ``Future`` itself and ``gather`` are left;
- ``thread``: one helper thread completes the futures, as any pool's result thread must,
  so one cross-thread wake-up per round trip is added.

An executor with worker processes adds pickling, two pipe wake-ups and the worker's own
loop on top of these; the README compares them with the targets.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from benchmarks._common import FULL
from benchmarks.tasks import noop


class InlineExecutor(ThreadPoolExecutor):
    """Completes every future inside ``submit``."""

    def __init__(self) -> None:  # no threads
        pass

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        future.set_result(fn(*args, **kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


class OneThreadExecutor(ThreadPoolExecutor):
    """One thread runs the calls and completes the futures, in submission order."""

    def __init__(self) -> None:
        self._queue: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self._ready = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.append((future, fn, args))
        self._ready.set()
        return future

    def _serve(self) -> None:
        while not self._stop:
            self._ready.wait()
            self._ready.clear()
            while self._queue:
                future, fn, args = self._queue.popleft()
                future.set_running_or_notify_cancel()
                future.set_result(fn(*args))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._stop = True
        self._ready.set()
        self._thread.join()


async def measure(executor: ThreadPoolExecutor) -> tuple[float, float]:
    """(latency µs, throughput tasks/s), each the median of 3 as in the workloads."""
    loop = asyncio.get_running_loop()
    latencies, rates = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(FULL.latency_calls):
            await loop.run_in_executor(executor, noop, i)
        latencies.append((time.perf_counter() - t0) / FULL.latency_calls * 1e6)
        t0 = time.perf_counter()
        n = FULL.throughput_n
        await asyncio.gather(*(loop.run_in_executor(executor, noop, i) for i in range(n)))
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(latencies), statistics.median(rates)


async def main() -> None:
    for name, executor in (("inline", InlineExecutor()), ("thread", OneThreadExecutor())):
        latency, rate = await measure(executor)
        executor.shutdown()
        print(f"{name:<7} latency {latency:8.1f} µs   throughput {rate:9.0f} tasks/s")


if __name__ == "__main__":
    asyncio.run(main())
