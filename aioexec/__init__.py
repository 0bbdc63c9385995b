"""aioexec: a ``concurrent.futures`` executor whose workers are child processes running asyncio.

``AsyncProcessExecutor`` sends each submitted call (a coroutine function or a plain function)
to a child process; many coroutines run concurrently in each child's event loop. Results,
exceptions and cancellations come back as futures. See the README for the contract.

The names below are imported on first use (PEP 562): a child process imports this package
only to reach ``aioexec._local.child``, and should not pay for the parent's side at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._errors import (
        BrokenPoolError,
        BrokenWorkerError,
        DeliveryError,
        RemoteError,
        RemoteTraceback,
        TaskTimeout,
    )
    from ._executor import AsyncProcessExecutor
    from ._front.completed import AsCompleted
    from ._front.engine import Scheduler, Stats, TaskOptions, WorkerLoad, WorkerStats
    from ._front.mapping import AsyncMapIterator, MapIterator
    from ._front.routing import InChild, in_child
    from ._front.scheduler import LeastLoaded, RoundRobin
    from ._worker.runtime import TaskStopped

__all__ = [
    "AsCompleted",
    "AsyncMapIterator",
    "AsyncProcessExecutor",
    "BrokenPoolError",
    "BrokenWorkerError",
    "DeliveryError",
    "InChild",
    "LeastLoaded",
    "MapIterator",
    "RemoteError",
    "RemoteTraceback",
    "RoundRobin",
    "Scheduler",
    "Stats",
    "TaskOptions",
    "TaskStopped",
    "TaskTimeout",
    "WorkerLoad",
    "WorkerStats",
    "in_child",
]

__version__ = "0.1.0"

_MODULE_OF = {
    "AsyncProcessExecutor": "._executor",
    "BrokenPoolError": "._errors",
    "BrokenWorkerError": "._errors",
    "DeliveryError": "._errors",
    "RemoteError": "._errors",
    "RemoteTraceback": "._errors",
    "TaskTimeout": "._errors",
    "TaskStopped": "._worker.runtime",
    "Stats": "._front.engine",
    "TaskOptions": "._front.engine",
    "WorkerStats": "._front.engine",
    "AsCompleted": "._front.completed",
    "AsyncMapIterator": "._front.mapping",
    "MapIterator": "._front.mapping",
    "InChild": "._front.routing",
    "in_child": "._front.routing",
    "LeastLoaded": "._front.scheduler",
    "RoundRobin": "._front.scheduler",
    "Scheduler": "._front.engine",
    "WorkerLoad": "._front.engine",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups do not come here again
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
