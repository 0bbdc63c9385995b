"""Functions and classes that tests send to child processes (importable by module name)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import time
from collections.abc import Callable, Iterator


async def async_double(x: int) -> int:
    return 2 * x


def double(x: int) -> int:
    return 2 * x


async def async_pid() -> int:
    return os.getpid()


def pid() -> int:
    return os.getpid()


async def async_sleep(seconds: float, value: object = None) -> object:
    await asyncio.sleep(seconds)
    return value


def sleep(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


# --- running calls, map, payloads, errors, initializers (core acceptance tests) -------------


async def async_call_record(*args: object, **kwargs: object) -> tuple[int, tuple, dict]:
    """Return (child pid, args, kwargs) as the child saw them, from a coroutine."""
    await asyncio.sleep(0)
    return os.getpid(), args, kwargs


def call_record(*args: object, **kwargs: object) -> tuple[int, tuple, dict]:
    """Return (child pid, args, kwargs) as the child saw them, from a plain function."""
    return os.getpid(), args, kwargs


async def async_running_loop_module() -> str:
    """The module of the child's running event loop class ("asyncio...." or "uvloop")."""
    return type(asyncio.get_running_loop()).__module__


def deterministic_bytes(nbytes: int, seed: int) -> bytes:
    """``nbytes`` pseudo-random bytes, the same in every process for the same seed."""
    import random

    return random.Random(seed).randbytes(nbytes)


def sha256_hexdigest(data: bytes) -> str:
    """The SHA-256 of ``data``, computed where this runs (the child)."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def raise_value_error(message: str) -> None:
    raise ValueError(message)  # raise_value_error's raising line


async def async_raise_value_error(message: str) -> None:
    await asyncio.sleep(0)
    raise ValueError(message)  # async_raise_value_error's raising line


class TwoArgumentError(Exception):
    """Passes one of its two arguments to super(): pickles, but cannot be rebuilt."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(first)
        self.second = second


def raise_two_argument_error() -> None:
    raise TwoArgumentError("first argument", "second argument")


class LockHoldingError(Exception):
    """Holds a lock in its __dict__, so that it cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        import threading

        self.lock = threading.Lock()


async def async_raise_lock_holding_error() -> None:
    raise LockHoldingError("an error holding a lock")


def return_lock() -> object:
    """Return an unpicklable object (a lock)."""
    import threading

    return threading.Lock()


def return_child_only_instance() -> object:
    """Return an instance of a class that exists only in the child (so the parent cannot
    unpickle it): the class is attached to this module in the child process only."""
    import sys

    module = sys.modules[__name__]
    cls = getattr(module, "ChildOnlyResultClass", None)
    if cls is None:
        cls = type("ChildOnlyResultClass", (), {"__module__": __name__})
        module.ChildOnlyResultClass = cls  # type: ignore[attr-defined]
    return cls()


_init_value: object = None


def set_init_value(value: object) -> None:
    """Sync initializer: record ``value`` in this child's globals."""
    global _init_value
    _init_value = value


async def async_set_init_value(value: object) -> None:
    """Async initializer: record ``value`` in this child's globals after awaiting."""
    global _init_value
    await asyncio.sleep(0)
    _init_value = value


async def async_read_init_value(hold: float = 0.0) -> tuple[int, object]:
    """(child pid, what the initializer recorded); holds the child busy for ``hold`` s."""
    await asyncio.sleep(hold)
    return os.getpid(), _init_value


def record_pid_then_fail(path: str) -> None:
    """Initializer: append this child's pid to ``path``, then fail."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    raise ValueError("initializer exploded on purpose")


async def async_sleep_then_block_when_cancelled(seconds: float) -> None:
    """Sleep; if cancelled, block the child's event loop (so it never confirms the cancel)."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        time.sleep(seconds)
        raise


async def async_double_or_fail(x: int) -> int:
    """2 * x, or ValueError for a negative x."""
    await asyncio.sleep(0)
    if x < 0:
        raise ValueError(f"negative input {x}")
    return 2 * x


class KeepsItsBuffer:
    """Pickles its data out of band and, unpickled, keeps the received buffer itself (no
    copy), as zero-copy containers such as numpy arrays do."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: object) -> tuple[object, tuple[object]]:
        return KeepsItsBuffer, (pickle.PickleBuffer(self.data),)


def echo(value: object) -> object:
    return value


async def async_echo_many(*values: object, **named: object) -> tuple[object, ...]:
    """Return the positional arguments, then the keyword arguments' values in order."""
    return (*values, *named.values())


