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


@dataclass(frozen=True)
class Row:
    """A line of the table: which workload, which number of it, its unit and direction."""

    workload: str
    label: str
    higher_is_better: bool
    extra: str | None = None  # show result["extra"][extra] instead of result["value"]


ROWS = (
    Row("latency", "latency, sequential awaits (µs)", False),
    Row("throughput", "throughput, gather (tasks/s) [1]", True),
    Row("map", "throughput, map (tasks/s) [2]", True),
    Row("amap", "throughput, amap (tasks/s)", True),
    Row("sleep", "sleeping tasks, wall (s) [3]", False),
    Row("sleep", "  ideal for the engine (s)", False, extra="ideal"),
    Row("payload", "4 MiB arg+result (MB/s)", True),
    Row("cpu", "CPU speed-up over serial (x)", True),
    Row("http", "loopback HTTP, 1 GET/task (req/s) [4]", True),
    Row("http10", "loopback HTTP, 10 GETs/task (req/s)", True),
    Row("startup", "start-up to first result (s)", False),
    Row("rss", "peak parent RSS, map (MB) [5]", False),
    Row("cancel", "cancel running coroutine (ms)", False),
    Row("recovery", "recovery after SIGKILL (ms) [6]", False),
    Row("recovery", "  back to full capacity (ms)", False, extra="full_ms"),
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
)


@dataclass(frozen=True)
class Clause:
    """``aioexec <op> factor x reference``; the reference is another cell or a constant."""

    op: str  # "<=", ">=" or "<"
    factor: float
    ref_engine: str | None = None  # None: constant (factor alone), or "ideal"
    ref_workload: str | None = None  # default: the target's own workload
    ref_extra: str | None = None  # take aioexec's own result["extra"][ref_extra]


@dataclass(frozen=True)
class Target:
    workload: str
    text: str
    clauses: tuple[Clause, ...]


TARGETS = (
    Target(
        "latency",
        "≤0.5xloky, ≤0.5xPPE",
        (Clause("<=", 0.5, "loky"), Clause("<=", 0.5, "ProcessPoolExecutor")),
    ),
    Target("throughput", "≥0.8xaiomp map", (Clause(">=", 0.8, "aiomultiprocess", "map"),)),
    Target("map", "≥2xaiomp map", (Clause(">=", 2.0, "aiomultiprocess", "map"),)),
    Target("amap", "≥2xaiomp map", (Clause(">=", 2.0, "aiomultiprocess", "map"),)),
    Target("sleep", "≤1.15xideal", (Clause("<=", 1.15, ref_extra="ideal"),)),
    Target("payload", "≥1.5xloky", (Clause(">=", 1.5, "loky"),)),
    Target("cpu", "≥0.95xmin(workers,cores)", (Clause(">=", 0.95, ref_extra="ideal"),)),
    Target("http", "≥1.2xaiomp", (Clause(">=", 1.2, "aiomultiprocess"),)),
    Target("startup", "≤PPE", (Clause("<=", 1.0, "ProcessPoolExecutor"),)),
    Target("rss", "<100 MB", (Clause("<", 100.0),)),
)


def cell_value(
    results: Results, workload: str, engine: str, extra: str | None = None
) -> float | None:
    """The number in one cell, or None when the cell is not ok."""
    res = results.get(workload, {}).get(engine)
    if not res or res.get("status") != "ok":
        return None
    value = res.get("extra", {}).get(extra) if extra else res.get("value")
    return float(value) if isinstance(value, (int, float)) else None


def evaluate(target: Target, results: Results) -> dict[str, Any]:
    """PASS/FAIL/n/a for one target, with the ratio aioexec/reference of each clause."""
    mine = cell_value(results, target.workload, "aioexec")
    ratios: list[str] = []
    verdict = "PASS"
    for c in target.clauses:
        if c.ref_extra:
            ref, name = cell_value(results, target.workload, "aioexec", c.ref_extra), c.ref_extra
        elif c.ref_engine:
            ref = cell_value(results, c.ref_workload or target.workload, c.ref_engine)
            name = SHORT[c.ref_engine] + (f" {c.ref_workload}" if c.ref_workload else "")
        else:
            ref, name = 1.0, ""
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
    return {"workload": target.workload, "target": target.text, "status": verdict, "ratios": ratios}


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
        return fmt(cell_value(results, row.workload, engine, row.extra))
    return {"timeout": "TIMEOUT", "error": "ERROR"}.get(str(status), "n/a")


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
    targets = {t.workload: evaluate(t, results) for t in TARGETS}
    cols = [SHORT[e] for e in engines]
    header = (
        f"{'workload':<36}"
        + "".join(f"{c:>10}" for c in cols)
        + f"{'aioexec/PPE':>12}  {'target':<25}{'measured':<24}result"
    )
    lines += [header, "-" * len(header)]
    for row in ROWS:
        if row.workload not in results:
            continue
        text = f"{row.label:<36}" + "".join(f"{cell_text(results, row, e):>10}" for e in engines)
        a = cell_value(results, row.workload, "aioexec", row.extra)
        b = cell_value(results, row.workload, "ProcessPoolExecutor", row.extra)
        text += f"{fmt(a / b) if a is not None and b and not row.extra else '':>12}  "
        t = targets.get(row.workload) if row.extra is None else None
        if t:
            text += f"{t['target']:<25}{' '.join(t['ratios']):<24}{t['status']}"
        lines.append(text.rstrip())
    lines += ["", *FOOTNOTES]
    notes = []
    for wl, per_engine in results.items():
        for eng, res in per_engine.items():
            if res.get("status") != "ok":
                why = res.get("reason", "")
                notes.append(f"  {wl} / {SHORT[eng]}: {res.get('status')} - {why}")
    if notes:
        lines += ["not measured:", *notes]
    return "\n".join(lines)


def write_json(path: Path, results: Results, meta: dict[str, Any]) -> None:
    """Everything: metadata, every sample, the targets' verdicts."""
    doc = {
        "meta": meta,
        "results": results,
        "targets": [evaluate(t, results) for t in TARGETS if t.workload in results],
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
    verdicts = {t.workload: evaluate(t, results)["status"] for t in TARGETS}
    for row in ROWS:
        a = cell_value(results, row.workload, "aioexec", row.extra)
        b = cell_value(results, row.workload, "ProcessPoolExecutor", row.extra)
        if row.extra or row.workload == "rss" or a is None or not b or a == 0:
            continue
        labels.append(row.label.split(" [")[0])
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


__all__ = ["ENGINES", "ROWS", "TARGETS", "evaluate", "plot", "render", "write_json"]
