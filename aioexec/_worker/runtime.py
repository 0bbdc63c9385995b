"""What runs inside a worker, whatever carries its calls: tasks started, cancelled and answered.

Neighbours: the local child (``_local.child``) feeds a :class:`WorkerRuntime` with the frames it
reads from its pipe and writes its answers back; the Ray actor (``aioexec.ray``) feeds it with
its method calls. Calls arrive pickled (``_worker.codec``); outcomes leave packed
(``_worker.outcome``). This package never imports the front or an engine.

Rules, for every engine:

* Each call is answered exactly once, through ``answer(kind, task_id, body, buffers, copied)``:
  RESULT, ERROR, CANCELLED, or UNDELIVERABLE when its call did not unpickle.
* A coroutine function runs as a task on the worker's loop, started eagerly: it runs up to its
  first suspension at once, so one that never suspends is answered without a trip through
  the loop (``eager_start`` on 3.12+, ``_cpython.run_first_step_now`` before).
* A plain function runs in the worker's one thread (so the loop keeps serving coroutines);
  its result is pickled there too, off the loop. A stoppable one (``start_alone``) runs in
  the loop's own thread instead, in a worker that runs nothing else meanwhile, and the
  worker's stop signal (:meth:`WorkerRuntime.on_stop_signal`) raises :class:`TaskStopped` in
  it: signals reach the main thread only, and they interrupt blocking calls such as
  ``time.sleep``. A stop that comes before the call started is remembered: the call is then
  answered CANCELLED without running.
* ``cancel(task_id)`` cancels a coroutine; the task answers CANCELLED (or its result, if it
  swallowed the cancellation). A task cancelled before its first step ran is answered at once.
  A plain function cannot be interrupted: it runs to its end and answers.
* Nothing a task does (raise ``SystemExit``, return an object that cannot be pickled, raise an
  exception whose ``__reduce__`` raises) reaches the runtime's caller: only its answer says so.
"""

from __future__ import annotations

import asyncio
import inspect
import pickle
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._cpython import run_first_step_now
from .codec import Payload, dumps, out_of_band
from .outcome import Answer, describe_callable, dump_exception, unpickling_advice

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["AnswerFn", "TaskStopped", "WorkerRuntime", "initialize", "new_task", "run_initializer"]

#: ``answer(kind, task_id, body, buffers, copied)``: one task's outcome, ready to frame.
AnswerFn = Callable[..., None]

_EAGER = sys.version_info >= (3, 12)


class TaskStopped(BaseException):
    """Raised inside a stoppable plain call that is stopped (``ex.options(stoppable=True)``
    and ``cancel()``, or a ``timeout``). A ``BaseException``, so that ``except Exception``
    does not swallow it; ``finally`` blocks run. The call's future is already cancelled (or
    failed with ``TaskTimeout``), and its worker is replaced after it."""


