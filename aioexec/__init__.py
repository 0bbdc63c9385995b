"""aioexec: a ``concurrent.futures`` executor whose workers are child processes running asyncio.

``AsyncProcessExecutor`` sends each submitted call (a coroutine function or a plain function)
to a child process; many coroutines run concurrently in each child's event loop. Results,
exceptions and cancellations come back as futures. See the README for the contract.
"""

from ._errors import (
    BrokenPoolError,
    BrokenWorkerError,
    DeliveryError,
    RemoteError,
    RemoteTraceback,
)
from ._executor import AsyncProcessExecutor
from ._scheduler import LeastLoaded, RoundRobin, Scheduler

__all__ = [
    "AsyncProcessExecutor",
    "BrokenPoolError",
    "BrokenWorkerError",
    "DeliveryError",
    "LeastLoaded",
    "RemoteError",
    "RemoteTraceback",
    "RoundRobin",
    "Scheduler",
]

__version__ = "0.1.0"
