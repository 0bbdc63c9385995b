"""``AsyncRayExecutor`` against raw Ray async-actor calls, in one process, on the same Ray.

Run inside the loopback-only network namespace (Ray must not reach the network)::

    bash .ci/in-netns.sh python -m benchmarks.ray_vs_raw [--rounds 5]

Kept apart from ``python -m benchmarks`` (whose engines are local pools): this one needs Ray
(``pip install -e '.[ray]'``) and the namespace. One Ray, started here, serves every variant;
each round runs every variant once, in a rotating order, so that the load of the shared
machine hits them alike:

* ``raw``: ``await actor.echo.remote(x)`` on 2 async actors (``max_concurrency=16``);
* ``raw, 32 in flight``: the same, at most 2 x 16 calls sent and not answered at a time (an
  ``asyncio.Semaphore``): what the executor does by design, since its work waits in the
  driver until an actor has room (so that cancelling it is instant). Gathered calls then
  lose Ray's batching of many calls queued in the actors;
* ``engine``: ``await ex.run(echo, x)``, ``AsyncRayExecutor(2, child_concurrency=16)``;
* ``engine+loop_factory``: the same with ``loop_factory=asyncio.new_event_loop`` (the tasks
  run on a loop of the executor's own in each actor: two more thread hops per call).

Latency: sequential calls, the median per call. Throughput: calls gathered, calls per second.
Ratios are taken per round (the variant against raw Ray in the same round) and their median
is reported: latency ratio = variant ms / raw ms; throughput ratio = raw calls/s / variant
calls/s. Both: 1.0 is parity, above 1 the engine is slower (the target: within 1.2). The
last column compares throughput with ``raw, 32 in flight`` instead.
Prints a table and one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent

Call = Callable[[int], Awaitable[Any]]


def _prepare_environment() -> None:
    """Before Ray starts: its workers must import ``benchmarks.ray_tasks``; a short private
    RAY_TMPDIR (socket paths < 108 characters), removed at exit; no auth token, no stats."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ["PYTHONPATH"] = ":".join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    atexit.register(shutil.rmtree, tmp, True)
    os.environ["RAY_TMPDIR"] = tmp
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def latency(call: Call, n: int) -> float:
    """Median seconds per call, one call at a time."""
    times = []
    for i in range(n):
        start = time.perf_counter()
        await call(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def throughput(call: Call, n: int) -> float:
    """Calls per second with ``n`` calls gathered."""
    start = time.perf_counter()
    await asyncio.gather(*(call(i) for i in range(n)))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-calls", type=int, default=300)
    parser.add_argument("--gather-calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    _prepare_environment()
    import ray

    from aioexec.ray import AsyncRayExecutor
    from benchmarks import ray_tasks

    start = time.perf_counter()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    init_seconds = time.perf_counter() - start
    raw_class = ray.remote(max_concurrency=args.concurrency, num_cpus=0)(ray_tasks.RawActor)
    raw = [raw_class.remote() for _ in range(2)]
    ray.get([a.pid.remote() for a in raw])
    options = {"child_concurrency": args.concurrency, "actor_options": {"num_cpus": 0}}
    engines = {
        "engine": AsyncRayExecutor(2, **options),  # type: ignore[arg-type]
        "engine+loop_factory": AsyncRayExecutor(
            2,
            loop_factory=asyncio.new_event_loop,
            **options,  # type: ignore[arg-type]
        ),
    }
    for executor in engines.values():  # started and warm: every actor answered
        [f.result(120) for f in [executor.submit(ray_tasks.echo, i) for i in range(100)]]

    def raw_call(i: int) -> Awaitable[Any]:
        return raw[i % 2].echo.remote(i)  # type: ignore[no-any-return]

    bound: list[asyncio.Semaphore] = []  # made in the benchmark's loop

    async def raw_bounded_call(i: int) -> Any:
        if not bound:
            bound.append(asyncio.Semaphore(2 * args.concurrency))
        async with bound[0]:
            return await raw[i % 2].echo.remote(i)

    def engine_call(executor: AsyncRayExecutor) -> Call:
        def call(i: int) -> Awaitable[Any]:
            return executor.run(ray_tasks.echo, i)

        return call

    variants: dict[str, Call] = {"raw": raw_call, "raw, 32 in flight": raw_bounded_call}
    variants.update({name: engine_call(ex) for name, ex in engines.items()})
    lat: dict[str, list[float]] = {name: [] for name in variants}
    thr: dict[str, list[float]] = {name: [] for name in variants}

    async def run_all() -> None:
        names = list(variants)
        for name in names:  # warm-up of the asyncio paths
            await latency(variants[name], 50)
            await throughput(variants[name], 500)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                lat[name].append(await latency(variants[name], args.latency_calls))
            for name in order:
                thr[name].append(await throughput(variants[name], args.gather_calls))

    asyncio.run(run_all())

    pids = [ray.get(a.pid.remote()) for a in raw]
    pids += [w["pid"] for ex in engines.values() for w in ex._workers()]
    summary: dict[str, Any] = {
        "init_seconds": round(init_seconds, 2),
        "rounds": args.rounds,
        "load_average": os.getloadavg(),
        "driver_rss_mib": round(rss_mib(os.getpid()), 1),
        "actor_rss_mib": [round(rss_mib(p), 1) for p in pids],
    }
    for executor in engines.values():
        executor.shutdown()
    ray.shutdown()

    def ratio(mine: list[float], theirs: list[float]) -> float:
        return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))

    header = ("variant", "latency ms", "calls/s", "latency", "throughput", "vs bounded")
    print("{:<22}{:>11}{:>9}{:>9}{:>12}{:>12}".format(*header))
    for name in variants:
        lat_ratio = ratio(lat[name], lat["raw"])
        thr_ratio = ratio(thr["raw"], thr[name])
        bounded_ratio = ratio(thr["raw, 32 in flight"], thr[name])
        summary[name] = {
            "latency_ms_per_round": [round(x * 1000, 3) for x in lat[name]],
            "calls_per_s_per_round": [round(x) for x in thr[name]],
            "latency_ratio": round(lat_ratio, 3),
            "throughput_ratio": round(thr_ratio, 3),
            "throughput_ratio_vs_bounded_raw": round(bounded_ratio, 3),
        }
        print(
            f"{name:<22}{statistics.median(lat[name]) * 1000:>11.3f}"
            f"{statistics.median(thr[name]):>9.0f}{lat_ratio:>9.2f}{thr_ratio:>12.2f}"
            f"{bounded_ratio:>12.2f}"
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
