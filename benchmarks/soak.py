"""Soak: a million tasks through one executor, then 200 executor lives; RSS and fd slopes.

``python -m benchmarks.soak [--quick] [--tasks N] [--lives N] [--workers N] [--json PATH]``

Not part of CI (the full run takes minutes). It answers one question: does anything grow with
use? Two phases, each sampled at regular intervals while the executor is idle between rounds:

1. **tasks**: one executor runs ``--tasks`` trivial tasks in rounds, each round a mix of the
   ways work arrives: coroutines awaited with ``ex.run`` in one event loop (the loop reads the
   answers itself), coroutines and plain functions submitted from a thread and waited for
   with ``result()`` (the manager thread reads them). Every result is checked.
2. **lives**: ``--lives`` times, an executor is created, runs a few coroutines and plain
   functions, and is shut down (``with`` block).

For each phase it fits a least-squares line to the samples (after the first 10%, the
allocator's warm-up) and prints the slope of: this process's RSS, the executor's children's
total RSS (phase 1), its open descriptors and threads, and the live processes below it (the
children, a forkserver, the resource tracker). A slope whose extrapolation over the whole phase
exceeds a small allowance is reported as GROWING and the exit status is 1.

Uses only ``/proc`` (Linux) and the public API (plus ``executor._processes``, the
``ProcessPoolExecutor`` attribute).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ``python benchmarks/soak.py`` puts benchmarks/ first instead
    sys.path.insert(0, str(ROOT))

from aioexec import AsyncProcessExecutor  # noqa: E402
from benchmarks.tasks import noop, noop_async  # noqa: E402

# What the extrapolated growth over a whole phase may reach before it counts as a leak.
RSS_ALLOWANCE = 8 * 1024 * 1024  # bytes: allocator noise, interned strings, caches
COUNT_ALLOWANCE = 1.0  # descriptors, threads, processes: less than one
WARM_UP_FRACTION = 0.1


def _status_kib(pid: int | str, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(root: int) -> set[int]:
    """Live (non-zombie) processes below ``root``: a forkserver's children are the
    executor's children, so direct children alone would miss a leaked worker."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[0] not in ("Z", "X"):
                children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            if pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def sample(ex: AsyncProcessExecutor | None, done: int) -> dict[str, float]:
    gc.collect()
    point = {
        "x": float(done),
        "rss_bytes": 1024.0 * _status_kib("self", "VmRSS"),
        "fds": float(len(os.listdir("/proc/self/fd"))),
        "threads": float(threading.active_count()),
        # the executor's children, plus the forkserver and the resource tracker
        "processes_below": float(len(_descendants(os.getpid()))),
    }
    if ex is not None:
        point["children_rss_bytes"] = 1024.0 * sum(
            _status_kib(pid, "VmRSS") for pid in ex._processes
        )
    return point


def slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of ys over xs, and r squared (0 when ys are constant)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0:
        return 0.0, 0.0
    b = sxy / sxx
    r2 = (sxy * sxy) / (sxx * syy) if syy else 0.0
    return b, r2


def analyse(samples: list[dict[str, float]], per: float, unit: str) -> dict[str, Any]:
    """Slopes per ``per`` units of x for every measured quantity, with verdicts."""
    kept = samples[int(len(samples) * WARM_UP_FRACTION) :]
    xs = [s["x"] for s in kept]
    span = xs[-1] - xs[0] if len(xs) > 1 else 0.0
    out: dict[str, Any] = {"per": f"{per:g} {unit}", "samples": len(samples), "span": span}
    for key in kept[0]:
        if key == "x":
            continue
        ys = [s[key] for s in kept]
        b, r2 = slope(xs, ys)
        growth = b * span
        allowance = RSS_ALLOWANCE if key.endswith("bytes") else COUNT_ALLOWANCE
        out[key] = {
            "slope": b * per,
            "r2": r2,
            "first": ys[0],
            "last": ys[-1],
            "min": min(ys),
            "max": max(ys),
            "extrapolated_growth": growth,
            "verdict": "GROWING" if growth > allowance else "flat",
        }
    return out


# -- phase 1: tasks ---------------------------------------------------------------------------


def _run_round(ex: AsyncProcessExecutor, first: int, size: int) -> None:
    """``size`` tasks numbered from ``first``: 40% gathered ``ex.run`` coroutines in an event
    loop, 40% coroutines and 20% plain functions submitted from this thread."""
    n_loop = size * 2 // 5
    n_async = size * 2 // 5

    async def in_loop() -> list[int]:
        return await asyncio.gather(*(ex.run(noop_async, first + i) for i in range(n_loop)))

    results = asyncio.run(in_loop())
    futures: list[Future[int]] = [
        ex.submit(noop_async, first + i) for i in range(n_loop, n_loop + n_async)
    ]
    futures += [ex.submit(noop, first + i) for i in range(n_loop + n_async, size)]
    results += [f.result(timeout=120) for f in futures]
    if results != list(range(first, first + size)):
        raise AssertionError(f"wrong results in the round starting at {first}")


