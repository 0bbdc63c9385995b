"""The executors' constructor arguments: checks, defaults, and the engines' option records.

Neighbours: the composition roots (``aioexec._executor``, ``aioexec.ray``) call
:func:`worker_options` (and the local one :func:`start_context`) from their ``__init__`` and
hand the result to their engine (``_front.engine.WorkerOptions``).

Every bad argument fails at construction, with a message that names the argument, what it
got, and what is accepted. Where ``ProcessPoolExecutor`` checks the same argument, the
exception type is the same (and so is its message, where its own tests read it).
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

from .completion import Completions
from .engine import WorkerOptions
from .scheduler import SchedulerSpec, make_scheduler

__all__ = ["Fallback", "check_fallback", "start_context", "worker_options"]

Fallback = Literal["thread", "error", "cloudpickle"]


def _whole_number(name: str, value: object, minimum: int, message: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(message or f"{name} must be >= {minimum}, not {value}")
    return value


def worker_options(
    max_workers: int | None,
    initializer: Callable[..., object] | None,
    initargs: Any,
    max_tasks_per_child: int | None,
    child_concurrency: int,
    scheduler: SchedulerSpec,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> WorkerOptions:
    """Check the options every engine shares and fill in their defaults."""
    if max_workers is None:
        max_workers = _default_max_workers()
    else:
        _whole_number("max_workers", max_workers, 1, "max_workers must be greater than 0")
    _whole_number("child_concurrency", child_concurrency, 1)
    if max_tasks_per_child is not None:
        _whole_number("max_tasks_per_child", max_tasks_per_child, 1)
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    try:
        initargs = tuple(initargs)
    except TypeError:
        raise TypeError(
            "initargs must be a tuple of the initializer's arguments, not "
            f"{type(initargs).__name__} {initargs!r}"
        ) from None
    if loop_factory is not None and not callable(loop_factory):
        raise TypeError(
            "loop_factory must be a callable that returns a new event loop (such as "
            f"uvloop.new_event_loop), not {type(loop_factory).__name__} {loop_factory!r}"
        )
    return WorkerOptions(
        max_workers=max_workers,
        child_concurrency=child_concurrency,
        max_tasks_per_child=max_tasks_per_child,
        scheduler=make_scheduler(scheduler),
        initializer=initializer,
        initargs=initargs,
        loop_factory=loop_factory,
        new_batch=Completions,
    )


def check_fallback(fallback: object) -> Fallback:
    if fallback not in ("thread", "error", "cloudpickle"):
        raise ValueError(f"fallback must be 'thread', 'error' or 'cloudpickle', not {fallback!r}")
    if fallback == "cloudpickle" and importlib.util.find_spec("cloudpickle") is None:
        raise ValueError(
            "fallback='cloudpickle' needs the cloudpickle package: "
            "pip install 'aioexec-pool[cloudpickle]'"
        )
    return fallback


def start_context(
    mp_context: BaseContext | str | None, max_tasks_per_child: int | None
) -> BaseContext:
    """The multiprocessing context children start with (a context, a start-method name, or
    None: ``forkserver`` on Linux, else ``spawn``; ``spawn`` with ``max_tasks_per_child``, as
    ``ProcessPoolExecutor`` documents)."""
    if isinstance(mp_context, str):
        methods = multiprocessing.get_all_start_methods()
        if mp_context not in methods:
            raise ValueError(
                f"mp_context must be a multiprocessing context or one of the start methods "
                f"{methods}, not {mp_context!r}"
            )
        ctx = multiprocessing.get_context(mp_context)
    elif mp_context is None:
        ctx = multiprocessing.get_context("spawn") if max_tasks_per_child else _default_context()
    elif isinstance(mp_context, BaseContext) or hasattr(mp_context, "Process"):
        ctx = mp_context
    else:
        raise TypeError(
            "mp_context must be a multiprocessing context (multiprocessing.get_context(...)) "
            f"or a start-method name, not {type(mp_context).__name__} {mp_context!r}"
        )
    if max_tasks_per_child is not None and ctx.get_start_method() == "fork":
        raise ValueError(
            "max_tasks_per_child is incompatible with the 'fork' multiprocessing "
            "start method; supply a different mp_context."
        )
    return ctx


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
