"""The engine interface: the one door between the front and an engine.

Neighbours: the front (``_front.executor``) decides where a call runs, makes its future, and
hands each call bound for a worker to an :class:`Engine`. The engines are
``aioexec._local.engine.LocalEngine`` (child processes on this machine) and
``aioexec.ray._engine.RayEngine`` (Ray actors). An engine reports every task's outcome into an
:class:`OutcomeBatch` that the front made (``_front.completion.Completions``), and delivers
the batch once it holds no lock; it never settles a future itself.

Imports go one way: the front imports this module and never an engine; an engine imports
this module, ``aioexec._errors`` and the worker runtime (``aioexec._worker``), never the rest
of the front. A composition root (``aioexec._executor.AsyncProcessExecutor``,
``aioexec.ray.AsyncRayExecutor``) joins the front to one engine.

What an engine promises (the front and the tests rely on each):

* ``submit`` never blocks on a worker's work, may be called from any thread (a done-callback
  and the unpickling of an answer included), and raises ``RuntimeError`` once the engine
  was shut down;
* every submitted task ends exactly once: with its answer, ``BrokenWorkerError`` when its
  worker was lost (only that worker's tasks), ``BrokenPoolError`` when the engine broke as a
  whole, or cancelled;
* a queued task whose future was cancelled never runs; ``cancel(future)`` of a running
  coroutine task cancels it in its worker;
* ``shutdown`` lets submitted work finish (``cancel_futures``: what has not started is
  cancelled), then stops every worker; ``join`` returns once they all are gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NewType, Protocol, runtime_checkable

from .._errors import BrokenPoolError, BrokenWorkerError, DeliveryError

__all__ = [
    "BrokenPoolError",
    "BrokenWorkerError",
    "DeliveryError",
    "Engine",
    "EngineFuture",
    "OutcomeBatch",
    "Scheduler",
    "Stats",
    "Task",
    "TaskOptions",
    "WaitHook",
    "WorkerId",
    "WorkerLoad",
    "WorkerOptions",
    "WorkerStats",
    "stops_plain_call",
]

#: Called by a future before anyone waits on it: with the done-callback being added, or None
#: for a blocking wait (``result()``, ``wait()``...). See ``_local.lease``.
WaitHook = Callable[[Callable[..., object] | None], None]


class EngineFuture(Protocol):
    """What an engine may do with a task's future (``_front.futures``)."""

    #: Set by the engine when it sends the task to a worker (0 before).
    task_id: int

    def start_running(self) -> bool:
        """Mark it running before the task is sent; False if it was cancelled (then the
        task must never run)."""
        ...

    @property
    def cancels_remotely(self) -> bool:
        """True for a coroutine task, whose running coroutine ``cancel()`` stops."""
        ...

    def was_cancelled(self) -> bool:
        """True once cancelled (queued work that is cancelled is skipped, never run)."""
        ...


@dataclass(frozen=True)
class TaskOptions:
    """Per-call options (``ex.options(...)``), checked by the front.

    ``timeout``: seconds a task may run (counted from when a worker starts it); then a
    coroutine is cancelled in its worker and a plain call is stopped, and the future fails
    with ``TaskTimeout``. ``stoppable``: a plain call runs alone in a worker, so that
    ``cancel()`` (or the timeout) can stop it: it is interrupted, and its worker killed if it
    has not stopped ``grace`` seconds later; either way that worker is replaced.
    """

    timeout: float | None = None
    stoppable: bool = False
    grace: float = 1.0


class Task:
    """One call on its way to a worker: its future, the call as the engine prepared it
    (``Engine.prepare``), whether it is a coroutine function, and its options."""

    __slots__ = ("call", "future", "is_async", "options", "resend")

    def __init__(
        self,
        future: EngineFuture,
        call: Any,
        is_async: bool,
        options: TaskOptions | None = None,
    ) -> None:
        self.future = future
        self.call = call
        self.is_async = is_async
        self.options = options
        # Sent once to a worker that, it turned out, could not have received it (a closed
        # pipe): its future is running already; an engine sends it again, elsewhere.
        self.resend = False

    @property
    def stoppable(self) -> bool:
        """A plain call that must run alone in its worker, so that it can be stopped."""
        return stops_plain_call(self.is_async, self.options)


def stops_plain_call(is_async: bool, options: TaskOptions | None) -> bool:
    """True for a plain call that ``cancel()`` or a timeout must be able to stop."""
    return (
        options is not None and not is_async and (options.stoppable or options.timeout is not None)
    )


