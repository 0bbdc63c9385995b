"""The executor's constructor arguments: validation, defaults, and the manager's config.

Neighbours: ``_executor`` calls :func:`resolve_options` from ``AsyncProcessExecutor.__init__``
and keeps what it returns; the :class:`~aioexec._manager.ManagerConfig` goes to the manager.
Errors are those ``ProcessPoolExecutor`` raises for the same arguments, same messages.
"""

from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing
import os
import sys
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import Any, Literal

from ._child import ChildConfig
from ._manager import ManagerConfig
from ._scheduler import SchedulerSpec, make_scheduler

__all__ = ["Fallback", "resolve_options"]

Fallback = Literal["thread", "error", "cloudpickle"]


def resolve_options(
    max_workers: int | None,
    mp_context: BaseContext | None,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    max_tasks_per_child: int | None,
    child_concurrency: int,
    scheduler: SchedulerSpec,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    fallback: Fallback,
) -> ManagerConfig:
    """Check the arguments and fill in the defaults; raise as ProcessPoolExecutor does."""
    if max_workers is None:
        max_workers = _default_max_workers()
    elif max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")
    if child_concurrency < 1:
        raise ValueError("child_concurrency must be >= 1")
    if fallback not in ("thread", "error", "cloudpickle"):
        raise ValueError(f"fallback must be 'thread', 'error' or 'cloudpickle', not {fallback!r}")
    if fallback == "cloudpickle" and importlib.util.find_spec("cloudpickle") is None:
        raise ValueError(
            "fallback='cloudpickle' needs the cloudpickle package: "
            "pip install 'aioexec-pool[cloudpickle]'"
        )
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    if mp_context is None and max_tasks_per_child is not None:
        # ProcessPoolExecutor's documented default for max_tasks_per_child.
        ctx: BaseContext = multiprocessing.get_context("spawn")
    else:
        ctx = mp_context if mp_context is not None else _default_context()
    if max_tasks_per_child is not None:
        if not isinstance(max_tasks_per_child, int):
            raise TypeError("max_tasks_per_child must be an integer")
        if max_tasks_per_child <= 0:
            raise ValueError("max_tasks_per_child must be >= 1")
        if ctx.get_start_method() == "fork":
            raise ValueError(
                "max_tasks_per_child is incompatible with the 'fork' multiprocessing "
                "start method; supply a different mp_context."
            )
    return ManagerConfig(
        ctx=ctx,
        max_workers=max_workers,
        child_concurrency=child_concurrency,
        max_tasks_per_child=max_tasks_per_child,
        scheduler=make_scheduler(scheduler),
        child=ChildConfig(initializer, tuple(initargs), loop_factory),
    )


def _default_max_workers() -> int:
    if hasattr(os, "process_cpu_count"):  # 3.13+
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _default_context() -> BaseContext:
    methods = multiprocessing.get_all_start_methods()
    method = "forkserver" if sys.platform == "linux" and "forkserver" in methods else "spawn"
    return multiprocessing.get_context(method)