async def async_has_current_task() -> bool:
    """Whether asyncio.current_task() knows the running coroutine (eager start included)."""
    return asyncio.current_task() is not None


async def async_current_task_id(_: object = None) -> int:
    """id() of the task running this coroutine (each call must get its own)."""
    task = asyncio.current_task()
    assert task is not None
    return id(task)


# The executor a parent-side test exposes to objects unpickled in the parent (see below).
PARENT_EXECUTOR: list[object] = []
SUBMITTED_WHILE_UNPICKLING: list[object] = []


def _rebuild_and_submit() -> str:
    executor = PARENT_EXECUTOR[0]
    SUBMITTED_WHILE_UNPICKLING.append(executor.submit(double, 21))  # type: ignore[attr-defined]
    return "rebuilt"


@contextlib.contextmanager
def submitting_when_unpickled(executor: object) -> Iterator[list[object]]:
    """Expose ``executor`` to :class:`SubmitsWhenUnpickled`; yields the list of the futures
    submitted while unpickling."""
    PARENT_EXECUTOR[:] = [executor]
    SUBMITTED_WHILE_UNPICKLING.clear()
    try:
        yield SUBMITTED_WHILE_UNPICKLING
    finally:
        PARENT_EXECUTOR.clear()


class SubmitsWhenUnpickled:
    """Unpickling this (in the parent, where results are unpickled: the manager thread)
    submits a task to ``PARENT_EXECUTOR[0]``."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _rebuild_and_submit, ()


async def async_submits_when_unpickled() -> SubmitsWhenUnpickled:
    return SubmitsWhenUnpickled()


def install_recording_task_factory() -> None:
    """Initializer: a task factory that marks the tasks it makes."""

    def factory(loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> asyncio.Task:
        task = asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]
        task.made_by_factory = True  # type: ignore[attr-defined]
        return task

    asyncio.get_event_loop().set_task_factory(factory)  # type: ignore[arg-type]


async def async_made_by_task_factory() -> bool:
    return getattr(asyncio.current_task(), "made_by_factory", False)


async def async_made_by_task_factory_of(_: object) -> bool:
    return await async_made_by_task_factory()


async def write_file(path: str) -> None:
    """Create ``path``: a side effect a test can wait for without the task's future."""
    with open(path, "w") as f:
        f.write("done")


async def async_block_loop_until(started: str, release: str) -> str:
    """Blocks the child's event loop itself (no await) from writing ``started`` until
    ``release`` exists (at most 30 s), so that frames queue up in its pipe meanwhile."""
    from faults import wait_for_path, write_marker

    write_marker(started)
    wait_for_path(release, 30.0)
    return "unblocked"


class Counter:
    """A plain object of the parent's, mutated by a bound method sent to the executor."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def add(self, value: int) -> int:
        self.calls.append(value)
        return len(self.calls)


def where() -> tuple[int, str]:
    """(pid, thread name) of the caller: where did the call run?"""
    import threading

    return os.getpid(), threading.current_thread().name


async def async_where() -> tuple[int, str]:
    return where()


async def async_sleep_recording_finally(seconds: float, path: str) -> None:
    """Sleep; whatever ends the sleep, append this process's pid to ``path``."""
    try:
        await asyncio.sleep(seconds)
    finally:
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")


def where_pid(_: object = None) -> int:
    """This process's pid (a map-friendly ``pid``)."""
    return os.getpid()


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.01) -> None:
    """Poll ``condition`` until it is true, at most ``timeout`` seconds (for tests only)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition!r}")
        time.sleep(interval)


def sleep_recording_finally(seconds: float, path: str, started: str = "") -> str:
    """A plain call that sleeps (after creating ``started``, if given); however it ends, it
    appends this process's pid to ``path``."""
    if started:
        with open(started, "w"):
            pass
    try:
        time.sleep(seconds)
        return "slept"
    finally:
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")


def sleep_ignoring_stops(seconds: float, started: str) -> str:
    """A plain call that swallows every exception, TaskStopped included, and sleeps on."""
    with open(started, "w"):
        pass
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(max(0.0, deadline - time.monotonic()))
        except BaseException:
            pass
    return "outlived every stop"
