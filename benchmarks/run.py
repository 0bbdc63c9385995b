"""Benchmark aioexec against ProcessPoolExecutor, loky and aiomultiprocess in one run.

``python -m benchmarks [--quick] [--only latency,http] [--engines aioexec,loky]
[--repeats 3] [--start-method spawn|forkserver] [--uvloop]`` (or ``python benchmarks/run.py``).

For each workload, each engine runs in its own subprocess (``benchmarks._worker``) in a new
process group with a timeout: a hang becomes ``TIMEOUT`` and the group is killed. Engines
that cannot be imported are ``n/a``. One table is printed; the JSON goes to
``benchmarks/results/<date>-<python>[-quick][-partial].json`` and, when matplotlib is
installed, a PNG of the ratios next to it.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ``python benchmarks/run.py`` puts benchmarks/ first instead
    sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402
from benchmarks.engines import ENGINES, SHORT  # noqa: E402
from benchmarks.workloads import WORKLOADS  # noqa: E402

IMPORT_CHECKS = {
    "aioexec": "from aioexec import AsyncProcessExecutor",
    "ProcessPoolExecutor": "import concurrent.futures",
    "loky": "import loky",
    "aiomultiprocess": "import aiomultiprocess",
}


def child_env() -> dict[str, str]:
    """The environment for subprocesses: the repo root first on PYTHONPATH (spawned children
    inherit it, so they can import ``benchmarks.tasks`` and the working tree's aioexec)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def unavailable(engine: str) -> str | None:
    """Why ``engine`` cannot be imported (in a fresh interpreter), or None if it can."""
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECKS[engine]],
        env=child_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode == 0:
        return None
    last = (proc.stderr.strip().splitlines() or ["import failed"])[-1]
    return f"not installed / not importable ({last})"


def run_one(engine: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    """One engine x workload in its own process group, killed when it overruns."""
    timeout = WORKLOADS[workload].timeout * (0.25 if args.quick else 1.0) * args.timeout_scale
    timeout = max(timeout, 30.0)
    with tempfile.TemporaryDirectory(prefix="aioexec-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks._worker",
            "--engine",
            engine,
            "--workload",
            workload,
            "--out",
            str(out),
            "--repeats",
            str(args.repeats),
            "--workers",
            str(args.workers),
            "--start-method",
            args.start_method,
            "--child-concurrency",
            str(args.child_concurrency),
        ]
        cmd += ["--quick"] * args.quick + ["--uvloop"] * args.uvloop
        log = Path(tmp) / "output.txt"
        t0 = time.perf_counter()
        with open(log, "wb") as sink:  # a file, not a pipe: orphaned grandchildren can't block us
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=child_env(),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
            )
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the group we made: worker + its pool
                proc.wait()
        output = log.read_bytes()
        elapsed = time.perf_counter() - t0
        if out.exists():
            result: dict[str, Any] = json.loads(out.read_text())
            if timed_out:
                result["note"] = "result written, but the process hung on exit"
        elif timed_out:
            result = {"status": "timeout", "reason": f"no result within {timeout:.0f} s"}
        else:
            tail = output.decode(errors="replace").strip().splitlines()[-3:]
            result = {
                "status": "error",
                "reason": f"exit code {proc.returncode}: {' | '.join(tail)}"[:300],
            }
    result["wall_s"] = round(elapsed, 2)
    return result


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0.0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024**2
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gb": round(mem, 1),
        "platform": platform.platform(),
    }


