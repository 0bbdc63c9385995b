"""Fault helpers sent to child processes by the cancellation, fault and lifecycle tests.

In the style of CPython's ``Lib/test/test_concurrent_futures/test_deadlock.py``: small
functions that crash, exit or raise, and objects whose ``__reduce__`` does so at pickling or
unpickling time. Each has a one-line docstring that says what it induces.

"error" raises an exception, "exit" raises ``SystemExit`` (``sys.exit(1)``), "crash" is a
segfault (``faulthandler._sigsegv``), "os-exit" ends the process with ``os._exit``.

Tests and children coordinate through marker files (written atomically, polled with a
deadline): a task says it started, or that it saw its cancellation, by writing a file; a
test releases a blocked task by writing one.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterable
from pickle import PicklingError, UnpicklingError

# How often waiters look for a marker file, in seconds.
POLL_INTERVAL = 0.01


# -- processes that die or raise ---------------------------------------------------------


def _crash() -> None:
    """Induces a segfault (faulthandler disabled first, so nothing is dumped)."""
    import faulthandler

    faulthandler.disable()
    faulthandler._sigsegv()


def _exit() -> None:
    """Induces a sys exit with exit code 1 (raises SystemExit)."""
    sys.exit(1)


def _os_exit() -> None:
    """Ends the process at once with exit code 3, skipping all cleanup."""
    os._exit(3)


def _raise_error(error_type: type[BaseException], message: str = "induced error") -> None:
    """Raises ``error_type(message)``."""
    raise error_type(message)


class CrashAtPickle:
    """Bad object that triggers a segfault at pickling time."""

    def __reduce__(self) -> tuple[object, ...]:
        _crash()
        raise AssertionError("unreachable")


class CrashAtUnpickle:
    """Bad object that triggers a segfault at unpickling time."""

    def __reduce__(self) -> tuple[object, ...]:
        return _crash, ()


class ExitAtPickle:
    """Bad object that triggers a sys exit at pickling time."""

    def __reduce__(self) -> tuple[object, ...]:
        _exit()
        raise AssertionError("unreachable")


class ExitAtUnpickle:
    """Bad object that triggers a sys exit at unpickling time."""

    def __reduce__(self) -> tuple[object, ...]:
        return _exit, ()


class OsExitAtUnpickle:
    """Bad object that makes the unpickling process call ``os._exit(3)``."""

    def __reduce__(self) -> tuple[object, ...]:
        return _os_exit, ()


class ErrorAtPickle:
    """Bad object that triggers a PicklingError at pickling time."""

    def __reduce__(self) -> tuple[object, ...]:
        raise PicklingError("error in pickle")


class ErrorAtUnpickle:
    """Bad object that triggers an UnpicklingError at unpickling time."""

    def __reduce__(self) -> tuple[object, ...]:
        return _raise_error, (UnpicklingError, "error in unpickle")


def identity(value: object) -> object:
    """Returns its argument (a plain function)."""
    return value


async def async_identity(value: object) -> object:
    """Returns its argument (a coroutine function)."""
    await asyncio.sleep(0)
    return value


def getpid() -> int:
    """Returns the pid of the process running it (a plain function)."""
    return os.getpid()


async def async_getpid() -> int:
    """Returns the pid of the child running it (a coroutine function)."""
    await asyncio.sleep(0)
    return os.getpid()


def raise_error(error_type: type[BaseException]) -> None:
    """Raises ``error_type`` during function execution (a plain function)."""
    _raise_error(error_type)


async def async_raise_error(error_type: type[BaseException]) -> None:
    """Raises ``error_type`` during coroutine execution."""
    await asyncio.sleep(0)
    _raise_error(error_type)


def exit_() -> None:
    """Induces a sys exit during function execution."""
    _exit()


async def async_exit() -> None:
    """Induces a sys exit during coroutine execution."""
    await asyncio.sleep(0)
    _exit()


def crash() -> None:
    """Induces a segfault during function execution."""
    _crash()


async def async_crash() -> None:
    """Induces a segfault during coroutine execution (the whole child dies)."""
    await asyncio.sleep(0)
    _crash()


def os_exit() -> None:
    """Ends the child with ``os._exit(3)`` during function execution."""
    _os_exit()


def return_instance(cls: type) -> object:
    """Returns an instance of ``cls`` (a plain function), so that its result pickling fails."""
    return cls()


async def async_return_instance(cls: type) -> object:
    """Returns an instance of ``cls`` from a coroutine, so that its result pickling fails."""
    await asyncio.sleep(0)
    return cls()


# -- marker files --------------------------------------------------------------------------


def write_marker(path: str, text: str = "") -> None:
    """Writes ``text`` to ``path`` atomically (readers never see a partial file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def wait_for_path(path: str, timeout: float) -> bool:
    """Polls for ``path`` until it exists (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


async def async_wait_for_path(path: str, timeout: float) -> bool:
    """Like :func:`wait_for_path`, without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_INTERVAL)
    return True