def new_task(loop: asyncio.AbstractEventLoop, awaitable: Any) -> asyncio.Future[Any]:
    """A task on ``loop`` (the running one) for a coroutine or any awaitable, started eagerly
    (see the module docstring). A task factory (set by an initializer, say) is respected: it
    gets the coroutine as usual, and its task starts in the loop's next iteration."""
    if not asyncio.iscoroutine(awaitable):
        future: asyncio.Future[Any] = asyncio.ensure_future(awaitable, loop=loop)
        return future
    if loop.get_task_factory() is not None:
        return loop.create_task(awaitable)
    if _EAGER:
        eager: asyncio.Task[Any] = asyncio.Task(awaitable, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        return eager
    task = loop.create_task(awaitable)
    run_first_step_now(loop, task)
    return task


def run_initializer(
    loop: asyncio.AbstractEventLoop, initializer: Callable[..., object], initargs: tuple[Any, ...]
) -> None:
    """Run a sync or async initializer to its end on ``loop`` (not running yet)."""
    outcome = initializer(*initargs)
    if inspect.isawaitable(outcome):
        loop.run_until_complete(_await(outcome))


async def _await(awaitable: Any) -> Any:
    return await awaitable


async def initialize(initializer: Callable[..., object], initargs: tuple[Any, ...]) -> None:
    """Run a sync or async initializer to its end on the running loop (a worker whose loop
    is already running, such as a Ray actor's)."""
    outcome = initializer(*initargs)
    if inspect.isawaitable(outcome):
        await outcome


class WorkerRuntime:
    """The tasks of one worker. Used from its event loop's thread only."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, answer: AnswerFn, main_inherited: bool = False
    ) -> None:
        """``main_inherited``: this worker's ``__main__`` is its parent's, as it was when the
        worker started (a fork), rather than re-imported or absent."""
        self._loop = loop
        self._answer = answer
        # task id -> the asyncio task (coroutines) or future (plain functions) running it
        self.tasks: dict[int, asyncio.Future[Any]] = {}
        self._sync_pool: ThreadPoolExecutor | None = None  # made on the first plain function
        main = sys.modules.get("__main__")
        self._main_path: str | None = getattr(main, "__file__", None)
        self._main_inherited = main_inherited
        self._alone_running = False  # a stoppable call runs: the stop signal raises in it
        self._stop_pending = False  # a stop came while none ran

    def _unpickle(self, task_id: int, body: bytes | memoryview, buffers: Any) -> Any:
        """The call ``(fn, args, kwargs)``, or None when it did not unpickle (answered)."""
        try:
            return pickle.loads(body, buffers=buffers)
        except BaseException as exc:
            advice = unpickling_advice(exc, self._main_path, self._main_inherited)
            self._answer(Answer.UNDELIVERABLE, task_id, dump_exception(exc, advice))
            return None

    def start(
        self, task_id: int, is_async: bool, body: bytes | memoryview, buffers: Any = ()
    ) -> None:
        """Unpickle a call and start it (``buffers``: its out-of-band buffers)."""
        call = self._unpickle(task_id, body, buffers)
        if call is None:
            return
        fn, args, kwargs = call
        if is_async:
            task = new_task(self._loop, self._run_coroutine(task_id, fn, args, kwargs))
            if task.done():  # an eager task that never suspended: already answered
                return
        else:
            if self._sync_pool is None:
                # Imported here: a worker that runs only coroutines never needs it.
                from concurrent.futures import ThreadPoolExecutor

                self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="aioexec-worker-sync")
            task = self._loop.run_in_executor(
                self._sync_pool, _call_and_pack, task_id, fn, args, kwargs
            )
            task.add_done_callback(self._on_plain_done)
        self.tasks[task_id] = task

    def start_alone(self, task_id: int, body: bytes | memoryview, buffers: Any) -> None:
        """Start a stoppable plain call: in the loop's thread, once the frames read with it
        are handled (see :meth:`on_stop_signal`)."""
        call = self._unpickle(task_id, body, buffers)
        if call is None:
            return
        self.tasks[task_id] = self._loop.create_future()  # its slot, until it answers
        self._loop.call_soon(self._run_alone, task_id, *call)

    def on_stop_signal(self) -> None:
        """The worker's stop signal arrived (in the main thread, between two bytecodes)."""
        if self._alone_running:
            raise TaskStopped("aioexec: this call was stopped (cancelled, or past its timeout)")
        self._stop_pending = True

    def _run_alone(self, task_id: int, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            try:
                self._alone_running = True
                if self._stop_pending:
                    raise TaskStopped("stopped before it started")
                result = fn(*args, **kwargs)
            finally:
                self._alone_running = False
        except TaskStopped:
            answer: tuple[Any, ...] = (Answer.CANCELLED, task_id)
        except BaseException as exc:
            answer = (Answer.ERROR, task_id, dump_exception(exc))
        else:
            answer = pack_result(task_id, fn, result)
        self.tasks.pop(task_id).set_result(None)
        self._answer(*answer)

    def cancel(self, task_id: int) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            return  # answered already, or never received
        task.cancel()
        if _not_started(task):
            # Its coroutine never runs, so it cannot answer: answer for it. (A task that a
            # task factory made, or on a loop without eager starts, may be cancelled before
            # its first step.)
            del self.tasks[task_id]
            self._answer(Answer.CANCELLED, task_id)

    def cancel_all(self) -> list[asyncio.Task[Any]]:
        """Cancel every task (the worker is going away); return the coroutine tasks, to wait
        for their unwinding."""
        for task in self.tasks.values():
            task.cancel()
        return [t for t in self.tasks.values() if isinstance(t, asyncio.Task)]

    def close(self, wait: bool) -> None:
        """Stop the plain-function thread (``wait``: let a running call finish first)."""
        if self._sync_pool is not None:
            self._sync_pool.shutdown(wait=wait)

    async def _run_coroutine(
        self, task_id: int, fn: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        try:
            result = await fn(*args, **kwargs)
        except asyncio.CancelledError:
            self.tasks.pop(task_id, None)
            self._answer(Answer.CANCELLED, task_id)
            return
        except BaseException as exc:
            self.tasks.pop(task_id, None)  # absent when the task ran eagerly to its end
            self._answer(Answer.ERROR, task_id, dump_exception(exc))
            return
        self.tasks.pop(task_id, None)
        self._answer(*pack_result(task_id, fn, result))

    def _on_plain_done(self, future: asyncio.Future[tuple[Any, ...]]) -> None:
        if future.cancelled():  # only when the worker goes away
            return
        answer = future.result()
        del self.tasks[answer[1]]
        self._answer(*answer)


def _not_started(task: asyncio.Future[Any]) -> bool:
    get_coro = getattr(task, "get_coro", None)  # a Task; plain functions run in a thread
    coro = get_coro() if get_coro is not None else None
    return inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED


def pack_result(task_id: int, fn: Callable[..., Any], result: object) -> tuple[Any, ...]:
    """The answer for a task that returned ``result``: RESULT, or ERROR if it cannot be
    pickled (whatever its pickling raises)."""
    try:
        if type(result) is tuple:
            sent, wrapped = out_of_band(result)
        else:
            (sent,), wrapped = out_of_band((result,))
        payload = _dumps_result(sent, wrapped)
    except BaseException as exc:
        note = (
            f"aioexec: the result of {describe_callable(fn)} ({type(result).__name__}) could "
            "not be pickled in the worker to send it back; return picklable values "
            "(no locks, sockets, open files, generators or lambdas)."
        )
        return Answer.ERROR, task_id, dump_exception(exc, note)
    return (Answer.RESULT, task_id, *payload)


def _dumps_result(sent: object, wrapped: int) -> Payload:
    """Pickle a result; what plain pickle cannot send goes by value when this worker has
    cloudpickle loaded: it received a call by value, so the parent has cloudpickle too, and
    a class that came by value (defined in the parent's __main__) can only go back so."""
    try:
        return dumps(sent, wrapped)
    except Exception:
        by_value = sys.modules.get("cloudpickle")
        if by_value is None:
            raise
    return dumps(sent, wrapped, by_value)


def _call_and_pack(task_id: int, fn: Callable[..., Any], args: Any, kwargs: Any) -> tuple[Any, ...]:
    """Run a plain function in the worker's thread and pack its outcome there, off the loop."""
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        return Answer.ERROR, task_id, dump_exception(exc)
    return pack_result(task_id, fn, result)
