"""The hot path of the Ray engine: calls sent, replies read, cancels sent; no thread hop.

Neighbours: ``aioexec.ray._engine`` (a submitting thread) and ``aioexec.ray._manager`` (an
actor said hello) hand :meth:`Calls.send` the tasks they reserved in the ``ActorPool``;
replies come back here in Ray's completion thread; what is slow goes to the manager thread
as a message (``aioexec.ray._messages``). Requests and replies are the bytes of
``aioexec.ray._wire``; exceptions are rebuilt by ``_errors``.

Data flow of one call::

    submitting thread                     Ray's completion thread (ObjectRef.future() callback)
    pool.lock: queue, reserve a slot
    run.remote(request)  --- Ray --->     actor.run(request) ... reply
                                          _on_reply: pool.lock: free the slot, reserve the
                                          next queued task; unpickle the outcome; deliver
                                          (asyncio bridges to their loops, plain callbacks
                                          posted to the manager thread); send the next task

Why in Ray's thread, not the manager's: each thread hand-off waits for a run queue on a busy
machine; routing submit and completion through a manager thread (three hand-offs per call
instead of raw Ray's one) measured up to 1.3x raw Ray's time per call (prototype). What may
block or take long never runs here: ``ray.kill``, actor replacement, and plain user
callbacks (a callback that blocks would stall every Ray reply of the process).

Every task sent ends exactly once: with its reply, with ``BrokenWorkerError`` when its actor
is lost (``_manager``), or with ``BrokenPoolError`` when the engine breaks; whichever comes
first takes it out of the pool (``take_running``), and the others find it gone.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import pickle
import threading
from collections.abc import Callable
from typing import Any

from ray.exceptions import RayActorError

from .._errors import BrokenWorkerError, load_exception, undeliverable
from .._front.engine import EngineFuture, OutcomeBatch
from .._worker.outcome import Answer
from ._messages import CheckIdle, Deliver, Lost, Message, StartTimeout, StopPlainCall
from ._pool import ActorPool, RayActor, Send
from ._wire import decode_reply, encode_request

__all__ = ["Calls", "describe_error", "in_ray_callback", "is_ray_type", "ray_failure"]

_LOGGER = logging.getLogger("aioexec")
_RefFuture = concurrent.futures.Future[Any]  # an ObjectRef's future(), set in Ray's thread
_callback_state = threading.local()  # .active: this thread runs one of our Ray callbacks


def in_ray_callback() -> bool:
    return getattr(_callback_state, "active", False)


class Calls:
    """Sends calls and reads their replies (see the module docstring)."""

    def __init__(
        self,
        pool: ActorPool,
        post: Callable[[Message], None],
        new_batch: Callable[[], OutcomeBatch],
    ) -> None:
        self._pool = pool
        self._post = post
        self._new_batch = new_batch
        self._deliver_later = lambda batch: post(Deliver(batch))

    def send(self, sends: list[Send]) -> None:
        """Send reserved tasks (no lock held: a ``.remote()`` may wait for Ray)."""
        pending = collections.deque(sends)
        while pending:
            actor, task_id, task = pending.popleft()
            try:
                ref = actor.handle.run.remote(encode_request(task_id, task.is_async, task.call))
                done = ref.future()
                done.add_done_callback(functools.partial(self._on_reply, actor, task_id))
                if task.options is not None and task.options.timeout is not None:
                    self._post(StartTimeout(task_id, task.options.timeout))
            except BaseException as exc:
                # Ray refused the call (shut down underneath us?), or an interruption: the
                # task must not stay counted as running, or shutdown would wait for it.
                error = ray_failure(exc, f"{actor.describe()} refused it")
                pending += self._fail(actor, task_id, error)
                if not isinstance(exc, Exception):
                    self.send(list(pending))
                    raise

    def cancel(self, future: EngineFuture) -> None:
        """A running task's future was cancelled: a coroutine is cancelled by its actor
        (control group); a stoppable plain call is stopped with its actor (manager thread)."""
        task_id = future.task_id
        with self._pool.lock:
            actor = self._pool.running_on.get(task_id)
            plain = actor is not None and task_id == actor.plain_task_id
        if actor is None:
            return  # queued (never sent now), or answered already
        if plain:
            self._post(StopPlainCall(actor, task_id, "its stoppable call was cancelled"))
        else:
            self.send_cancel(actor, task_id)

    def send_cancel(self, actor: RayActor, task_id: int) -> None:
        # Sent even if run.remote() of the task is not issued yet (another thread reserved
        # its slot a moment ago): the actor then keeps a tombstone (see ``_actor``).
        try:
            actor.handle.cancel.remote(task_id)
        except Exception:
            _LOGGER.debug("aioexec: could not send a cancel to %s", actor.describe(), exc_info=True)

    # -- Ray's completion thread ------------------------------------------------------------

    def _on_reply(self, actor: RayActor, task_id: int, done: _RefFuture) -> None:
        _callback_state.active = True
        try:
            self._take_reply(actor, task_id, done)
        except Exception:  # a bug: never let it escape into Ray's thread unseen
            _LOGGER.critical("aioexec: handling a Ray reply failed", exc_info=True)
        finally:
            _callback_state.active = False

    def _take_reply(self, actor: RayActor, task_id: int, done: _RefFuture) -> None:
        try:
            reply = done.result()
        except RayActorError as exc:
            self._post(Lost(actor, exc))  # its other calls fail too: the manager's job
            return
        except BaseException as exc:  # a Ray error of this call only; the actor lives on
            failure = ray_failure(exc, f"Ray failed it on {actor.describe()}")
            self.send(self._fail(actor, task_id, failure))
            return
        outcome, value, error = read_reply(reply, actor)  # before the lock: it may unpickle
        pool = self._pool
        sends: list[Send] = []
        with pool.lock:
            future = pool.take_running(actor, task_id)
            if future is not None:
                pool.count(actor, task_id, outcome)
                sends = pool.reserve()
            wake = pool.shutting_down and pool.idle()
        if future is not None:
            batch = self._new_batch()
            if outcome == "cancelled":
                batch.cancelled(future)
            elif error is not None:
                batch.error(future, error)
            else:
                batch.result(future, value)
            batch.deliver(None, post=self._deliver_later)
            self.send(sends)
        if wake:
            self._post(CheckIdle())

    def _fail(self, actor: RayActor, task_id: int, error: BaseException) -> list[Send]:
        """Fail one task that was not answered; return the tasks its slot now lets go."""
        pool = self._pool
        with pool.lock:
            future = pool.take_running(actor, task_id)
            sends: list[Send] = []
            if future is not None:
                pool.count(actor, task_id, "failed")
                sends = pool.reserve()
            wake = pool.shutting_down and pool.idle()
        if future is not None:
            batch = self._new_batch()
            batch.error(future, error)
            batch.deliver(None, post=self._deliver_later)
        if wake:
            self._post(CheckIdle())
        return sends


def read_reply(reply: bytes, actor: RayActor) -> tuple[str, Any, BaseException | None]:
    """The outcome a reply carries: ("done", value, None), ("failed", None, error) or
    ("cancelled", None, None). An outcome that cannot be unpickled here fails this task
    only, with ``DeliveryError``."""
    kind, body, buffers = decode_reply(reply)
    if kind == Answer.CANCELLED:
        return "cancelled", None, None
    try:
        if kind == Answer.RESULT:
            return "done", pickle.loads(body, buffers=buffers), None
        error = load_exception(body)
    except BaseException as exc:
        what = "the result" if kind == Answer.RESULT else "the exception"
        return (
            "failed",
            None,
            undeliverable(
                exc,
                f"{what} of this task, sent by {actor.describe()}, could not be unpickled in "
                "the driver; the classes of returned objects and exceptions must be importable "
                "and picklable in this process too",
            ),
        )
    if kind == Answer.UNDELIVERABLE:
        error = undeliverable(
            error, f"{actor.describe()} could not unpickle this task's function or arguments"
        )
    return "failed", None, error


def ray_failure(exc: BaseException, what: str) -> BrokenWorkerError:
    """A call that Ray itself failed (not the task): ``BrokenWorkerError`` naming Ray's error,
    which is not attached (no Ray exception type ever reaches the user)."""
    return BrokenWorkerError(
        f"aioexec: this task was lost: {what} ({describe_error(exc)}); the executor goes on."
    )


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message``, for Ray's errors, which run over many lines."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def is_ray_type(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module == "ray" or module.startswith("ray.")
