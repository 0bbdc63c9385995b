"""The table, the targets (PASS/FAIL), the JSON file and the optional PNG of ratios.

``results[workload][engine]`` is what ``_worker.py`` wrote, or a status the orchestrator set
(``timeout``, ``n/a``). Rows and targets are data (:data:`ROWS`, :data:`TARGETS`); a target
whose aioexec value or reference is missing shows ``n/a`` rather than a guess.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.engines import ENGINES, SHORT

Results = dict[str, dict[str, dict[str, Any]]]


FLOOR = "floor"  # the pseudo-engine whose cells hold the floors (floors.py)


def short(engine: str) -> str:
    """The column name of an engine (or of the floor)."""
    return SHORT.get(engine, engine)


@dataclass(frozen=True)
class Row:
    """A line of the table: which workload, which number of it, its unit and direction.

    ``label`` may name sizes of the run's ``Params`` (``{big_payload_mib[2]}``): ``--quick``
    uses smaller ones. ``extra`` is a key of the result's ``extra`` (dotted for nested ones,
    ``cpu_us.parent``) instead of its ``value``. ``floor`` is the floor cell the row compares
    to: (workload, extra) of a cell of the ``floor`` pseudo-engine. ``peers``: whether the
    engines' numbers are comparable (the "vs best peer" column)."""

    workload: str
    label: str
    higher_is_better: bool
    extra: str | None = None
    floor: tuple[str, str | None] | None = None
    peers: bool = True
    floor_ratios: bool = False  # followed by a row of each engine's ratio to the floor
    scale: float = 1.0  # shown multiplied by this (µs per round trip of 1 GiB: in ms)


def _cpu_rows(
    workload: str, what: str, floor_workload: str | None, ms: bool = False
) -> tuple[Row, ...]:
    """The parent's and the children's CPU per task of a workload, from /proc [8]."""
    return tuple(
        Row(
            workload,
            f"  {what}: {side} CPU ({'ms' if ms else 'µs'}) [8]",
            False,
            extra=f"cpu_us.{side}",
            floor=(floor_workload, f"cpu_us.{side}") if floor_workload else None,
            scale=1e-3 if ms else 1.0,
        )
        for side in ("parent", "children")
    )


def _big_rows(workload: str, index: int) -> tuple[Row, ...]:
    size = f"{{big_payload_mib[{index}]}} MiB"
    return (
        Row(
            workload,
            f"{size} arg+result (MB/s) [7]",
            True,
            floor=(workload, None),
            floor_ratios=True,
        ),
        Row(workload, "  first, cold round trip (s)", False, extra="first_trip_s"),
        Row(
            workload,
            "  parent peak RSS (MiB)",
            False,
            extra="parent_peak_mib",
            floor=(workload, "parent_peak_mib"),
        ),
        Row(
            workload,
            "  child peak RSS (MiB)",
            False,
            extra="child_peak_mib",
            floor=(workload, "child_peak_mib"),
        ),
        *_cpu_rows(workload, "per round trip", workload, ms=True),
    )


def _scale_rows() -> tuple[Row, ...]:
    names = ("scale1", "scale2", "scale8", "scale32", "scale128")
    rows = [
        Row(
            w,
            f"gather, {{scale_workers[{i}]}} workers (tasks/s) [9]",
            True,
            floor=("throughput", None),
        )
        for i, w in enumerate(names)
    ]
    rows += [
        Row(
            w,
            f"latency, {{scale_workers[{i}]}} workers (µs)",
            False,
            extra="latency_us",
            floor=("latency", None),
        )
        for i, w in enumerate(names)
    ]
    rows += [
        Row(
            w,
            f"parent CPU per task, gather, {{scale_workers[{i}]}} w. (µs)",
            False,
            extra="cpu_us.parent",
            floor=("throughput", "cpu_us.parent"),
        )
        for i, w in enumerate(names)
    ]
    rows += [
        Row(
            w,
            f"parent CPU per call, latency, {{scale_workers[{i}]}} w. (µs)",
            False,
            extra="latency_cpu_us.parent",
            floor=("latency", "cpu_us.parent"),
        )
        for i, w in enumerate(names)
    ]
    return tuple(rows)


