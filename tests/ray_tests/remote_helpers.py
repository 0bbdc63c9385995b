"""Functions that the contract tests and the Ray tests send to workers of either engine.

Workers import this module by name (``ray_tests.remote_helpers``): a local child inherits
``sys.path``, and the Ray session fixture puts ``tests/`` on every Ray worker's
``PYTHONPATH``. Side effects that the test checks are files in a directory it passes in (the
nodes of the test cluster all run on this machine).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import time

_running = 0


async def async_echo(value: object) -> object:
    return value


async def sleep_and_count(seconds: float) -> int:
    """Sleep; return how many of these were running in this worker when this one started."""
    global _running
    _running += 1
    try:
        seen = _running
        await asyncio.sleep(seconds)
        return seen
    finally:
        _running -= 1


async def hold_until_released(directory: str, key: str, timeout: float) -> int:
    """Mark where this call runs (file ``started-<key>-<pid>``), then wait until the file
    ``release`` exists (at most ``timeout`` s); return the pid."""
    pid = os.getpid()
    folder = pathlib.Path(directory)
    (folder / f"started-{key}-{pid}").touch()
    deadline = time.monotonic() + timeout
    while not (folder / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key}: not released within {timeout} s")
        await asyncio.sleep(0.01)
    return pid


async def wait_with_finally(directory: str, key: str, seconds: float) -> str:
    """Mark the start, wait, and mark the ``finally`` block when it runs (cancelled or not)."""
    pathlib.Path(directory, f"started-{key}").touch()
    try:
        await asyncio.sleep(seconds)
        return "slept"
    finally:
        pathlib.Path(directory, f"finally-{key}").touch()


async def sleep_then_mark(directory: str, key: str, seconds: float) -> None:
    """Mark ``done-<key>`` only if the coroutine runs to its end."""
    await asyncio.sleep(seconds)
    pathlib.Path(directory, f"done-{key}").touch()


def mark(directory: str, key: str) -> None:
    """Mark ``done-<key>`` (a plain function)."""
    pathlib.Path(directory, f"done-{key}").touch()


async def raise_base(kind: str) -> None:
    """Raise SystemExit or KeyboardInterrupt from a coroutine."""
    await asyncio.sleep(0)
    if kind == "exit":
        raise SystemExit(3)
    raise KeyboardInterrupt


def plain_raise_system_exit() -> None:
    raise SystemExit(4)


def files(directory: str | pathlib.Path, prefix: str) -> list[str]:
    """The names of the marker files with this prefix (driver side)."""
    return sorted(p.name for p in pathlib.Path(directory).glob(f"{prefix}*"))


class MarkedLoop(asyncio.SelectorEventLoop):
    """An event loop a test's ``loop_factory`` makes, recognisable by its class's module."""


def marked_loop() -> asyncio.AbstractEventLoop:
    return MarkedLoop()


def not_a_loop() -> object:
    return "not an event loop"


async def running_loop_class() -> str:
    return type(asyncio.get_running_loop()).__name__


_init_loop = ""


async def record_init_loop() -> None:
    """An async initializer: remember the class of the loop it ran on."""
    global _init_loop
    _init_loop = type(asyncio.get_running_loop()).__name__


async def init_loop() -> str:
    return _init_loop


async def sleep_and_pid(seconds: float) -> int:
    await asyncio.sleep(seconds)
    return os.getpid()
