"""How outcomes reach futures: collected under an engine's lock, delivered after it, batched.

Neighbours: an engine records every outcome of a turn in a :class:`Completions` (the
``OutcomeBatch`` of ``_front.engine``: answers from workers, tasks failed by a lost worker or
a broken engine) and calls :meth:`Completions.deliver` once it has released its lock; the
local engine's ``_local.lease.LoopLease`` does the same for the answers an event loop read
itself; ``_front.futures.TaskFuture.settle`` changes a future's state without running its
callbacks, so that they run here. Recognising asyncio's bridge callback is one of the tricks
of ``_cpython``; when it is off, bridges run as plain callbacks.

Why not ``future.set_result()`` in the engine thread, as ``ProcessPoolExecutor`` does: most
callers await through asyncio (``loop.run_in_executor``, ``asyncio.wrap_future``, ``ex.run``),
and each such future carries asyncio's bridge callback, which would write one byte to the
event loop's self-pipe per result. Every such ``send()`` releases the GIL in the middle of
the engine's work, so the loop thread and the engine's thread hand the GIL back and forth once per
result. Here the bridges of one turn go to each event loop as ONE ``call_soon_threadsafe``;
the loop then copies the outcomes into its asyncio futures itself, exactly as the bridge's
scheduled callback would have. Other callbacks run in the engine thread, as before, but
outside the lock, so that a callback may submit work. When an event loop that holds a lease
delivers, its own bridges complete at once, in its thread, and anything else is posted to the
engine thread, so that plain callbacks still run there.

A ``_front.futures.LoopFuture`` (a task awaited in an event loop) has no callbacks of its own to run
here: it is settled in its loop's thread, by the same per-loop batch, or at once when its
own loop delivers. An answer that finds it cancelled (its awaiter gave up) is dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, cast

from .._cpython import SetState, wrap_future_bridge
from .engine import EngineFuture, OutcomeBatch
from .futures import LoopFuture, TaskFuture

__all__ = ["Completions"]

_LOGGER = logging.getLogger("concurrent.futures")

_Callback = Callable[[TaskFuture[Any]], object]
# What a loop runs for one outcome: set_state(destination, source), and what to run instead
# if the loop is closed: a bridge's callback on its source (None: nothing, see _hand_over)
_Copy = tuple[SetState, Any, Any, _Callback | None]
_Outcome = tuple[Any, BaseException | None, bool]  # value, error, cancelled


def _copy_outcomes(loop: asyncio.AbstractEventLoop, copies: list[_Copy]) -> None:
    """In the event loop's thread: settle each asyncio future of the batch."""
    for set_state, destination, source, _ in copies:
        try:
            set_state(destination, source)
        except Exception as exc:
            loop.call_exception_handler(
                {"message": "aioexec: copying a result into its asyncio future", "exception": exc}
            )
            if not destination.done():
                # asyncio's bridge refuses some outcomes (a StopIteration): the awaiter gets
                # the error rather than waiting forever.
                destination.set_exception(exc)


def _settle_loop_future(future: LoopFuture[Any], outcome: _Outcome) -> None:
    """In the future's loop: what ``wrap_future``'s bridge would do with the outcome."""
    if future.done():
        return  # cancelled by its awaiter meanwhile: the answer is dropped
    value, error, cancelled = outcome
    if cancelled:
        asyncio.Future.cancel(future)  # not LoopFuture.cancel: the worker has ended it
    elif error is not None:
        future.set_exception(for_asyncio(error))
    else:
        future.set_result(value)


def for_asyncio(error: BaseException) -> BaseException:
    """``error`` as an asyncio future may hold it (as ``wrap_future`` converts it)."""
    if isinstance(error, StopIteration):
        # asyncio refuses it (TypeError), which would leave the awaiter waiting forever;
        # PEP 479 turns it into a RuntimeError in generators and coroutines too.
        converted = RuntimeError(f"the task raised StopIteration({error})")
        converted.__cause__ = error
        return converted
    # As asyncio.futures._convert_future_exc does: concurrent.futures' own classes become
    # asyncio's (on 3.10 they differ; later, asyncio reuses them).
    if type(error) is concurrent.futures.CancelledError:
        return asyncio.CancelledError(*error.args).with_traceback(error.__traceback__)
    if type(error) is concurrent.futures.InvalidStateError:
        return asyncio.InvalidStateError(*error.args).with_traceback(error.__traceback__)
    if type(error) is concurrent.futures.TimeoutError:
        return asyncio.TimeoutError(*error.args).with_traceback(error.__traceback__)
    return error