ROWS = (
    Row(
        "latency",
        "latency, sequential awaits (µs)",
        False,
        floor=("latency", None),
        floor_ratios=True,
    ),
    *_cpu_rows("latency", "per call", "latency"),
    Row(
        "latency",
        "  per call: parent+children CPU (µs)",
        False,
        extra="cpu_us.total",
        floor=("latency", "cpu_us.total"),
    ),
    Row(
        "throughput",
        "throughput, gather (tasks/s) [1]",
        True,
        floor=("throughput", None),
        floor_ratios=True,
    ),
    *_cpu_rows("throughput", "per task", "throughput"),
    # No floor: a chunk of 100 inputs is one call, which the loop-alone floor is not.
    Row("map", "throughput, map (tasks/s) [2]", True),
    *_cpu_rows("map", "per task", None),
    Row("amap", "throughput, amap (tasks/s)", True),
    *_cpu_rows("amap", "per task", None),
    Row("sleep", "sleeping tasks, wall (s) [3]", False),
    Row("sleep", "  ideal for the engine (s)", False, extra="ideal", peers=False),
    Row("payload", "4 MiB arg+result (MB/s)", True, floor=("payload", None), floor_ratios=True),
    *_cpu_rows("payload", "per round trip", "payload"),
    *_big_rows("payload64m", 0),
    *_big_rows("payload256m", 1),
    *_big_rows("payload1g", 2),
    Row("cpu", "CPU-bound, {cpu_tasks} tasks: speed-up (x) [10]", True),
    Row("cpu_plain", "  aioexec with plain functions (x)", True),
    Row("cpu", "  ideal, min(workers, cores) (x)", True, extra="ideal", peers=False),
    Row("http", "loopback HTTP, 1 GET/task (req/s) [4]", True),
    Row("http10", "loopback HTTP, 10 GETs/task (req/s)", True),
    Row("startup", "start-up to first result (s)", False),
    Row("rss", "peak parent RSS, map (MB) [5]", False, peers=False),
    Row("cancel", "cancel running coroutine (ms)", False),
    Row("recovery", "recovery after SIGKILL (ms) [6]", False),
    Row("recovery", "  back to full capacity (ms)", False, extra="full_ms"),
    *_scale_rows(),
    Row("pool128", "{pool_workers} workers: start-up, all answered (s) [11]", False),
    Row("pool128", "  shutdown (s)", False, extra="shutdown_s"),
)

FOOTNOTES = (
    "[1] aioexec/PPE/loky: loop.run_in_executor per task (aioexec under --uvloop: ex.run, as "
    "uvloop refuses coroutine functions there); aiomp: Pool.apply per task.",
    "[2] Executor.map(chunksize) driven from a thread; aiomp: its own Pool.map (no chunksize); "
    "amap uses the same chunksize.",
    "[3] aioexec/aiomp run asyncio.sleep coroutines (16 per child); PPE/loky time.sleep "
    "(1 per worker); ideal = n/(workers*slots)*sleep.",
    "[4] async engines: aiohttp ClientSession per child, 16 tasks per child; PPE/loky: "
    "http.client keep-alive, 1 task per worker. With 10 GETs per task the server and the "
    "clients decide the rate on 2 cores (per-process CPU in the JSON).",
    "[5] aioexec: map(range(rss_n), buffersize); peers: map(range(rss_peer_n)) without "
    "buffersize (none before 3.14) - sizes in the JSON; not the same N, not comparable.",
    "[6] kill -9 of a worker running a task, until a NEW task completes; then until tasks run "
    "on `workers` live processes again. A pool broken as a whole (PPE/loky) is rebuilt, "
    "included.",
    "[7] one untimed round trip at full size first (its time: the cold row), then samples of "
    "at least big_payload_min_bytes each way; peak RSS = VmHWM of /proc/<pid>/status: the "
    "parent (which holds the argument) and the busiest child. Floor: a raw pipe echo.",
    "[8] from /proc/<pid>/task/*/schedstat (ns on a CPU): parent = the benchmark process, all "
    "its threads; children = every other process of its session (workers, helpers). Floor "
    "column: the same for the floor's two processes.",
    "[9] 2 cores; the pool's size only changes: floors are the ping-pong and the loop alone.",
    "[10] 50 ms pure-Python loops gathered on 2 workers; aioexec/aiomp: coroutines that never "
    "await; PPE/loky (and the aioexec plain row): plain functions. Per-child task counts and "
    "time lines in the JSON.",
    "[11] batches of tasks holding a worker warm_hold_s until every worker answered; "
    "shutdown(wait=True) (aiomp: terminate+join).",
)


