"""The Ray engine's manager thread: Ray itself, the actors' lives, and everything slow.

Data flow::

    first task (_engine.open)  -> thread starts: SESSION.acquire (Ray joined or started, in
                                  its owner thread: seconds), then max_workers actors created
    Ray's thread: hello done   -> Hello: the actor is ready; queued tasks go to it (_calls)
    Ray's thread: watch/run
      failed (actor lost)      -> Lost: its calls fail with BrokenWorkerError; ray.kill;
                                  a replacement starts (3 failed starts in a row: broken)
    a task with a timeout sent -> StartTimeout: a deadline; when it passes, the task fails
                                  with TaskTimeout and is stopped (below)
    a stoppable plain call
      cancelled or timed out   -> StopPlainCall: its actor (which runs nothing else) is
                                  killed and replaced; a coroutine is cancelled in its actor
    Ray's thread: a batch with
      plain callbacks          -> Deliver: they run here, never in Ray's thread
    shutdown / cancel_all /
      terminate (any thread)   -> Shutdown / CancelAll / Terminate
    last call answered         -> CheckIdle: shutting down with nothing left: the actors are
                                  killed, the session released, the thread ends

The hot path (sending calls, reading replies) never comes here (see ``aioexec.ray._calls``).
The thread sleeps in the mailbox's ``get``, no longer than the nearest deadline
(``aioexec._deadlines``): nothing polls.
The scheduling state is the ``ActorPool``, under its lock, which this thread holds for
bookkeeping only: ``ray.kill`` and every other Ray call happen after it is released.
"""

from __future__ import annotations

import functools
import logging
import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from .._deadlines import Deadlines
from .._errors import BrokenPoolError, BrokenWorkerError, TaskTimeout, load_exception
from .._front.engine import EngineFuture
from .._worker.outcome import Answer
from ._actor import actor_class
from ._calls import Calls, describe_error, is_ray_type
from ._messages import (
    CancelAll,
    CheckIdle,
    Deliver,
    Hello,
    Lost,
    Mailbox,
    Message,
    Shutdown,
    StartTimeout,
    StopPlainCall,
    Terminate,
)
from ._pool import ActorPool, RayActor
from ._session import SESSION
from ._wire import decode_reply

__all__ = ["Manager", "RayOptions"]

_LOGGER = logging.getLogger("aioexec")
_START_FAILURES_TO_BREAK = 3  # actors in a row that died before their hello: give up


@dataclass(frozen=True)
class RayOptions:
    """What the Ray engine needs beyond the options every engine shares."""

    address: str | None
    ray_init_kwargs: dict[str, Any]
    actor_options: dict[str, Any]  # for ActorClass.options(); max_concurrency set here
    config: bytes  # the actors' WorkerConfig, pickled with Ray's cloudpickle
    size_from_cluster: bool  # max_workers was None: one actor per CPU of the cluster


