"""Where a call runs: a thread of this process, or a worker (the routing rule).

Neighbours: ``_front.executor`` asks :func:`choose_route` for every call, and
:func:`default_executor_call` who called ``submit``; reading the caller relies on
``_cpython``'s tricks. Nothing here does I/O.

The rule (design.md section 3). asyncio's default executor has thread semantics, and code
relies on it (libraries send blocking I/O on objects of this process there), so:

======================================================  ===============  =================
the call reaches the executor through                   plain callable   coroutine function
======================================================  ===============  =================
a loop whose default executor it is                     a thread         a worker
(``run_in_executor(None, ...)``, or
``run_in_executor(ex, ...)`` with ``ex`` that default:
asyncio cannot tell them apart)
the executor's own API (``submit``, ``map``, ``run``,   a worker         a worker
``amap``), ``run_in_executor(ex, ...)`` otherwise
asyncio's own calls (``to_thread``, the resolver,       a thread         -
loop methods), whatever the route
======================================================  ===============  =================

:func:`in_child` sends one plain callable to a worker from a default-executor call. A call
bound for a worker that cannot be pickled follows the executor's ``fallback``.

Who called ``submit``: asyncio's ``run_in_executor`` is recognised from the caller's frame
(``_cpython.run_in_executor_loop``). Where that is impossible (uvloop's ``run_in_executor`` is
compiled, or the trick is off), a plain callable submitted from the thread of a running loop
whose default executor is this one is taken to be a default-executor call: thread semantics
are the safe side, and ``in_child``, ``ex.run`` and ``ex.map`` still reach a worker.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import inspect
import socket
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from .._cpython import (
    is_default_executor,
    run_in_executor_loop,
    running_loop,
    sees_run_in_executor,
)

__all__ = [
    "InChild",
    "Route",
    "choose_route",
    "default_executor_call",
    "in_child",
    "is_coroutine_callable",
]

P = ParamSpec("P")
T = TypeVar("T")

_ASYNCIO_RESOLVERS = (socket.getaddrinfo, socket.getnameinfo)
_CREATE_FUTURE = asyncio.BaseEventLoop.create_future


class Route(enum.Enum):
    THREAD = "a thread of this process"
    WORKER = "a worker"


class InChild(Generic[P, T]):
    """A callable that runs ``fn`` in a worker even from a default-executor call (see
    ``in_child``). Called anywhere else, it simply calls ``fn``."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[P, T]) -> None:
        if not callable(fn):
            raise TypeError(f"in_child() needs a callable, not {type(fn).__name__}")
        self.fn = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"in_child({self.fn!r})"

    def __reduce__(self) -> tuple[type[InChild[P, T]], tuple[Callable[P, T]]]:
        return InChild, (self.fn,)


def in_child(fn: Callable[P, T]) -> InChild[P, T]:
    """Mark ``fn`` to run in a worker process when an ``AsyncProcessExecutor`` is asyncio's
    default executor, where plain callables otherwise run on a thread.

    ```python
    await loop.run_in_executor(None, aioexec.in_child(crunch), data)
    ```

    The result has ``fn``'s signature, so ``run_in_executor`` infers its result type. Through
    the executor's own API (``submit``, ``map``, ``run``) plain functions go to a worker
    anyway; with any other executor, the wrapper just calls ``fn``.
    """
    return InChild(fn)


def is_coroutine_callable(fn: object) -> bool:
    """True when calling ``fn`` returns a coroutine to await (async def, partial of one, or an
    object whose ``__call__`` is async)."""
    if inspect.iscoroutinefunction(fn):
        return True
    if isinstance(fn, type):
        return False
    return inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def _is_asyncio_internal(fn: object) -> bool:
    """True for the callables asyncio itself sends to the default executor."""
    if fn in _ASYNCIO_RESOLVERS:
        return True
    if isinstance(getattr(fn, "__self__", None), asyncio.AbstractEventLoop):
        return True  # loop methods, e.g. in debug mode loop._getaddrinfo_debug
    # asyncio.to_thread sends functools.partial(contextvars.copy_context().run, func, ...)
    return isinstance(fn, functools.partial) and isinstance(
        getattr(fn.func, "__self__", None), contextvars.Context
    )


def choose_route(
    fn: Callable[..., Any], default_call: bool
) -> tuple[Route, Callable[..., Any], bool]:
    """Where ``fn`` runs, the callable to run there (``in_child`` unwrapped), and whether it
    is a coroutine function. ``default_call``: it reached us as a loop's default executor."""
    forced = type(fn) is InChild
    if forced:
        fn = fn.fn  # type: ignore[attr-defined]
    is_async = is_coroutine_callable(fn)
    if _is_asyncio_internal(fn) or (default_call and not is_async and not forced):
        return Route.THREAD, fn, is_async
    return Route.WORKER, fn, is_async


def default_executor_call(
    executor: object, depth: int = 2
) -> tuple[bool, asyncio.AbstractEventLoop | None]:
    """Who called ``executor.submit`` (``depth`` frames above this function): whether it
    was a loop's default-executor call, and the event loop whose ``run_in_executor`` made the
    call if that loop runs in this thread and makes plain asyncio futures (submit may then
    return that loop's future itself, which ``wrap_future`` passes through unchanged)."""
    loop = run_in_executor_loop(depth)
    if loop is not None:
        is_default = is_default_executor(loop, executor)
        if loop is running_loop() and type(loop).create_future is _CREATE_FUTURE:
            return is_default, loop
        return is_default, None
    running = running_loop()
    if running is None or sees_run_in_executor(running):
        return False, None  # not called by run_in_executor: the executor's own API
    return is_default_executor(running, executor), None