def loadavg() -> str:
    """1/5/15-minute load averages: other work on the machine skews every number."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in ("aioexec", "loky", "aiomultiprocess", "aiohttp", "uvloop", "psutil"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument("--only", default="", help=f"comma list of: {','.join(WORKLOADS)}")
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"comma list of: {','.join(ENGINES)} (short names work too)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child-concurrency", type=int, default=16)
    parser.add_argument("--start-method", choices=("spawn", "forkserver"), default="spawn")
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="uvloop in the parent and as the children's loop (async engines)",
    )
    parser.add_argument(
        "--timeout-scale", type=float, default=1.0, help="multiply every per-workload timeout"
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--no-floors", dest="floors", action="store_false", help="skip the floors (floors.py)"
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    by_short = {v.lower(): k for k, v in SHORT.items()} | {e.lower(): e for e in ENGINES}
    try:
        args.engine_list = [by_short[e.strip().lower()] for e in args.engines.split(",") if e]
        args.workload_list = [w.strip() for w in args.only.split(",") if w.strip()] or list(
            WORKLOADS
        )
    except KeyError as exc:
        parser.error(f"unknown engine {exc}")
    for w in args.workload_list:
        if w not in WORKLOADS:
            parser.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    return args


def compile_bytecode() -> None:
    """Byte-compile aioexec and the benchmark modules before any child starts.

    A spawned child imports both; without ``.pyc`` files (an editable install, or
    ``PYTHONDONTWRITEBYTECODE`` set, as on CI machines) every child would compile them from
    source at start-up, which an installed wheel never does (pip compiles at install time).
    The standard library and the peers are installed, so they are compiled already."""
    import importlib.util

    spec = importlib.util.find_spec("aioexec")
    dirs = [ROOT / "benchmarks"]
    if spec is not None and spec.origin is not None:
        dirs.append(Path(spec.origin).parent)
    for directory in dirs:
        compileall.compile_dir(directory, quiet=1, maxlevels=0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    compile_bytecode()
    now = datetime.datetime.now()
    py = platform.python_version()
    meta: dict[str, Any] = {
        "date": now.isoformat(timespec="seconds"),
        "python": py,
        "implementation": platform.python_implementation(),
        "machine": machine_info(),
        "versions": versions(),
        "start_method": args.start_method,
        "workers": args.workers,
        "child_concurrency": args.child_concurrency,
        "repeats": args.repeats,
        "quick": args.quick,
        "uvloop": args.uvloop,
        "engines": args.engine_list,
        "workloads": args.workload_list,
        "floors": args.floors,
        "loadavg_start": loadavg(),
    }
    from benchmarks._common import FULL, QUICK

    meta["params"] = vars(QUICK if args.quick else FULL)
    missing = {e: why for e in args.engine_list if (why := unavailable(e))}
    results: report.Results = {}
    meta["order"] = {}
    for index, workload in enumerate(args.workload_list):
        results[workload] = {}
        # Each workload starts with another engine: a cell that follows another workload's
        # cells (their processes just killed, their memory being freed) may run slower, and
        # no engine should always be the one that pays for it.
        shift = index % len(args.engine_list)
        order = args.engine_list[shift:] + args.engine_list[:shift]
        meta["order"][workload] = order
        if args.floors and WORKLOADS[workload].floor is not None:
            order = [report.FLOOR, *order]  # the floor first: cheap, and the same for all
        for engine in order:
            if engine in missing:
                res: dict[str, Any] = {"status": "n/a", "reason": missing[engine]}
            else:
                res = run_one(engine, workload, args)
            results[workload][engine] = res
            shown = (
                f"{res['value']:.4g}"
                if res.get("status") == "ok"
                else f"{res['status']} {res.get('reason', '')}"[:100]
            )
            print(
                f"  {workload:<12}{report.short(engine):<9}{shown}  ({res.get('wall_s', 0)} s)",
                file=sys.stderr,
                flush=True,
            )
    meta["loadavg_end"] = loadavg()
    print(report.render(results, meta, args.engine_list))
    stem = f"{now:%Y-%m-%d}-{platform.python_implementation().lower()}{py}"
    stem += "-quick" if args.quick else ""
    partial = (
        args.workload_list != list(WORKLOADS)
        or args.engine_list != list(ENGINES)
        or not args.floors
    )
    stem += "-partial" if partial else ""  # a subset never overwrites a whole run
    path = args.out_dir / f"{stem}.json"
    report.write_json(path, results, meta)
    print(f"\nJSON: {path}")
    if not args.no_plot and report.plot(path.with_suffix(".png"), results, meta):
        print(f"plot: {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
