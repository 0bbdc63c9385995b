"""CPU accounting around a measurement: how much CPU *other* processes used meanwhile.

On a shared machine a wall-clock ratio is only meaningful when nothing else ran. The
benchmark worker runs in its own session (``run.py`` starts it with ``start_new_session``),
and the pool's children and the HTTP server inherit that session, so

    others = (busy jiffies of the whole machine) - (CPU of the processes of this session)

is the CPU that the rest of the machine took while a sample was measured. Linux only; on
other systems :func:`snapshot` returns None and nothing is filtered.

The CPU *each* process of the session used during a sample (:func:`usage`, :func:`per_task`)
is read in nanoseconds from ``/proc/<pid>/task/<tid>/schedstat`` (time on a CPU, and time
spent runnable but waiting for one), summed over the process's threads: ``/proc/<pid>/stat``
counts in clock ticks (10 ms here), too coarse for the 20 - 100 µs that one task costs, and
on these virtual machines its split of ticks into user and system time is a sample, not a
measurement. A thread that exits between two readings takes its time with it; the pools'
threads live as long as the pools, so this only matters around start-up and shutdown.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from benchmarks._common import Result, median_result

_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

#: Largest share of the machine's CPU that other processes may use during a clean sample.
OTHERS_MAX = 0.05


class Snapshot(NamedTuple):
    busy: int  # jiffies the machine spent outside idle/iowait (steal included)
    ours: dict[int, int]  # pid -> utime+stime jiffies, for the processes of our session


def _session_cpu(sid: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:  # field 6 (session), counted from the state field (3)
            out[int(name)] = int(fields[11]) + int(fields[12])
    return out


def _session_pids(sid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                s = f.read()
        except OSError:
            continue
        if int(s[s.rindex(")") + 2 :].split()[3]) == sid:
            pids.append(int(name))
    return pids


def process_ns(pid: int) -> tuple[int, int] | None:
    """(ns on a CPU, ns runnable but waiting for a CPU) of process ``pid``, summed over its
    live threads; None if it is gone or the kernel has no schedstat."""
    run = wait = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
            run += int(fields[0])
            wait += int(fields[1])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return run, wait


class Usage(NamedTuple):
    """Per-process CPU of this session at one moment: pid -> (run ns, wait ns)."""

    me: int
    ns: dict[int, tuple[int, int]]


def usage() -> Usage | None:
    """Read the CPU of every process of this session (this one, the pool's workers, their
    helpers such as a resource tracker, the HTTP server); None where there is no /proc."""
    try:
        pids = _session_pids(os.getsid(0))
    except OSError:
        return None
    ns = {pid: got for pid in pids if (got := process_ns(pid)) is not None}
    return Usage(os.getpid(), ns) if os.getpid() in ns else None


def per_task(
    a: Usage | None, b: Usage | None, tasks: int, exclude: tuple[int, ...] = ()
) -> dict[str, float]:
    """CPU per task (µs) between two readings: ``parent`` (this process, all its threads),
    ``children`` (every other process of the session but ``exclude``, e.g. the HTTP
    server), and the time each side spent waiting for a CPU (``*_wait``: how much the
    machine's other load delayed it). Processes that started in between count from zero;
    processes that ended in between are lost (their numbers would be gone with them)."""
    if a is None or b is None or tasks <= 0:
        return {}
    parent = children = parent_wait = children_wait = 0
    for pid, (run, wait) in b.ns.items():
        if pid in exclude:
            continue
        run0, wait0 = a.ns.get(pid, (0, 0))
        if pid == b.me:
            parent, parent_wait = run - run0, wait - wait0
        else:
            children += run - run0
            children_wait += wait - wait0
    k = 1e-3 / tasks
    return {
        "parent": round(parent * k, 2),
        "children": round(children * k, 2),
        "total": round((parent + children) * k, 2),
        "parent_wait": round(parent_wait * k, 2),
        "children_wait": round(children_wait * k, 2),
    }


def median_per_task(samples: list[dict[str, float]]) -> dict[str, float]:
    """Key by key median of :func:`per_task` results (empty ones skipped)."""
    import statistics

    samples = [s for s in samples if s]
    if not samples:
        return {}
    return {k: round(statistics.median(s[k] for s in samples), 2) for k in samples[0]}


def snapshot() -> Snapshot | None:
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = sum(v[:8]) - v[3] - v[4]  # user nice system [idle iowait] irq softirq steal
        return Snapshot(busy, _session_cpu(os.getsid(0)))
    except (OSError, ValueError, IndexError):
        return None


def others_ms(a: Snapshot | None, b: Snapshot | None) -> float | None:
    """CPU milliseconds used by processes outside our session between two snapshots.

    A process of ours that exited in between is not counted as ours (its CPU shows as
    the others'): take snapshots around phases in which the pool's processes live on."""
    if a is None or b is None:
        return None
    ours = sum(b.ours[p] - a.ours.get(p, 0) for p in b.ours)
    return max(0.0, (b.busy - a.busy - ours) * 1000 / _CLK)


def by_role(
    a: Snapshot | None, b: Snapshot | None, server_pid: int, wall_s: float
) -> dict[str, float | None]:
    """CPU ms between two snapshots: this process, the server, the rest of our session (the
    pool's workers), processes outside the session, and the wall time, for one sample."""
    if a is None or b is None:
        return {}
    d = {p: (b.ours[p] - a.ours.get(p, 0)) * 1000 / _CLK for p in b.ours}
    me = d.pop(os.getpid(), 0.0)
    server = d.pop(server_pid, 0.0)
    return {
        "wall": round(wall_s * 1000, 1),
        "parent": me,
        "server": server,
        "workers": sum(d.values()),
        "others": others_ms(a, b),
    }


def is_clean(others: float | None, wall_s: float) -> bool:
    """Whether a sample of ``wall_s`` seconds during which the others used ``others`` ms of
    CPU measured this benchmark rather than its neighbours (at most ``OTHERS_MAX`` of the
    machine, and never less than two clock ticks, the resolution of the counters)."""
    if others is None:
        return True
    return others <= max(2000 / _CLK, OTHERS_MAX * wall_s * 1e3 * (_CORES or 1))


async def sample_until_clean(
    once: Callable[[], Awaitable[dict[str, Any]]], wanted: int
) -> list[dict[str, Any]]:
    """Take samples with ``once`` (each a dict with a ``clean`` flag, see :func:`is_clean`)
    until ``wanted`` of them are clean, or ``4 x wanted`` were taken; return them all."""
    log: list[dict[str, Any]] = []
    for _ in range(4 * max(1, wanted)):
        log.append(await once())
        if sum(sample["clean"] for sample in log) >= wanted:
            break
    return log


def clean_median(log: list[dict[str, Any]], key: str, **extra: Any) -> Result:
    """The median of the clean samples' ``key`` (of all of them, with a warning, if none is
    clean); the whole log goes into the JSON."""
    clean = [sample[key] for sample in log if sample["clean"]]
    result = median_result(
        clean or [sample[key] for sample in log], clean_samples=len(clean), log=log, **extra
    )
    if not clean:
        result["extra"]["warning"] = "every sample overlapped other load on the machine"
    return result


def peak_rss(pid: int) -> int | None:
    """Peak resident set size of process ``pid`` in bytes (``VmHWM`` of
    ``/proc/<pid>/status``, since the process started), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


async def repeat_per_task(
    repeats: int, once: Callable[[], Awaitable[float]], tasks: int
) -> tuple[list[float], list[dict[str, float]]]:
    """Run ``once`` ``repeats`` times; return its measurements and, for each, the CPU per
    task (:func:`per_task`) of ``tasks`` tasks, read around it (outside its timing)."""
    samples, cpu = [], []
    for _ in range(max(1, repeats)):
        a = usage()
        samples.append(await once())
        cpu.append(per_task(a, usage(), tasks))
    return samples, cpu