@dataclass(frozen=True)
class Clause:
    """``aioexec <op> factor x reference``; the reference is a cell's number or a constant.

    With neither ``ref_engine`` nor ``ref_extra`` the reference is 1 (a constant bound:
    ``factor`` itself); otherwise it is the number ``ref_extra`` (None: the value) of the
    cell (``ref_workload`` or the target's own workload, ``ref_engine`` or aioexec)."""

    op: str  # "<=", ">=" or "<"
    factor: float
    ref_engine: str | None = None
    ref_workload: str | None = None
    ref_extra: str | None = None
    name: str | None = None  # how the "measured" column names the reference


@dataclass(frozen=True)
class Target:
    """A target on the row (``workload``, ``extra``)."""

    workload: str
    text: str
    clauses: tuple[Clause, ...]
    extra: str | None = None


PPE = "ProcessPoolExecutor"
AIOMP = "aiomultiprocess"

TARGETS = (
    Target(
        "latency",
        "≤0.5xloky, ≤0.5xPPE, ≤1.25xfloor",
        (Clause("<=", 0.5, "loky"), Clause("<=", 0.5, PPE), Clause("<=", 1.25, FLOOR)),
    ),
    Target(
        "latency",
        "CPU ≤1.25xfloor",
        (Clause("<=", 1.25, FLOOR, ref_extra="cpu_us.total"),),
        extra="cpu_us.total",
    ),
    Target("throughput", "≥0.8xaiomp map", (Clause(">=", 0.8, AIOMP, "map"),)),
    Target("map", "≥2xaiomp map", (Clause(">=", 2.0, AIOMP, "map"),)),
    Target("amap", "≥2xaiomp map", (Clause(">=", 2.0, AIOMP, "map"),)),
    Target("sleep", "≤1.15xideal", (Clause("<=", 1.15, ref_extra="ideal"),)),
    Target("payload", "≥1.5xloky", (Clause(">=", 1.5, "loky"),)),
    Target(
        "payload1g",
        "≥0.8x4MiB, ≥3xPPE",
        (Clause(">=", 0.8, "aioexec", "payload", name="4MiB"), Clause(">=", 3.0, PPE)),
    ),
    Target(
        "payload1g",
        "≤3xpayload",
        (Clause("<=", 3.0, ref_extra="payload_mib", name="payload"),),
        extra="parent_peak_mib",
    ),
    Target(
        "payload1g",
        "≤3xpayload",
        (Clause("<=", 3.0, ref_extra="payload_mib", name="payload"),),
        extra="child_peak_mib",
    ),
    Target(
        "cpu",
        "≥0.95xideal, ≥PPE",
        (Clause(">=", 0.95, ref_extra="ideal"), Clause(">=", 1.0, PPE)),
    ),
    Target(
        "cpu_plain",
        "≥0.95xideal, ≥PPE",
        (Clause(">=", 0.95, ref_extra="ideal"), Clause(">=", 1.0, PPE, "cpu", name="PPE")),
    ),
    Target("http", "≥1.2xaiomp", (Clause(">=", 1.2, AIOMP),)),
    Target("startup", "≤PPE", (Clause("<=", 1.0, PPE),)),
    Target("rss", "<100 MB", (Clause("<", 100.0),)),
    Target("scale32", "≥0.8x2 workers", (Clause(">=", 0.8, "aioexec", "scale2", name="scale2"),)),
    Target(
        "scale128",
        "≤1.2x2 workers",
        (Clause("<=", 1.2, "aioexec", "scale2", "cpu_us.parent", name="scale2"),),
        extra="cpu_us.parent",
    ),
)


def _extra(res: dict[str, Any], key: str) -> Any:
    value: Any = res.get("extra", {})
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def cell_value(
    results: Results, workload: str, engine: str, extra: str | None = None
) -> float | None:
    """The number in one cell, or None when the cell is not ok."""
    res = results.get(workload, {}).get(engine)
    if not res or res.get("status") != "ok":
        return None
    value = _extra(res, extra) if extra else res.get("value")
    return float(value) if isinstance(value, (int, float)) else None


