"""``AsyncRayExecutor``: the front (``_front``) on the Ray engine (``aioexec.ray._engine``).

Neighbours: a composition root, like ``aioexec._executor`` for the local engine: it checks the
arguments (``_front.options`` for those every engine shares), pickles the actors' start-up
configuration, and joins the front to a ``RayEngine``. ``aioexec.ray`` re-exports the class.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import ray.cloudpickle

from .._front.executor import ExecutorFront
from .._front.options import Fallback, check_fallback, worker_options
from .._front.scheduler import SchedulerSpec
from .._worker.outcome import add_note
from ._actor import actor_class
from ._engine import RayEngine
from ._manager import RayOptions

__all__ = ["AsyncRayExecutor"]

# Set by the engine itself: an actor's concurrency is child_concurrency (+ one plain call),
# and an actor that Ray restarted would have lost its tasks without the driver knowing.
_RESERVED_ACTOR_OPTIONS = (
    "max_concurrency",
    "concurrency_groups",
    "max_restarts",
    "max_task_retries",
    "name",  # and one name cannot be every actor's
    "get_if_exists",
)


class AsyncRayExecutor(ExecutorFront):
    """``AsyncProcessExecutor``'s API on a Ray cluster: each worker is a Ray async actor.

    Submit a coroutine function or a plain function with ``submit``, ``map``, ``run`` (await)
    or ``amap`` (async for): it runs in an actor, and its result, exception (with its own
    type and the actor's traceback as ``__cause__``; never a Ray exception) or cancellation
    comes back as a future. Many coroutines run at once on each actor's event loop; plain
    functions run one at a time per actor, in a thread of the actor.

    As asyncio's default executor it keeps thread semantics for plain callables, exactly as
    ``AsyncProcessExecutor`` does (``aioexec.in_child`` sends one to an actor).

    Work waits in the driver until an actor has room, so cancelling queued work is instant;
    cancelling a running coroutine cancels it in its actor (its ``finally`` runs). An actor
    that is lost (its process or node dies) fails only its own tasks, with
    ``BrokenWorkerError``, and is replaced. Calls are at most once: a lost task is never
    re-run. ``options(timeout=..., stoppable=...)`` works as on ``AsyncProcessExecutor``,
    except that a stoppable plain call is stopped by killing its actor at once (Ray cannot
    interrupt an actor's thread): no ``TaskStopped``, no ``finally``, no ``grace``.

    Args:
        max_workers: how many actors. Default: one per CPU of the cluster, counted when the
            executor connects.
        child_concurrency: how many coroutines run at once in one actor (default 16).
        address: the Ray cluster to connect to (``ray.init(address=...)``). ``None``: the
            Ray this process already initialised, else the Ray instance of this machine,
            else a new local one. ``shutdown`` shuts down only a Ray this executor started.
        ray_init_kwargs: more arguments for ``ray.init`` when the executor calls it.
        actor_options: more options for each actor (``num_cpus``, ``resources``,
            ``runtime_env``...; default ``scheduling_strategy="SPREAD"``). The engine sets
            ``max_concurrency`` and ``max_restarts`` itself.
        initializer: a callable (plain or ``async def``) run once in every actor before its
            first task; if it fails, the executor breaks (``BrokenPoolError``).
        initargs: the initializer's arguments (a tuple).
        loop_factory: makes each actor's event loop for the tasks (e.g.
            ``uvloop.new_event_loop``), run in a thread of the actor; Ray's own loop then
            only relays the calls, which costs two thread hops per call. Default: the tasks
            run on the actor's own Ray loop.
        scheduler: which actor with room gets a task: ``"least-loaded"`` (default),
            ``"round-robin"``, or a :class:`aioexec.Scheduler`.
        fallback: what happens to a call that cannot be pickled even by value (Ray's
            cloudpickle sends lambdas and functions of ``__main__``): ``"thread"`` (default)
            runs it on a thread of this process, ``"error"`` fails its future.
            ``"cloudpickle"`` is accepted and means what ``"error"`` does.

    The work is started lazily: Ray is joined or started, and the actors created, when the
    first task arrives (that takes seconds for a new local Ray; the tasks wait meanwhile).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        child_concurrency: int = 16,
        address: str | None = None,
        ray_init_kwargs: Mapping[str, Any] | None = None,
        actor_options: Mapping[str, Any] | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        scheduler: SchedulerSpec = "least-loaded",
        fallback: Fallback = "thread",
    ) -> None:
        workers = worker_options(
            max_workers, initializer, initargs, None, child_concurrency, scheduler, loop_factory
        )
        if fallback != "cloudpickle":  # Ray brings its own: no package needed
            check_fallback(fallback)
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a str or None, not {type(address).__name__}")
        ray_options = RayOptions(
            address=address,
            ray_init_kwargs=_mapping("ray_init_kwargs", ray_init_kwargs),
            actor_options=_actor_options(actor_options, workers.child_concurrency),
            config=_worker_config(workers.initializer, workers.initargs, workers.loop_factory),
            size_from_cluster=max_workers is None,
        )
        self._ray_engine = RayEngine(workers, ray_options, name=f"aioexec-ray-{id(self):x}")
        super().__init__(self._ray_engine, fallback)

    def _workers(self) -> list[dict[str, Any]]:
        """A snapshot of the actors (for tests and debugging): id, pid, node, ready, calls in
        flight."""
        pool = self._ray_engine._pool
        with pool.lock:
            return [
                {
                    "worker_id": a.worker_id,
                    "pid": a.pid,
                    "node_id": a.node_id,
                    "ready": a.ready,
                    "in_flight": a.in_flight,
                    "handle": a.handle,
                }
                for a in pool.actors.values()
            ]


def _mapping(name: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping (a dict), not {type(value).__name__}")
    return dict(value)


def _actor_options(given: Mapping[str, Any] | None, child_concurrency: int) -> dict[str, Any]:
    options = _mapping("actor_options", given)
    reserved = sorted(set(options) & set(_RESERVED_ACTOR_OPTIONS))
    if reserved:
        raise ValueError(
            f"actor_options may not set {', '.join(reserved)}: the executor sets them "
            "(use child_concurrency for an actor's concurrency)"
        )
    # One more than child_concurrency: the actor's one plain-function slot.
    options = {"scheduling_strategy": "SPREAD", **options, "max_concurrency": child_concurrency + 1}
    actor_class().options(**options)  # Ray checks them now (ValueError, TypeError)
    return options


def _worker_config(
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> bytes:
    """The actors' start-up configuration, pickled now, by value where needed: an argument
    that cannot be sent fails here, at construction, not in every actor."""
    try:
        config: bytes = ray.cloudpickle.dumps(  # type: ignore[no-untyped-call,unused-ignore]
            (initializer, initargs, loop_factory), protocol=5
        )
    except Exception as exc:
        raise add_note(
            exc,
            "aioexec: the initializer, its initargs and the loop_factory are sent to every "
            "Ray actor, so they must be picklable (by Ray's cloudpickle).",
        ) from None
    return config
