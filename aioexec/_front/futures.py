"""The futures of tasks: :class:`TaskFuture` for threads, :class:`LoopFuture` for event loops.

Neighbours: ``_front.executor`` creates one per task; an engine moves it to RUNNING when the
task is sent to a worker (``start_running``, see ``_front.engine.EngineFuture``);
``_front.completion`` settles it from the worker's answer (:meth:`TaskFuture.settle` sets the
outcome and hands the callbacks back, so that they run outside the engine's lock).

``submit`` returns a :class:`TaskFuture`, a ``concurrent.futures.Future`` that any thread may
wait on. A task awaited in an event loop (``loop.run_in_executor``, ``ex.run``) gets a
:class:`LoopFuture` instead: the asyncio future that ``asyncio.wrap_future`` would have
made around a ``TaskFuture``, with nothing in between. It is completed in its loop's thread
(see ``_front.completion``), so it needs no lock, and awaiting it costs what awaiting any asyncio
future costs.

Cancellation rules (the standard library's, plus one):

* PENDING (still queued in the parent): ``cancel()`` returns True and the future is
  CANCELLED and its waiters are notified at once; the engine skips it, so it never runs.
* RUNNING coroutine: ``cancel()`` returns True, the future is CANCELLED at once (waiters
  wake, callbacks run) and the engine is asked to cancel the task in its worker, whose
  ``finally``/``except CancelledError`` blocks then run. The worker's slot is freed when the
  worker confirms; a result racing the cancel is dropped.
* RUNNING plain function: it cannot be interrupted, so ``cancel()`` returns False.
* FINISHED: ``cancel()`` returns False.

All state changes happen under the future's own condition, so a cancel racing the answer
leaves exactly one outcome: ``settle`` on a cancelled future changes nothing and the answer
is dropped.

Every way to wait for an unfinished future (``result()``, ``exception()``, ``wait()`` and
``as_completed()``, which add a waiter, ``add_done_callback``, and polling ``done()`` or
``running()``) is reported to the ``on_wait`` hook first: an event loop's lease on the
answers (``_local.lease``) ends when anyone else may be waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import Any, TypeAlias, TypeVar

from .engine import WaitHook

__all__ = ["AnyTaskFuture", "LoopFuture", "TaskFuture"]

T = TypeVar("T")

_UNFINISHED = (PENDING, RUNNING)


class _Waiters(list):  # type: ignore[type-arg]
    """``Future._waiters``: ``wait()`` and ``as_completed()`` append to it before they block."""

    __slots__ = ("_on_wait",)

    def __init__(self, on_wait: WaitHook) -> None:
        super().__init__()
        self._on_wait = on_wait

    def append(self, waiter: Any) -> None:
        self._on_wait(None)
        super().append(waiter)


class TaskFuture(Future[T]):
    """A future for one task of an :class:`~aioexec.AsyncProcessExecutor`."""

    def __init__(
        self,
        remote_cancel: Callable[[TaskFuture[Any]], None] | None,
        on_wait: WaitHook | None = None,
    ) -> None:
        super().__init__()
        # Called (outside the lock) when a RUNNING coroutine task is cancelled; None for
        # plain functions, whose running calls cannot be interrupted.
        self._remote_cancel = remote_cancel
        self.task_id = 0  # set by the engine when it sends the task to a worker
        self._on_wait = on_wait
        if on_wait is not None:
            self._waiters = _Waiters(on_wait)

    def _note_wait(self, fn: Callable[..., object] | None = None) -> None:
        if self._on_wait is not None and self._state in _UNFINISHED:
            self._on_wait(fn)

    def add_done_callback(self, fn: Callable[[Future[T]], object]) -> None:
        self._note_wait(fn)
        super().add_done_callback(fn)

    def done(self) -> bool:
        self._note_wait()  # polling (``while not f.done(): sleep``) is a wait too
        return super().done()

    def running(self) -> bool:
        self._note_wait()
        return super().running()

    def result(self, timeout: float | None = None) -> T:
        self._note_wait()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._note_wait()
        return super().exception(timeout)

    def cancel(self) -> bool:
        with self._condition:
            state = self._state
            if state == PENDING or (state == RUNNING and self._remote_cancel is not None):
                self._notify_cancelled()
            else:
                return state in (CANCELLED, CANCELLED_AND_NOTIFIED)
        if state == RUNNING and self._remote_cancel is not None:
            self._remote_cancel(self)
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True

    @property
    def cancels_remotely(self) -> bool:
        """True for coroutine tasks, whose running coroutine ``cancel()`` can stop."""
        return self._remote_cancel is not None

    def was_cancelled(self) -> bool:
        """``cancelled()`` without counting as a wait (any thread)."""
        return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)

    def start_running(self) -> bool:
        """Move PENDING to RUNNING and return True; False if the future was cancelled."""
        with self._condition:
            if self._state == PENDING:
                self._state = RUNNING
                return True
            if self._state == CANCELLED:
                self._notify_cancelled()
            return False

    def settle(
        self, result: Any, error: BaseException | None
    ) -> list[Callable[[Future[Any]], object]] | None:
        """``set_result``/``set_exception`` without running the done-callbacks: returns them
        for the caller to run (see ``_completion``), or None if the future was already
        cancelled or done (the outcome is then dropped)."""
        with self._condition:
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED):
                return None
            if error is None:
                self._result = result
                for waiter in self._waiters:
                    waiter.add_result(self)
            else:
                self._exception = error
                for waiter in self._waiters:
                    waiter.add_exception(self)
            self._state = FINISHED
            self._condition.notify_all()
            return self._done_callbacks  # type: ignore[attr-defined,no-any-return]

    def settle_cancelled(self) -> list[Callable[[Future[Any]], object]] | None:
        """The child reports the task ended by cancellation: like :meth:`settle`."""
        with self._condition:
            if self._state not in (PENDING, RUNNING):
                return None
            self._notify_cancelled()
            return self._done_callbacks  # type: ignore[attr-defined,no-any-return]

    def _notify_cancelled(self) -> None:
        # Straight to CANCELLED_AND_NOTIFIED: no executor step is left that would notify the
        # waiters of wait()/as_completed() later, as set_running_or_notify_cancel does.
        self._state = CANCELLED_AND_NOTIFIED
        for waiter in self._waiters:
            waiter.add_cancelled(self)
        self._condition.notify_all()


class LoopFuture(asyncio.Future[T]):
    """The asyncio future of a task awaited in an event loop.

    asyncio's rules apply: only the loop's thread touches it. Cancellation rules, in the
    terms of ``asyncio.wrap_future``, whose future this one replaces: ``cancel()`` cancels
    the future at once and returns True unless it is done; a queued task is then never sent,
    a running coroutine is cancelled in its worker, and a running plain function runs on
    (its slot is freed when it ends) while its result is dropped.

    The engine's threads never read the asyncio state: they read ``_gave_up``, which only
    the loop's thread writes (once, False -> True, in ``cancel``) before it posts the remote
    cancel. A thread that reads it a moment too early sends the task, and the cancel that
    follows reaches the worker behind it: safe with or without the GIL.
    """

    # Class defaults, so that creating one sets only what differs (it is the hot path).
    task_id = 0  # set by the engine when it sends the task to a worker
    _gave_up = False  # cancelled by its awaiter (written by the loop's thread only)
    # Called when a coroutine task is cancelled (posts the cancel to the engine);
    # None for plain functions, whose running calls cannot be interrupted.
    _remote_cancel: Callable[[LoopFuture[Any]], None] | None = None

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg=msg):
            return False
        self._gave_up = True
        if self._remote_cancel is not None:
            # Queued: the engine skips it. Running: the worker is told. Answered: nothing.
            self._remote_cancel(self)
        return True

    @property
    def cancels_remotely(self) -> bool:
        return self._remote_cancel is not None

    def was_cancelled(self) -> bool:
        """True once its awaiter cancelled it (any thread; see the class docstring)."""
        return self._gave_up

    def start_running(self) -> bool:
        """True if the task may be sent; False if its awaiter cancelled it meanwhile."""
        return not self._gave_up


#: What an engine keeps for each task.
AnyTaskFuture: TypeAlias = "TaskFuture[Any] | LoopFuture[Any]"