def evaluate(target: Target, results: Results) -> dict[str, Any]:
    """PASS/FAIL/n/a for one target, with the ratio aioexec/reference of each clause."""
    mine = cell_value(results, target.workload, "aioexec", target.extra)
    ratios: list[str] = []
    verdict = "PASS"
    for c in target.clauses:
        if c.ref_engine is None and c.ref_extra is None:
            ref, name = 1.0, ""
        else:
            engine = c.ref_engine or "aioexec"
            ref = cell_value(results, c.ref_workload or target.workload, engine, c.ref_extra)
            name = short(engine) if c.ref_engine else (c.ref_extra or "").split(".")[0]
            if c.ref_workload:
                name += f" {c.ref_workload}"
            name = c.name or name
        if mine is None or ref is None or ref == 0:
            verdict = "n/a"
            continue
        ok = {
            "<=": mine <= c.factor * ref,
            ">=": mine >= c.factor * ref,
            "<": mine < c.factor * ref,
        }[c.op]
        if name:
            ratios.append(f"{mine / ref:.2f}x{name}")
        if not ok and verdict != "n/a":
            verdict = "FAIL"
    if verdict != "n/a" and _noisy(target, results):
        verdict = "NOISY"  # no sample of a cell was free of other load: no verdict either way
    return {
        "workload": target.workload,
        "extra": target.extra,
        "target": target.text,
        "status": verdict,
        "ratios": ratios,
    }


def _noisy(target: Target, results: Results) -> bool:
    """Whether aioexec's cell or a reference cell of ``target`` had no clean sample (none
    taken while processes outside the benchmark used at most 5 % of the machine)."""
    cells = {(target.workload, "aioexec")}
    for c in target.clauses:
        if c.ref_engine:
            cells.add((c.ref_workload or target.workload, c.ref_engine))
    return any(
        results.get(w, {}).get(e, {}).get("extra", {}).get("clean_samples") == 0 for w, e in cells
    )


def floor_value(results: Results, row: Row) -> float | None:
    """The floor's number for ``row``, if it has one and it was measured."""
    if row.floor is None:
        return None
    return cell_value(results, row.floor[0], FLOOR, row.floor[1])


def best_peer_ratio(results: Results, row: Row, engines: list[str]) -> float | None:
    """How many times better aioexec is than the best peer on ``row`` (>1: ahead of all)."""
    mine = cell_value(results, row.workload, "aioexec", row.extra)
    peers = [
        v
        for e in engines
        if e != "aioexec" and (v := cell_value(results, row.workload, e, row.extra)) is not None
    ]
    if not row.peers or mine is None or not peers or mine == 0:
        return None
    if row.higher_is_better:
        return mine / max(peers) if max(peers) else None
    return min(peers) / mine


def fmt(value: float | None) -> str:
    """Three significant digits, no exponent for ordinary sizes."""
    if value is None:
        return ""
    if value == 0 or not math.isfinite(value):
        return str(value)
    mag = math.floor(math.log10(abs(value)))
    if mag >= 3:
        return f"{value:,.0f}"
    return f"{value:.{max(0, 2 - mag)}f}"


def cell_text(results: Results, row: Row, engine: str) -> str:
    res = results.get(row.workload, {}).get(engine)
    if res is None:
        return "-"
    status = res.get("status")
    if status == "ok":
        value = cell_value(results, row.workload, engine, row.extra)
        return fmt(value * row.scale if value is not None else None)
    return {"timeout": "TIMEOUT", "error": "ERROR"}.get(str(status), "n/a")


def label(row: Row, meta: dict[str, Any]) -> str:
    """The row's label with the run's sizes filled in."""
    try:
        return row.label.format(**meta.get("params", {}))
    except (KeyError, IndexError, AttributeError):
        return row.label