async def async_wait_for_cancel(
    started: str, cancelled: str, release: str | None = None, seconds: float = 30.0
) -> str:
    """Marks ``started``, sleeps ``seconds``; cancelled, marks ``cancelled``, awaits ``release``."""
    write_marker(started)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        write_marker(cancelled)
        if release is not None:  # hold the confirmation back until the test allows it
            await async_wait_for_path(release, 30.0)
        raise
    return "not cancelled"


async def async_block_until(started: str, release: str, value: object = None) -> object:
    """Marks ``started``, then waits (at most 30 s) for ``release`` and returns ``value``."""
    write_marker(started)
    await async_wait_for_path(release, 30.0)
    return value


def block_until(started: str, release: str, value: object = None) -> object:
    """Plain function that marks ``started``, then blocks (at most 30 s) for ``release``."""
    write_marker(started)
    wait_for_path(release, 30.0)
    return value


async def async_mark_run(path: str, value: object = None) -> object:
    """Marks ``path`` (this task ran) and returns ``value``."""
    write_marker(path)
    return value


def mark_run(path: str, value: object = None) -> object:
    """Plain function that marks ``path`` (this task ran) and returns ``value``."""
    write_marker(path)
    return value


async def async_report_pid_and_wait(directory: str, index: int, release: str) -> tuple[int, int]:
    """Writes this child's pid to ``directory/started-<index>``, awaits ``release``."""
    write_marker(os.path.join(directory, f"started-{index}"), str(os.getpid()))
    await async_wait_for_path(release, 30.0)
    return index, os.getpid()


def report_pid_and_wait(directory: str, index: int, release: str) -> tuple[int, int]:
    """Plain function: writes the pid to ``directory/started-<index>``, blocks for ``release``."""
    write_marker(os.path.join(directory, f"started-{index}"), str(os.getpid()))
    wait_for_path(release, 30.0)
    return index, os.getpid()


async def async_amap_item(directory: str, index: int) -> int:
    """Item 0 returns at once; others mark started-i, sleep, and mark cancelled-i if cancelled."""
    if index == 0:
        return 0
    write_marker(os.path.join(directory, f"started-{index}"))
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        write_marker(os.path.join(directory, f"cancelled-{index}"))
        raise
    return index


# -- checks run in the test process ----------------------------------------------------------


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (no /proc entry, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    # The state follows the command name, which is in parentheses and may contain spaces.
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def wait_until_gone(pids: Iterable[int], timeout: float) -> set[int]:
    """Polls until every pid in ``pids`` is gone; returns those still running at the deadline."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while True:
        alive = {pid for pid in alive if not process_gone(pid)}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(POLL_INTERVAL)


def descendants(root: int) -> set[int]:
    """Pids of the running (non-zombie) processes below ``root`` in the process tree."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            if pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def kill_all(pids: Iterable[int]) -> None:
    """SIGKILLs whichever of ``pids`` still run (cleanup after a failed test)."""
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