def soak_tasks(total: int, workers: int, rounds: int, progress: Callable[[str], None]) -> Any:
    size = max(10, total // rounds)
    samples = []
    started = time.perf_counter()
    with AsyncProcessExecutor(workers) as ex:
        _run_round(ex, 0, size)  # children started, everything imported
        samples.append(sample(ex, 0))
        done = 0
        while done < total:
            n = min(size, total - done)
            _run_round(ex, done, n)
            done += n
            samples.append(sample(ex, done))
            if len(samples) % max(1, rounds // 10) == 0:
                rate = done / (time.perf_counter() - started)
                progress(f"  tasks: {done:>9,} done, {rate:,.0f}/s")
    result = analyse(samples, 100_000, "tasks")
    result["seconds"] = time.perf_counter() - started
    result["tasks"] = total
    return result


# -- phase 2: lives ---------------------------------------------------------------------------


def _one_life(workers: int, index: int) -> None:
    with AsyncProcessExecutor(workers) as ex:
        futures = [ex.submit(noop_async, index + i) for i in range(20)]
        futures += [ex.submit(noop, index + i) for i in range(20, 30)]

        async def in_loop() -> list[int]:
            return await asyncio.gather(*(ex.run(noop_async, index + i) for i in range(30, 40)))

        results = [f.result(timeout=120) for f in futures] + asyncio.run(in_loop())
    if results != list(range(index, index + 40)):
        raise AssertionError(f"wrong results in life {index}")


def soak_lives(lives: int, workers: int, progress: Callable[[str], None]) -> Any:
    started = time.perf_counter()
    _one_life(workers, 0)  # forkserver and resource tracker started, everything imported
    samples = [sample(None, 0)]
    for life in range(1, lives + 1):
        _one_life(workers, life)
        samples.append(sample(None, life))
        if life % max(1, lives // 10) == 0:
            progress(f"  lives: {life:>4} done, {life / (time.perf_counter() - started):.1f}/s")
    result = analyse(samples, 100, "lives")
    result["seconds"] = time.perf_counter() - started
    result["lives"] = lives
    return result


# -- report -------------------------------------------------------------------------------------


def _fmt(key: str, value: float) -> str:
    return f"{value / 1024:,.1f} KiB" if key.endswith("bytes") else f"{value:,.2f}"


def print_phase(name: str, result: dict[str, Any]) -> None:
    print(
        f"\n{name}: {result['samples']} samples in {result['seconds']:.0f} s; "
        f"slope per {result['per']}"
    )
    print(f"  {'quantity':<20} {'slope':>14} {'r2':>5} {'first':>14} {'last':>14}  verdict")
    for key, row in result.items():
        if isinstance(row, dict):
            print(
                f"  {key:<20} {_fmt(key, row['slope']):>14} {row['r2']:>5.2f} "
                f"{_fmt(key, row['first']):>14} {_fmt(key, row['last']):>14}  {row['verdict']}"
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="20,000 tasks and 20 lives")
    parser.add_argument("--tasks", type=int, default=None, help="default 1,000,000")
    parser.add_argument("--lives", type=int, default=None, help="default 200")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=100, help="samples of the tasks phase")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tasks = args.tasks if args.tasks is not None else (20_000 if args.quick else 1_000_000)
    lives = args.lives if args.lives is not None else (20 if args.quick else 200)
    print(
        f"soak: {tasks:,} tasks, {lives} executor lives, {args.workers} workers; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs",
        flush=True,
    )

    def progress(line: str) -> None:
        print(line, flush=True)

    report = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "tasks": soak_tasks(tasks, args.workers, args.rounds, progress),
        "lives": soak_lives(lives, args.workers, progress),
    }
    print_phase("tasks", report["tasks"])
    print_phase("lives", report["lives"])
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    growing = [
        f"{phase}.{key}"
        for phase in ("tasks", "lives")
        for key, row in report[phase].items()
        if isinstance(row, dict) and row["verdict"] == "GROWING"
    ]
    print("\nverdict:", "GROWING: " + ", ".join(growing) if growing else "flat")
    return 1 if growing else 0


if __name__ == "__main__":
    sys.exit(main())
