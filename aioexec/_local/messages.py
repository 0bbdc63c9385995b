"""What other threads tell the manager thread: typed messages in a mailbox, and one wake-up.

Neighbours: ``_local.engine`` (submitting threads, shutdown), the futures' cancel hooks and
``_local.lease`` (an event loop) post here; ``_local.manager`` takes the messages in its
thread, in order, and acts on each (``Manager._handlers``).

A queued submission is posted as its :class:`~aioexec._front.engine.Task` itself (the common
message, so it costs no wrapper); every other message is one of the classes below.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import TypeAlias

from .._engines import CancelAll, Deliver, Shutdown, Terminate
from .._front.engine import EngineFuture, Task
from .pipeio import Wakeup

__all__ = [
    "CancelAll",
    "CancelTask",
    "Deliver",
    "Mailbox",
    "Message",
    "Shutdown",
    "StartChild",
    "Terminate",
]


@dataclass(frozen=True, slots=True)
class CancelTask:
    """A running coroutine's future was cancelled: cancel it in its child."""

    future: EngineFuture


@dataclass(frozen=True, slots=True)
class StartChild:
    """Start a child now, below ``max_workers`` (``submit``, as ProcessPoolExecutor does);
    ``started`` is set on every path, the manager's exit included."""

    started: threading.Event


Message: TypeAlias = "Task | CancelTask | StartChild | Deliver | Shutdown | CancelAll | Terminate"


class Mailbox:
    """Messages for the manager thread, and the wake-up that tells it to look.

    ``post`` is safe from any thread without a lock: ``deque.append`` and ``popleft`` are
    atomic (with or without the GIL), and the wake-up is ordered after the append
    (``Wakeup``'s own lock)."""

    def __init__(self) -> None:
        self.messages: deque[Message] = deque()
        self.wakeup = Wakeup()

    def __bool__(self) -> bool:
        return bool(self.messages)

    def post(self, message: Message) -> None:
        self.messages.append(message)
        self.wakeup.notify()

    def take(self) -> Message | None:
        """The oldest message, or None."""
        try:
            return self.messages.popleft()
        except IndexError:
            return None