def render(results: Results, meta: dict[str, Any], engines: list[str]) -> str:
    """The whole printed report: header, one table, footnotes and the reasons for n/a."""
    m = meta["machine"]
    lines = [
        f"aioexec benchmarks  {meta['date']}  Python {meta['python']}  "
        f"start method {meta['start_method']}  workers {meta['workers']}  "
        f"repeats {meta['repeats']}{'  QUICK' if meta['quick'] else ''}",
        f"machine: {m['cpu_model']}, nproc {m['nproc']}, {m['memory_gb']} GB, {m['platform']}; "
        f"load average before [{meta.get('loadavg_start')}] after [{meta.get('loadavg_end')}]",
    ]
    targets = {(t.workload, t.extra): evaluate(t, results) for t in TARGETS}
    cols = [short(e) for e in engines]
    tw = max(len(t["target"]) for t in targets.values()) + 2
    mw = max(len(" ".join(t["ratios"])) for t in targets.values()) + 2
    header = (
        f"{'workload':<46}{'floor':>9}"
        + "".join(f"{c:>9}" for c in cols)
        + f"{'/PPE':>7}{'/floor':>7}{'/peers':>7}  {'target':<{tw}}{'measured':<{mw}}result"
    )
    lines += [header, "-" * len(header)]
    for row in ROWS:
        if row.workload not in results:
            continue
        floor = floor_value(results, row)
        text = f"{label(row, meta):<46}{fmt(floor * row.scale if floor else floor):>9}"
        text += "".join(f"{cell_text(results, row, e):>9}" for e in engines)
        a = cell_value(results, row.workload, "aioexec", row.extra)
        b = cell_value(results, row.workload, PPE, row.extra)
        text += f"{fmt(a / b) if a is not None and b and row.peers else '':>7}"
        text += f"{fmt(a / floor) if a is not None and floor else '':>7}"
        text += f"{fmt(best_peer_ratio(results, row, engines)):>7}  "
        t = targets.get((row.workload, row.extra))
        if t:
            text += f"{t['target']:<{tw}}{' '.join(t['ratios']):<{mw}}{t['status']}"
        lines.append(text.rstrip())
        if row.floor_ratios and floor:
            ratios = [cell_value(results, row.workload, e, row.extra) for e in engines]
            lines.append(
                f"{'  ÷ floor (x)':<46}{'':>9}"
                + "".join(f"{fmt(v / floor) if v is not None else '':>9}" for v in ratios)
            )
    lines += [
        "",
        "/PPE: aioexec / ProcessPoolExecutor; /floor: aioexec / the floor; /peers: how many "
        "times better aioexec is than the best peer on the row (>1: ahead of all).",
        *FOOTNOTES,
    ]
    notes = []
    for wl, per_engine in results.items():
        for eng, res in per_engine.items():
            if res.get("status") != "ok":
                why = res.get("reason", "")
                notes.append(f"  {wl} / {short(eng)}: {res.get('status')} - {why}")
    if notes:
        lines += ["not measured:", *notes]
    return "\n".join(lines)


def write_json(path: Path, results: Results, meta: dict[str, Any]) -> None:
    """Everything: metadata, every sample, the targets' verdicts."""
    doc = {
        "meta": meta,
        "results": results,
        "targets": [evaluate(t, results) for t in TARGETS if t.workload in results],
        "floor_ratios": {
            label(row, meta): {
                short(e): round(v / f, 3)
                for e in ENGINES
                if (v := cell_value(results, row.workload, e, row.extra)) is not None
            }
            for row in ROWS
            if (f := floor_value(results, row))
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def plot(path: Path, results: Results, meta: dict[str, Any]) -> bool:
    """A bar per row: how many times better aioexec is than PPE (>1 = better). Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, values, colors = [], [], []
    verdicts = {t.workload: evaluate(t, results)["status"] for t in TARGETS if t.extra is None}
    for row in ROWS:
        a = cell_value(results, row.workload, "aioexec", row.extra)
        b = cell_value(results, row.workload, PPE, row.extra)
        if row.extra or not row.peers or a is None or not b or a == 0:
            continue
        labels.append(label(row, meta).split(" [")[0])
        values.append(a / b if row.higher_is_better else b / a)
        colors.append(
            {"PASS": "tab:green", "FAIL": "tab:red"}.get(verdicts.get(row.workload, ""), "tab:gray")
        )
    if not values:
        return False
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(values) + 1.5))
    ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(
        "aioexec advantage over ProcessPoolExecutor (x, >1 is better; colour = target PASS/FAIL)"
    )
    ax.set_title(f"aioexec vs ProcessPoolExecutor - Python {meta['python']}, {meta['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


__all__ = ["ENGINES", "FLOOR", "ROWS", "TARGETS", "evaluate", "plot", "render", "write_json"]


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.report RESULT.json``: print the table of a saved run again."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("json", type=Path)
    args = parser.parse_args(argv)
    doc = json.loads(args.json.read_text())
    meta = doc["meta"]
    print(render(doc["results"], meta, [e for e in meta["engines"] if e in ENGINES]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