class Manager:
    """The manager thread of one Ray engine (see the module docstring)."""

    def __init__(
        self,
        pool: ActorPool,
        options: RayOptions,
        on_size: Callable[[int], None],
        name: str,
    ) -> None:
        self.pool = pool
        self.options = options
        self.mailbox = Mailbox()
        self.calls = Calls(pool, self.post, pool.options.new_batch)
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self._on_size = on_size  # told the number of actors once the cluster is known
        self._connected = False  # the session is held (released when the thread ends)
        self._start_failures = 0  # actors in a row lost before their hello
        self._deadlines = Deadlines()  # task timeouts (this thread only)

    # -- any thread -------------------------------------------------------------------------

    def post(self, message: Message) -> None:
        self.mailbox.post(message)
        if self.pool.exited:
            self._reject_messages()

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        pool = self.pool
        try:
            self._connect()
            while not self._finished():
                message = self.mailbox.take(self._deadlines.wait_time())
                if message is not None:
                    _HANDLERS[type(message)](self, message)
                self._on_deadlines()
        except BaseException as exc:
            _LOGGER.critical("aioexec: the Ray manager thread failed", exc_info=True)
            self._break(f"its manager thread failed: {exc!r}", exc)
        finally:
            with pool.lock:
                actors = list(pool.actors.values())
                for actor in actors:
                    pool.lose(actor, "was stopped at shutdown", lost=False)
                pool.exited = True
            for actor in actors:
                _kill(actor)
            if self._connected:
                SESSION.release()
            self._reject_messages()

    def _finished(self) -> bool:
        """Shutting down (or broken) with nothing queued and nothing in flight."""
        with self.pool.lock:
            return self.pool.shutting_down and self.pool.idle()

    def _reject_messages(self) -> None:
        # Messages that raced the end of this thread: plain callbacks still run; the rest
        # has nothing left to act on.
        while (message := self.mailbox.take_nowait()) is not None:
            if isinstance(message, Deliver):
                message.batch.deliver()

    def _connect(self) -> None:
        options = self.options
        try:
            SESSION.acquire(options.address, options.ray_init_kwargs)
        except Exception as exc:
            self._break(f"Ray could not be joined or started: {exc!r}", exc)
            return
        self._connected = True
        size = self.pool.options.max_workers
        if options.size_from_cluster:
            resources = ray.cluster_resources()  # type: ignore[no-untyped-call,unused-ignore]
            size = max(1, int(resources.get("CPU", 1)))
            self._on_size(size)
        for _ in range(size):
            self._start_actor()

    # -- actors -----------------------------------------------------------------------------

    def _start_actor(self) -> None:
        pool = self.pool
        actor_options = self.options.actor_options
        try:
            handle = actor_class().options(**actor_options).remote(self.options.config)
            hello, watch = handle.hello.remote(), handle.watch.remote()
        except Exception as exc:
            self._break(f"a Ray actor could not be created: {exc!r}", exc)
            return
        with pool.lock:
            actor = pool.add_actor(handle)
        hello.future().add_done_callback(functools.partial(_post_hello, self.post, actor))
        watch.future().add_done_callback(functools.partial(_post_lost, self.post, actor))

    def _hello(self, message: Hello) -> None:
        actor = message.actor
        try:
            reply = message.done.result()
        except Exception as exc:
            self._lost(Lost(actor, exc))
            return
        kind, body, _ = decode_reply(reply)
        if actor.dead:
            return  # killed meanwhile (kill_workers, the executor broke)
        if kind != Answer.RESULT:
            error = load_exception(body)
            self._break(
                f"{actor.describe()} could not start: its initializer or loop_factory "
                f"raised {error!r}",
                error,
            )
            return
        pid, node_id = pickle.loads(body)
        pool = self.pool
        with pool.lock:
            if actor.dead:
                return
            actor.pid, actor.node_id, actor.ready = pid, node_id, True
            sends = pool.reserve()
        self._start_failures = 0
        _LOGGER.info("aioexec: %s is ready", actor.describe())
        self.calls.send(sends)

    def _lost(self, message: Lost) -> None:
        actor, exc = message.actor, message.error
        how = f"was lost ({describe_error(exc)})"
        with self.pool.lock:
            futures = self.pool.lose(actor, how, lost=True)
        if futures is None:
            return  # killed by us, or its loss is known already
        _LOGGER.warning("aioexec: %s %s", actor.describe(), how)
        error_text = (
            f"aioexec: {actor.describe()} {how} while running this task; the executor goes on "
            "with a new actor."
        )
        self._fail(futures, functools.partial(BrokenWorkerError, error_text))
        _kill(actor)
        self._replace(actor, exc)

    def _replace(self, actor: RayActor, exc: BaseException | None) -> None:
        """Start an actor in place of ``actor``, unless the executor stops (or broke)."""
        with self.pool.lock:
            if self.pool.shutting_down or self.pool.broken is not None:
                return
        if exc is not None and not actor.ready:
            self._start_failures += 1
            if self._start_failures >= _START_FAILURES_TO_BREAK:
                self._break(
                    f"{self._start_failures} Ray actors in a row were lost before they "
                    f"started; the last: {describe_error(exc)}",
                    exc,
                )
                return
        self._start_actor()

    # -- timeouts and stoppable calls -------------------------------------------------------

    def _start_timeout(self, message: StartTimeout) -> None:
        self._deadlines.add(message.seconds, message.task_id, grace=False)

    def _on_deadlines(self) -> None:
        pool = self.pool
        for deadline in self._deadlines.expired():
            task_id = deadline.task_id
            with pool.lock:
                actor = pool.running_on.get(task_id)
                if actor is None:
                    continue  # it ended in time
                future = actor.running[task_id]
                if future.was_cancelled():
                    continue  # cancelled meanwhile: stopped already
                pool.totals.failed += 1
                actor.tasks_failed += 1
                pool.timed_out.add(task_id)  # its coming CANCELLED is counted here
                plain = task_id == actor.plain_task_id
            self._fail(
                [future],
                functools.partial(
                    TaskTimeout,
                    f"aioexec: the task ran longer than its timeout of {deadline.seconds} s "
                    f"in {actor.describe()}, and was stopped",
                ),
            )
            if plain:
                self._stop_plain_call(StopPlainCall(actor, task_id, "it ran past its timeout"))
            else:
                self.calls.send_cancel(actor, task_id)

    def _stop_plain_call(self, message: StopPlainCall) -> None:
        """Stop a stoppable plain call: a Ray actor offers no way to interrupt its thread, so
        the actor, which runs nothing else, is killed at once (its ``finally`` blocks do not
        run, ``grace`` is not waited for) and replaced."""
        actor = message.actor
        with self.pool.lock:
            if actor.running.get(message.task_id) is None:
                return  # answered meanwhile
            futures = self.pool.lose(actor, f"was stopped: {message.why}", lost=False)
        if futures is None:
            return
        text = f"aioexec: {actor.describe()} was stopped ({message.why}) while running this task."
        self._fail(futures, functools.partial(BrokenWorkerError, text))
        _kill(actor)
        self._replace(actor, None)

    # -- what other threads ask -------------------------------------------------------------

    def _deliver(self, message: Deliver) -> None:
        message.batch.deliver()

    def _check_idle(self, message: CheckIdle) -> None:
        pass  # the loop's condition does the checking

    def _shutdown(self, message: Shutdown) -> None:
        pool = self.pool
        with pool.lock:
            pool.shutting_down = True
            queued = pool.take_queued() if message.cancel_futures else []
            pool.totals.cancelled += len(queued)
        batch = pool.options.new_batch()
        for future in queued:
            batch.cancelled(future)
        batch.deliver()

    def _cancel_all(self, message: CancelAll) -> None:
        pool = self.pool
        with pool.lock:
            queued = pool.take_queued()
            pool.totals.cancelled += len(queued)
            running = [
                (actor, task_id, future)
                for actor in pool.actors.values()
                for task_id, future in actor.running.items()
                if future.cancels_remotely  # a running plain function cannot be
            ]
        batch = pool.options.new_batch()
        for future in queued:
            batch.cancelled(future)
        for _, _, future in running:
            batch.cancelled(future)
        batch.deliver()
        for actor, task_id, _ in running:
            self.calls.send_cancel(actor, task_id)

    def _terminate(self, message: Terminate) -> None:
        how = "kill_workers()" if message.kill else "terminate_workers()"
        pool = self.pool
        with pool.lock:
            ended = f"was killed by {how}"
            actors = list(pool.actors.values())
            lost = [(actor, pool.lose(actor, ended, lost=False)) for actor in actors]
        for actor, futures in lost:
            text = f"aioexec: {actor.describe()} was killed by {how} while running this task."
            self._fail(futures or [], functools.partial(BrokenWorkerError, text))
            _kill(actor)

    # -- breaking ---------------------------------------------------------------------------

    def _break(self, why: str, cause: BaseException | None) -> None:
        """The executor cannot run work: fail everything, stop every actor."""
        pool = self.pool
        with pool.lock:
            if pool.broken is not None:
                return
            pool.broken = f"aioexec: the executor is broken: {why}"
            pool.shutting_down = True
            # A queued task's future must be moved to running before it fails (unless it
            # was cancelled meanwhile).
            futures = [f for f in pool.take_queued() if f.start_running()]
            pool.totals.failed += len(futures)
            actors = list(pool.actors.values())
            for actor in actors:
                futures += pool.lose(actor, "was stopped: the executor broke", lost=False) or []
        _LOGGER.error("%s", pool.broken)
        broken = pool.broken
        attached = None if cause is None or is_ray_type(cause) else cause

        def error() -> BrokenPoolError:
            exc = BrokenPoolError(broken)
            exc.__cause__ = attached
            return exc

        self._fail(futures, error)
        for actor in actors:
            _kill(actor)

    def _fail(self, futures: list[EngineFuture], error: Callable[[], BaseException]) -> None:
        batch = self.pool.options.new_batch()
        for future in futures:
            batch.error(future, error())
        batch.deliver()


# What the manager does with each kind of message (unbound, as in the local manager: bound
# methods in a dict of the manager's would make a reference cycle).
_HANDLERS: dict[type, Callable[[Manager, Any], None]] = {
    Hello: Manager._hello,
    Lost: Manager._lost,
    StartTimeout: Manager._start_timeout,
    StopPlainCall: Manager._stop_plain_call,
    Deliver: Manager._deliver,
    CheckIdle: Manager._check_idle,
    Shutdown: Manager._shutdown,
    CancelAll: Manager._cancel_all,
    Terminate: Manager._terminate,
}


def _post_hello(post: Callable[[Message], None], actor: RayActor, done: Any) -> None:
    post(Hello(actor, done))  # in Ray's completion thread: hand over, nothing else


def _post_lost(post: Callable[[Message], None], actor: RayActor, done: Any) -> None:
    error = done.exception() if not done.cancelled() else None
    post(Lost(actor, error or RuntimeError("its watch call ended")))


def _kill(actor: RayActor) -> None:
    try:
        ray.kill(actor.handle, no_restart=True)
    except Exception:
        pass  # gone already, or Ray shut down
