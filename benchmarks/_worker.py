"""Run ONE workload against ONE engine and write the result as JSON (a subprocess of run.py).

``python -m benchmarks._worker --engine loky --workload latency --out r.json [...]``

The result file holds ``{"status": "ok"|"n/a"|"error", "value", "samples", "extra",
"reason", "engine_settings"}``. The orchestrator enforces the timeout and kills this
process group on a hang, so nothing here needs to defend against one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import traceback
from typing import Any

from benchmarks._common import FULL, QUICK
from benchmarks.engines import ENGINES, NotSupported, make_engine
from benchmarks.workloads import WORKLOADS, run_floor, run_workload


async def measure_floor(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the workload's floor (``floors``) and turn the outcome into a result dict."""
    out: dict[str, Any] = {"engine_settings": {"start_method": args.start_method}}
    try:
        p = QUICK if args.quick else FULL
        out.update(await run_floor(args.workload, p, args.repeats, args.start_method))
        out["status"] = "ok"
    except NotSupported as exc:
        out.update(status="n/a", reason=str(exc))
    except Exception as exc:
        out.update(
            status="error",
            reason=f"{type(exc).__name__}: {exc}"[:300],
            traceback=traceback.format_exc(),
        )
    return out


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Build the engine, run the workload, and turn every outcome into a result dict."""
    if args.engine == "floor":
        return await measure_floor(args)
    engine = make_engine(
        args.engine, args.workers, args.start_method, args.child_concurrency, args.uvloop
    )
    out: dict[str, Any] = {"engine_settings": engine.describe()}
    try:
        out.update(
            await run_workload(args.workload, engine, QUICK if args.quick else FULL, args.repeats)
        )
        out["status"] = "ok"
    except NotSupported as exc:
        out.update(status="n/a", reason=str(exc))
    except Exception as exc:  # reported in the table, with the traceback in the JSON
        out.update(
            status="error",
            reason=f"{type(exc).__name__}: {exc}"[:300],
            traceback=traceback.format_exc(),
        )
    finally:
        try:
            await asyncio.wait_for(engine.close(), 60)
        except Exception:  # a pool that fails to close must not hide the measurement
            out.setdefault("close_error", traceback.format_exc())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=(*ENGINES, "floor"), required=True)
    parser.add_argument("--workload", choices=list(WORKLOADS), required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child-concurrency", type=int, default=16)
    parser.add_argument("--start-method", default="spawn")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    result = asyncio.run(measure(args))
    with open(args.out, "w") as f:
        json.dump(result, f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the result is written; do not let a peer's atexit hook hang us


if __name__ == "__main__":
    main()