class Completions:
    """The outcomes of one engine turn, delivered in order once the lock is released."""

    __slots__ = ("_items", "_later")

    def __init__(self) -> None:
        self._items: list[tuple[EngineFuture, Any, BaseException | None, bool]] = []
        self._later: list[tuple[_Callback, TaskFuture[Any]]] = []  # settled: callbacks only

    def __bool__(self) -> bool:
        return bool(self._items or self._later)

    def result(self, future: EngineFuture, value: Any) -> None:
        self._items.append((future, value, None, False))

    def error(self, future: EngineFuture, error: BaseException) -> None:
        self._items.append((future, None, error, False))

    def cancelled(self, future: EngineFuture) -> None:
        self._items.append((future, None, None, True))

    def absorb(self, other: OutcomeBatch) -> None:
        """Take over what another thread posted here (see ``deliver``)."""
        assert isinstance(other, Completions)
        self._items += other._items
        self._later += other._later

    def deliver(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        post: Callable[[OutcomeBatch], None] | None = None,
    ) -> None:
        """Settle every future, run plain callbacks, and hand each event loop its batch.

        ``loop``, ``post``: an event loop delivers the answers it read under its lease: its
        own bridges complete now, in its thread; plain callbacks, and the outcomes not
        settled when a callback raised, are posted to the engine thread (``post``)."""
        items, self._items = self._items, []
        later, self._later = self._later, []
        per_loop: dict[asyncio.AbstractEventLoop, list[_Copy]] = {}
        # What is left for the engine thread: here, or for a lease loop, what it posts there.
        elsewhere = self if post is None else Completions()
        ran = done = 0
        current: list[tuple[_Callback, TaskFuture[Any]]] = []  # callbacks not run yet
        try:
            for fn, future in later:
                ran += 1
                _run_callback(fn, future)
            for target, value, error, cancelled in items:
                done += 1
                if isinstance(target, LoopFuture):
                    per_loop.setdefault(target.get_loop(), []).append(
                        (_settle_loop_future, target, (value, error, cancelled), None)
                    )
                    continue
                target = cast(TaskFuture[Any], target)  # an engine holds only the two kinds
                callbacks = target.settle_cancelled() if cancelled else target.settle(value, error)
                current = [(fn, target) for fn in callbacks or ()]
                while current:
                    fn, future = current.pop(0)
                    bridge = wrap_future_bridge(fn)
                    if bridge is not None:
                        bridge_to, set_state, destination = bridge
                        per_loop.setdefault(bridge_to, []).append(
                            (set_state, destination, future, fn)
                        )
                    elif post is None:
                        _run_callback(fn, future)
                    else:
                        elsewhere._later.append((fn, future))
        except BaseException:
            # A callback raised SystemExit or the like, which ends the engine thread: the
            # outcomes not settled yet stay for its last deliver().
            elsewhere._later[:0] = later[ran:] + current
            elsewhere._items[:0] = items[done:]
            raise
        finally:
            try:
                mine = per_loop.pop(loop, None) if loop is not None else None
                if mine:
                    _copy_outcomes(loop, mine)  # type: ignore[arg-type]
            finally:
                try:
                    self._hand_over(per_loop)
                finally:
                    if post is not None and elsewhere:
                        post(elsewhere)

    @staticmethod
    def _hand_over(per_loop: dict[asyncio.AbstractEventLoop, list[_Copy]]) -> None:
        for loop, copies in per_loop.items():
            try:
                loop.call_soon_threadsafe(_copy_outcomes, loop, copies)
            except Exception:
                # Closed (or a loop that refuses): each bridge does what it always does
                # then; for a closed loop, that is nothing. A LoopFuture of a closed loop
                # has nobody left to wake.
                for *_, source, bridge_fn in copies:
                    if bridge_fn is not None:
                        _run_callback(bridge_fn, source)


def _run_callback(fn: _Callback, future: TaskFuture[Any]) -> None:
    # As concurrent.futures.Future._invoke_callbacks does.
    try:
        fn(future)
    except Exception:
        _LOGGER.exception("exception calling callback for %r", future)
