"""What other threads tell the Ray engine's manager thread: typed messages in a mailbox.

Neighbours: submitting threads and ``shutdown`` (``aioexec.ray._engine``), Ray's completion
thread (``aioexec.ray._calls`` and the callbacks of ``aioexec.ray._manager``) post here; the
manager thread takes them in order and acts on each (``_manager._HANDLERS``). A blocking
``get`` on a ``queue.SimpleQueue`` is the manager's only wait: nothing polls.
"""

from __future__ import annotations

import concurrent.futures
import queue
from dataclasses import dataclass
from typing import Any, TypeAlias

from .._engines import CancelAll, Deliver, Shutdown, Terminate
from ._pool import RayActor

__all__ = [
    "CancelAll",
    "CheckIdle",
    "Deliver",
    "Hello",
    "Lost",
    "Mailbox",
    "Message",
    "Shutdown",
    "StartTimeout",
    "StopPlainCall",
    "Terminate",
]


@dataclass(frozen=True, slots=True)
class Hello:
    """A new actor's ``hello`` call ended (``done``: its ``ObjectRef.future()``)."""

    actor: RayActor
    done: concurrent.futures.Future[Any]


@dataclass(frozen=True, slots=True)
class Lost:
    """A call of ``actor`` (``watch`` or ``run``) failed with ``error``: the actor is gone."""

    actor: RayActor
    error: BaseException


@dataclass(frozen=True, slots=True)
class StartTimeout:
    """A task with a ``timeout`` was sent: stop it if it runs ``seconds`` longer."""

    task_id: int
    seconds: float


@dataclass(frozen=True, slots=True)
class StopPlainCall:
    """Stop the stoppable plain call ``task_id`` of ``actor`` (``why``): the actor goes."""

    actor: RayActor
    task_id: int
    why: str


@dataclass(frozen=True, slots=True)
class CheckIdle:
    """Shutting down, the last call was answered: stop if nothing is left."""


Message: TypeAlias = (
    "Hello | Lost | StartTimeout | StopPlainCall | Deliver | CheckIdle | Shutdown | CancelAll"
    " | Terminate"
)


class Mailbox:
    """Messages for the manager thread, safe to post from any thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()

    def post(self, message: Message) -> None:
        self._queue.put(message)

    def take(self, timeout: float | None) -> Message | None:
        """The oldest message; blocks until there is one, or ``timeout`` seconds (None)."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def take_nowait(self) -> Message | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None
