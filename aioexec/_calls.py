"""What a submitted call is: where it may run, how it crosses to a child, how chunks run.

Neighbours: ``_executor`` classifies and pickles each call here before handing it to
``_manager``; ``_child`` runs the chunk helpers below (they are module-level so that a child
can import them by reference). No I/O happens here.

The routing rule (design.md section 3): asyncio's own work (``asyncio.to_thread``,
``loop.getaddrinfo``/``getnameinfo``, methods bound to an event loop) always runs on the
executor's threads in this process; anything else that cannot be pickled follows the
executor's ``fallback`` setting.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import pickle
import socket
import sys
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

from ._protocol import Payload, dumps, out_of_band, out_of_band_kwargs
from ._remote_exc import add_note

__all__ = [
    "cloudpickle_call",
    "describe_callable",
    "is_asyncio_internal",
    "is_coroutine_callable",
    "new_task",
    "pickle_call",
    "run_chunk",
    "run_chunk_async",
    "run_coroutine_function",
]

_ASYNCIO_RESOLVERS = (socket.getaddrinfo, socket.getnameinfo)


def is_asyncio_internal(fn: object) -> bool:
    """True for the callables asyncio itself sends to the default executor."""
    if fn in _ASYNCIO_RESOLVERS:
        return True
    if isinstance(getattr(fn, "__self__", None), asyncio.AbstractEventLoop):
        return True  # loop methods, e.g. in debug mode loop._getaddrinfo_debug
    # asyncio.to_thread sends functools.partial(contextvars.copy_context().run, func, ...)
    return isinstance(fn, functools.partial) and isinstance(
        getattr(fn.func, "__self__", None), contextvars.Context
    )


def is_coroutine_callable(fn: object) -> bool:
    """True when calling ``fn`` returns a coroutine to await (async def, partial of one, or an
    object whose ``__call__`` is async)."""
    if inspect.iscoroutinefunction(fn):
        return True
    if isinstance(fn, type):
        return False
    return inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def describe_callable(fn: object) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return repr(fn)
    return f"{module}.{name}" if module else str(name)


def pickle_call(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Payload:
    """Pickle a call for a child; on failure, raise the pickling error with a note that names
    the object that could not be pickled and says what to do.

    The out-of-band buffers still point into the caller's objects (no copy) until the
    call is written to the child's pipe."""
    return _pickle_call(fn, args, kwargs, pickle)


def cloudpickle_call(
    fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Payload:
    """Pickle a call with cloudpickle, which sends lambdas, nested functions and functions of
    ``__main__`` by value (``fallback="cloudpickle"``). The child unpickles it with the
    standard ``pickle``; it needs cloudpickle installed too."""
    import cloudpickle  # an optional extra: imported only when this fallback is used

    return _pickle_call(fn, args, kwargs, cloudpickle)


_NO_KWARGS: dict[str, Any] = {}  # pickled, never changed


def _pickle_call(
    fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], pickler: Any
) -> Payload:
    try:
        sent_args, wrapped = out_of_band(tuple(args))
        if kwargs:
            sent_kwargs, wrapped_kwargs = out_of_band_kwargs(dict(kwargs))
            wrapped += wrapped_kwargs
        else:
            sent_kwargs = _NO_KWARGS
        return dumps((fn, sent_args, sent_kwargs), wrapped, pickler)
    except Exception as exc:
        raise add_note(exc, _explain_pickling_failure(fn, args, kwargs, pickler)) from None


def _unpicklable_part(
    fn: object, args: Sequence[Any], kwargs: Mapping[str, Any], pickler: Any
) -> str:
    parts: list[tuple[str, object]] = [("the function", fn)]
    parts += [(f"positional argument {i}", a) for i, a in enumerate(args)]
    parts += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for what, obj in parts:
        try:
            pickler.dumps(obj, protocol=5, buffer_callback=lambda _: None)
        except Exception:
            return f"{what} ({type(obj).__name__} {_short_repr(obj)})"
    return "the call"


def _short_repr(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception:
        return f"<{type(obj).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _explain_pickling_failure(
    fn: object, args: Sequence[Any], kwargs: Mapping[str, Any], pickler: Any = pickle
) -> str:
    what = _unpicklable_part(fn, args, kwargs, pickler)
    advice = (
        "Functions sent to a child must be importable by it: define them at module level, "
        "not as a lambda or nested function."
        if what.startswith("the function")
        else "Arguments sent to a child must be picklable (no locks, sockets, open files, "
        "generators or lambdas)."
    )
    return (
        f"aioexec: could not pickle {what} of the call to {describe_callable(fn)}, so it "
        f"cannot be sent to a child process. {advice} Or create the executor with "
        "fallback='thread' to run such calls in a thread of this process"
        + ("." if pickler is pickle else "; cloudpickle could not send it either.")
    )


def run_coroutine_function(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> Any:
    """Run a coroutine function that stays in this process (fallback) in its own loop."""
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(fn(*args, **kwargs))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


_EAGER = sys.version_info >= (3, 12)


def new_task(loop: asyncio.AbstractEventLoop, awaitable: Any) -> asyncio.Future[Any]:
    """A task on ``loop`` (the running one) for a coroutine or any awaitable.

    A coroutine starts eagerly: it runs up to its first suspension now, so one that never
    suspends costs no trip through the loop's ready queue, and its first step already sees
    itself as the current task. On Python 3.12+ that is ``eager_start``; before, the task's
    own first step, which ``create_task`` just queued, runs at once (see ``_step_now``). A
    task factory (set by an initializer, say) is respected: it gets the coroutine as usual,
    and its task starts in the loop's next iteration."""
    if not asyncio.iscoroutine(awaitable):
        future: asyncio.Future[Any] = asyncio.ensure_future(awaitable, loop=loop)
        return future
    if loop.get_task_factory() is not None:
        return loop.create_task(awaitable)
    if _EAGER:
        eager: asyncio.Task[Any] = asyncio.Task(awaitable, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        return eager
    task = loop.create_task(awaitable)
    _step_now(loop, task)
    return task


def _step_now(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    """Python 3.10 and 3.11: run ``task``'s first step now instead of in the loop's next
    iteration. ``create_task`` queued that step as the last handle of the loop's ready
    queue; it is taken back and run here, so the task itself sets the current task, as in
    any step. Only outside a running task (asyncio refuses to enter a task from another),
    and only on asyncio's own loops, whose ready queue is known; else nothing changes."""
    ready = getattr(loop, "_ready", None)
    if not (isinstance(loop, asyncio.BaseEventLoop) and type(ready) is deque and ready):
        return
    handle = ready[-1]
    if getattr(handle._callback, "__self__", None) is not task:
        return
    if asyncio.current_task(loop) is not None:
        return
    ready.pop()
    handle._run()


def run_chunk(fn: Callable[..., Any], chunk: Iterable[tuple[Any, ...]]) -> list[Any]:
    """Run one chunk of ``map(fn, ..., chunksize=n)`` in a child."""
    return [fn(*args) for args in chunk]


async def run_chunk_async(
    fn: Callable[..., Coroutine[Any, Any, Any]], chunk: Iterable[tuple[Any, ...]]
) -> list[Any]:
    """Run one chunk of coroutine calls concurrently in a child; results in input order.

    The first failure (or a cancellation of the chunk) cancels the calls still running, and
    every call is awaited before this returns, so none outlives its chunk.
    """
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Future[Any]] = []
    try:
        for args in chunk:
            tasks.append(new_task(loop, fn(*args)))
        return [await t for t in tasks]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
