"""Every trick that leans on CPython's or asyncio's internals, each with a self-test.

Neighbours: the front (``_front.routing``, ``_front.futures``, ``_front.completion``,
``_front.executor``), the local engine (``_local.lease``, ``_local.child``) and the worker
runtime (``_worker.calls``) call the functions below. This module imports nothing of aioexec,
so that any layer may use it.

Each trick can be switched off. Its self-test exercises the real mechanism once, the first time
the trick is needed (on a private event loop that never runs, or inline on the very object it is
about to touch), and when the test fails (a new Python, a loop subclass, uvloop) the trick
answers "don't know" and its caller takes the portable path: slower, never wrong.
``self_test()`` runs them all, for the test suite.

The tricks, what each reads, and what happens when it is off:

- ``run_in_executor_loop``: the frame that called ``submit`` (asyncio's
  ``BaseEventLoop.run_in_executor`` and its ``self``). Off: routing falls back on
  :func:`is_default_executor` of the loop running in this thread, and no ``LoopFuture`` is
  made (``wrap_future`` bridges instead).
- ``is_default_executor``: ``loop._default_executor``, or for a loop compiled in C (uvloop)
  the objects the gc sees it hold. Off: an unknown loop's default executor is taken to be
  another one.
- ``wrap_future_bridge``: the closure cells of the callback that ``asyncio.wrap_future``
  adds. Off: the bridge runs as a plain callback (one ``call_soon_threadsafe`` per result),
  and ends a loop's lease.
- ``run_first_step_now``: ``loop._ready`` (Python 3.10 and 3.11). Off: a task's first step
  waits for the loop's next iteration.
- ``register_atexit``: ``threading._register_atexit``. Off: ``atexit.register``.
- ``pipe_end_for_child``: ``multiprocessing.reduction.DupFd``. Off: the child receives a
  ``Connection``.
- ``writable_bytes``: a ``bytes`` object's storage, filled through ctypes before anyone sees
  the object (large payloads read straight into the final object). Off: the payload is read
  into a buffer and copied once more.

One more reliance is deliberate and not switchable: ``_front.futures.TaskFuture`` extends
``concurrent.futures.Future`` through its condition/waiter protocol (``_condition``,
``_state``, ``_waiters``, ``_done_callbacks``), as ``ProcessPoolExecutor`` itself does and as
``wait()``/``as_completed()`` require (design.md section 4). :func:`future_protocol_holds`
checks it, and the test suite fails loudly on a Python where it no longer holds.

Thread safety without the GIL: each self-test's verdict is a module global written once
(``None`` -> ``True``/``False``); two threads racing may both run the test and write the same
answer, which is harmless.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
from collections import deque
from collections.abc import Callable
from types import CodeType
from typing import Any

__all__ = [
    "fd_from_parent",
    "future_protocol_holds",
    "is_default_executor",
    "pipe_end_for_child",
    "register_atexit",
    "run_first_step_now",
    "run_in_executor_loop",
    "running_loop",
    "sees_run_in_executor",
    "self_test",
    "wrap_future_bridge",
    "writable_bytes",
]

#: The running event loop of this thread, or None (asyncio's loop-implementer API).
running_loop: Callable[[], asyncio.AbstractEventLoop | None] = asyncio.events._get_running_loop


# -- run_in_executor_loop ------------------------------------------------------------------

_RUN_IN_EXECUTOR: CodeType | None = getattr(asyncio.BaseEventLoop.run_in_executor, "__code__", None)
_run_in_executor_ok: bool | None = None  # the self-test's verdict, once it ran


def run_in_executor_loop(depth: int = 1) -> asyncio.AbstractEventLoop | None:
    """The event loop whose ``run_in_executor`` called the function ``depth`` frames above the
    caller of this one (1: the caller's caller); None if something else called it, or if the
    trick is off."""
    if _run_in_executor_ok is False or _RUN_IN_EXECUTOR is None:
        return None
    try:
        frame = sys._getframe(depth + 1)
    except ValueError:
        return None
    if frame.f_code is not _RUN_IN_EXECUTOR:
        return None
    if _run_in_executor_ok is None and not _test_run_in_executor():
        return None
    loop = frame.f_locals.get("self")
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


def sees_run_in_executor(loop: asyncio.AbstractEventLoop) -> bool:
    """True when :func:`run_in_executor_loop` recognises a call from ``loop``'s
    ``run_in_executor``: the trick is on and the loop uses asyncio's own method."""
    if _run_in_executor_ok is None:
        _test_run_in_executor()
    method = getattr(type(loop), "run_in_executor", None)
    return bool(_run_in_executor_ok) and getattr(method, "__code__", None) is _RUN_IN_EXECUTOR


def _test_run_in_executor() -> bool:
    """Call asyncio's ``run_in_executor`` on a private loop with an executor whose ``submit``
    asks who called it: the answer must be that loop."""
    global _run_in_executor_ok
    seen: list[asyncio.AbstractEventLoop | None] = []
    loop = asyncio.new_event_loop()
    try:

        class Probe(concurrent.futures.Executor):
            def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
                global _run_in_executor_ok
                _run_in_executor_ok = True  # provisionally, so that the lookup below runs
                seen.append(run_in_executor_loop())
                return loop.create_future()  # wrap_future returns it unchanged

        loop.run_in_executor(Probe(), print)
    except Exception:
        seen.clear()
    finally:
        loop.close()
    _run_in_executor_ok = seen == [loop]
    return _run_in_executor_ok


# -- is_default_executor -------------------------------------------------------------------

_NO_ATTRIBUTE = object()
_referents_ok: dict[type, bool] = {}  # per compiled loop type: does the gc show its executor?


def is_default_executor(loop: asyncio.AbstractEventLoop, executor: object) -> bool:
    """True if ``executor`` is ``loop``'s default executor (``set_default_executor``)."""
    default = getattr(loop, "_default_executor", _NO_ATTRIBUTE)
    if default is not _NO_ATTRIBUTE:
        return default is executor  # asyncio's loops and their Python subclasses
    # A loop compiled in C (uvloop) keeps it in a field of its own, which the gc traverses.
    kind = type(loop)
    verdict = _referents_ok.get(kind)
    if verdict is None:
        verdict = _referents_ok[kind] = _test_referents(kind)
    return verdict and any(held is executor for held in gc.get_referents(loop))


def _test_referents(kind: type) -> bool:
    """Make a loop of ``kind``, give it a default executor, and look for it as the gc does."""
    marker = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        loop = kind()
    except Exception:
        return False
    try:
        loop.set_default_executor(marker)
        return any(held is marker for held in gc.get_referents(loop))
    except Exception:
        return False
    finally:
        loop.close()
        marker.shutdown(wait=False)


# -- wrap_future_bridge --------------------------------------------------------------------

# asyncio.futures._chain_future's callback on the concurrent future (Python 3.10 to 3.15).
_BRIDGE = "_chain_future.<locals>._call_set_state"
_BRIDGE_CELLS = ("_set_state", "dest_loop", "destination")
_bridge_cells_at: dict[CodeType, tuple[int, ...]] = {}  # where those are in the closure
_bridge_ok: bool | None = None

#: What a bridge would schedule in its loop: ``set_state(destination, source)``.
SetState = Callable[[Any, Any], None]


def wrap_future_bridge(
    fn: Callable[..., Any],
) -> tuple[asyncio.AbstractEventLoop, SetState, asyncio.Future[Any]] | None:
    """For the callback that ``asyncio.wrap_future`` adds to a concurrent future: its event
    loop, and what it would schedule there; None for any other callback (or with the trick
    off)."""
    if _bridge_ok is False or getattr(fn, "__qualname__", None) != _BRIDGE:
        return None
    if _bridge_ok is None and not _test_bridge():
        return None
    return _read_bridge(fn)


def _read_bridge(
    fn: Callable[..., Any],
) -> tuple[asyncio.AbstractEventLoop, SetState, asyncio.Future[Any]] | None:
    try:
        code = fn.__code__
        where = _bridge_cells_at.get(code)
        if where is None:  # once per asyncio: one code object serves every bridge
            where = _bridge_cells_at[code] = tuple(map(code.co_freevars.index, _BRIDGE_CELLS))
        closure = fn.__closure__ or ()
        set_state, loop, destination = (closure[i].cell_contents for i in where)
    except (AttributeError, IndexError, ValueError, TypeError):
        return None
    if not isinstance(loop, asyncio.AbstractEventLoop) or not asyncio.isfuture(destination):
        return None
    return loop, set_state, destination


def _test_bridge() -> bool:
    """Bridge a concurrent future to a private loop, read the bridge, and run what it would
    schedule: the asyncio future must receive the result."""
    global _bridge_ok
    loop = asyncio.new_event_loop()
    try:
        source: concurrent.futures.Future[int] = concurrent.futures.Future()
        destination = asyncio.wrap_future(source, loop=loop)
        bridges = [b for b in map(_read_bridge, source._done_callbacks) if b is not None]  # type: ignore[attr-defined]
        ok = len(bridges) == 1 and bridges[0][0] is loop and bridges[0][2] is destination
        if ok:
            source.set_result(42)  # the bridge queues its copy on the loop, which never runs
            bridges[0][1](destination, source)  # what that queued copy would do
            ok = destination.done() and destination.result() == 42
    except Exception:
        ok = False
    finally:
        loop.close()
    _bridge_ok = ok
    return ok


# -- run_first_step_now --------------------------------------------------------------------


def run_first_step_now(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    """Python 3.10 and 3.11: run ``task``'s first step now instead of in the loop's next
    iteration (3.12's ``eager_start``). ``create_task`` queued that step as the last handle of
    the loop's ready queue; it is taken back and run here, so the task itself sets the current
    task, as in any step. The self-test is inline: only outside a running task (asyncio
    refuses to enter a task from another), only on asyncio's own loops, and only when that
    last handle is this task's step; otherwise nothing changes."""
    ready = getattr(loop, "_ready", None)
    if not (isinstance(loop, asyncio.BaseEventLoop) and type(ready) is deque and ready):
        return
    handle = ready[-1]
    if getattr(getattr(handle, "_callback", None), "__self__", None) is not task:
        return
    if asyncio.current_task(loop) is not None:
        return
    ready.pop()
    handle._run()


# -- register_atexit -----------------------------------------------------------------------


def register_atexit(fn: Callable[[], object]) -> None:
    """Run ``fn`` at interpreter exit before non-daemon threads are joined, as
    ``concurrent.futures`` does, so that it can stop the threads it owns; else at ``atexit``."""
    register = getattr(__import__("threading"), "_register_atexit", None)
    if callable(register):
        register(fn)
    else:
        import atexit

        atexit.register(fn)


# -- pipe_end_reduction --------------------------------------------------------------------


def pipe_end_for_child(fd: int) -> Any:
    """What to pickle so that a spawned or forkserver child receives a duplicate of ``fd``:
    ``multiprocessing.reduction.DupFd`` (as a ``Connection`` is pickled), which the child
    turns back into a descriptor with :func:`fd_from_parent` without importing
    ``multiprocessing.connection``; else a ``Connection`` on a duplicate of ``fd``."""
    from multiprocessing import reduction

    dup_fd = getattr(reduction, "DupFd", None)
    if dup_fd is not None:
        return dup_fd(fd)
    import os
    from multiprocessing.connection import Connection

    return Connection(os.dup(fd))  # multiprocessing passes a Connection to a child, publicly


def fd_from_parent(received: Any) -> int:
    """The child's side of :func:`pipe_end_for_child`: a descriptor it owns."""
    detach = getattr(received, "detach", None)
    if detach is not None:
        return int(detach())
    import os

    fd = os.dup(received.fileno())
    received.close()
    return fd


# -- writable_bytes ------------------------------------------------------------------------

#: Storage at least this large is asked for transparent huge pages (fewer page faults).
HUGE_PAGES_MIN = 4 * 1024 * 1024
_writable_bytes_ok: bool | None = None
_new_bytes: Any = None  # ctypes' PyBytes_FromStringAndSize(NULL, n), once loaded
_madvise: Any = None


def writable_bytes(n: int) -> tuple[bytes, memoryview] | None:
    """A new ``bytes`` of ``n`` bytes whose storage is not initialised yet, and a writable
    view of that storage, so that a large payload is read from a pipe straight into the
    object that unpickling then hands out (``bytes(b) is b``): no copy, and half the fresh
    memory. None when the trick is off (then the caller reads into a buffer and copies).

    C code may fill a new bytes object before anyone else sees it; this does so from Python
    through ctypes (``PyBytes_FromStringAndSize(NULL, n)``, storage at ``bytes.__basicsize__
    - 1``). The caller must keep the object while it uses the view, and hand the object out
    only once it is filled (its hash is computed later, from the content)."""
    if _writable_bytes_ok is None:
        _test_writable_bytes()
    if not _writable_bytes_ok:
        return None
    obj: bytes = _new_bytes(None, n)
    address = id(obj) + bytes.__basicsize__ - 1
    if n >= HUGE_PAGES_MIN and _madvise is not None:
        start = (address + 4095) & ~4095  # madvise wants whole pages
        _madvise(start, (address + n - start) & ~4095, 14)  # MADV_HUGEPAGE; advice only
    view = memoryview((_ctypes().c_char * n).from_address(address)).cast("B")
    return obj, view


def _ctypes() -> Any:
    import ctypes

    return ctypes


def _test_writable_bytes() -> bool:
    """Fill one through its view; it must equal (and hash as) the same bytes made normally."""
    global _writable_bytes_ok, _new_bytes, _madvise
    try:
        ctypes = _ctypes()
        new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
        new_bytes.restype = ctypes.py_object
        new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
        expected = bytes(range(256)) * 3
        obj = new_bytes(None, len(expected))
        address = id(obj) + bytes.__basicsize__ - 1
        view = memoryview((ctypes.c_char * len(expected)).from_address(address)).cast("B")
        view[:] = expected
        view.release()
        ok = type(obj) is bytes and obj == expected and hash(obj) == hash(bytes(expected))
        try:
            madvise = ctypes.CDLL(None, use_errno=True).madvise
            madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        except (OSError, AttributeError):
            madvise = None
    except Exception:
        ok, new_bytes, madvise = False, None, None
    _new_bytes, _madvise = new_bytes, madvise
    _writable_bytes_ok = ok
    return ok


# -- the future protocol -------------------------------------------------------------------


def future_protocol_holds() -> bool:
    """``concurrent.futures.Future`` still has the internals that ``TaskFuture`` extends."""
    future: concurrent.futures.Future[None] = concurrent.futures.Future()
    names = ("_condition", "_state", "_waiters", "_done_callbacks", "_invoke_callbacks")
    return all(hasattr(future, name) for name in names) and future._state == "PENDING"


def self_test(
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> dict[str, bool]:
    """Run every self-test now; the verdict of each (True: the trick is on).
    ``loop_factory``: the kind of loop to check :func:`is_default_executor` with."""
    loop = (loop_factory or asyncio.new_event_loop)()
    marker = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        loop.set_default_executor(marker)
        default_found = is_default_executor(loop, marker)
    finally:
        loop.close()
        marker.shutdown(wait=False)
    return {
        "run_in_executor_loop": _test_run_in_executor(),
        "wrap_future_bridge": _test_bridge(),
        "is_default_executor": default_found,
        "future_protocol": future_protocol_holds(),
        "writable_bytes": _test_writable_bytes(),
    }