class OutcomeBatch(Protocol):
    """Outcomes collected by an engine, then delivered in one go outside its locks."""

    def __bool__(self) -> bool: ...

    def result(self, future: EngineFuture, value: Any) -> None: ...

    def error(self, future: EngineFuture, error: BaseException) -> None: ...

    def cancelled(self, future: EngineFuture) -> None: ...

    def absorb(self, other: OutcomeBatch) -> None:
        """Take over the outcomes another thread collected."""
        ...

    def deliver(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        post: Callable[[OutcomeBatch], None] | None = None,
    ) -> None:
        """Settle every future and run their callbacks. ``loop``: the event loop delivering
        (its own asyncio futures settle at once); ``post``: where to send what must run in
        the engine's thread instead (plain callbacks)."""
        ...


#: A worker's number in its executor: 0, 1, 2... in the order they started.
WorkerId = NewType("WorkerId", int)


class WorkerLoad(Protocol):
    """What a scheduler may know of one worker."""

    @property
    def worker_id(self) -> WorkerId: ...

    @property
    def in_flight(self) -> int:
        """Tasks sent to the worker and not yet answered."""
        ...


@runtime_checkable
class Scheduler(Protocol):
    """Chooses a worker for a task among candidates that all have room for it (the
    ``scheduler`` argument of the executors; ``_front.scheduler`` has the built-in ones)."""

    def choose(self, candidates: Sequence[WorkerLoad]) -> WorkerLoad:
        """Return one element of ``candidates`` (never empty)."""
        ...


@dataclass(frozen=True)
class WorkerStats:
    """One worker, as ``ex.stats()`` saw it."""

    worker_id: int
    pid: int
    state: str  # "starting", "ready", or "retiring" (takes no more work)
    coroutines: int  # coroutine tasks running in it
    plain_calls: int  # plain calls running in it (at most one)
    tasks_done: int  # tasks it answered (or lost with it)
    tasks_failed: int  # of those, how many failed
    started_at: float  # time.time() when it started
    replaced: str | None  # how the worker it replaced ended, e.g. "was killed by SIGKILL"


@dataclass(frozen=True)
class Stats:
    """A snapshot of an executor (``ex.stats()``): cheap, nothing asks a worker."""

    workers: tuple[WorkerStats, ...]
    queued: int  # tasks waiting in this process for a worker with room
    tasks_sent: int  # tasks sent to workers so far
    tasks_done: int  # answered with a result
    tasks_failed: int  # failed (their exception, a lost worker, a broken executor)
    tasks_cancelled: int  # cancelled in the worker or before they were sent
    workers_started: int
    workers_retired: int  # ended when asked (max_tasks_per_child, shutdown, a stopped call)
    workers_lost: int  # ended unasked: a crash, a signal, os._exit
    thread_calls: int  # calls run on this process's threads (see the routing rule)
    broken: str | None  # why the executor cannot run work, or None


@dataclass(frozen=True)
class WorkerOptions:
    """The options every engine shares, checked by ``_front.options``."""

    max_workers: int
    child_concurrency: int
    max_tasks_per_child: int | None
    scheduler: Scheduler
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
    new_batch: Callable[[], OutcomeBatch]


class Engine(Protocol):
    """What the front needs from an engine."""

    options: WorkerOptions

    def prepare(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        by_value: bool,
    ) -> Any:
        """Make a call ready to send, in the caller's thread. Raises the pickling error
        (with a note naming the object at fault) when it cannot be sent; ``by_value``: send
        functions of ``__main__`` by value (cloudpickle)."""
        ...

    def open(self) -> None:
        """Get ready to take work (start threads) before a task's future is made; raise
        ``RuntimeError`` (shut down, or inherited by a fork) or ``BrokenPoolError`` if no
        work can be taken. Cheap when the engine is open."""
        ...

    def submit(self, task: Task) -> None:
        """Send ``task`` to a worker now, or queue it until one has room (after ``open``)."""
        ...

    def cancel(self, future: EngineFuture) -> None:
        """The future of a running coroutine task was cancelled: cancel it in its worker."""
        ...

    def cancel_all(self) -> None:
        """Cancel queued tasks and running coroutines (leaving a block on an exception)."""
        ...

    @property
    def wait_hook(self) -> WaitHook | None:
        """What the futures report their waits to (None: the engine does not care)."""
        ...

    @property
    def broken(self) -> str | None:
        """Why the engine cannot run work any more, or None."""
        ...

    def in_engine_thread(self) -> bool:
        """True in a thread of the engine's own (a done-callback, an unpickled answer)."""
        ...

    def shutdown(self, cancel_futures: bool) -> None:
        """Take no more work; stop the workers once the submitted work is done."""
        ...

    def join(self) -> None:
        """Wait until every worker and thread of the engine has stopped."""
        ...

    def terminate(self, kill: bool) -> None:
        """Stop every worker now (SIGTERM, or SIGKILL with ``kill``); their tasks fail."""
        ...

    def stats(self) -> Stats:
        """A snapshot (``thread_calls`` is the front's: 0 here)."""
        ...
