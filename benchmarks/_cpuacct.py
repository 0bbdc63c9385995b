"""CPU accounting around a measurement: how much CPU *other* processes used meanwhile.

On a shared machine a wall-clock ratio is only meaningful when nothing else ran. The
benchmark worker runs in its own session (``run.py`` starts it with ``start_new_session``),
and the pool's children and the HTTP server inherit that session, so

    others = (busy jiffies of the whole machine) - (CPU of the processes of this session)

is the CPU that the rest of the machine took while a sample was measured. Linux only; on
other systems :func:`snapshot` returns None and nothing is filtered.
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
