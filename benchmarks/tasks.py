"""Functions that the benchmarks send to worker processes.

Everything here is module-level so that every engine can pickle it by reference, and the
module imports only the standard library at import time: a spawned child that unpickles
``benchmarks.tasks.noop_async`` must not pay for aiohttp unless it runs an HTTP task.

Each workload has an ``*_async`` variant (for engines that run coroutines: aioexec,
aiomultiprocess) and a plain variant (for ProcessPoolExecutor and loky).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

# ---- trivial tasks -------------------------------------------------------------------------


def noop(x: int = 0) -> int:
    """Return the argument: the cheapest task there is."""
    return x


async def noop_async(x: int = 0) -> int:
    """Coroutine twin of :func:`noop`."""
    return x


def getpid(_: int = 0) -> int:
    """Return the worker's process id."""
    return os.getpid()


async def getpid_async(_: int = 0) -> int:
    """Coroutine twin of :func:`getpid`."""
    return os.getpid()


def getpid_after(seconds: float) -> int:
    """Hold the worker for ``seconds``, then return its process id: a batch of these reaches
    every worker of a large pool (a worker busy with one cannot take the others)."""
    time.sleep(seconds)
    return os.getpid()


async def getpid_after_async(seconds: float) -> int:
    """Coroutine twin of :func:`getpid_after`."""
    await asyncio.sleep(seconds)
    return os.getpid()


# ---- sleeping ------------------------------------------------------------------------------


def sleep(seconds: float) -> float:
    """Block the worker for ``seconds`` (the only choice for sync-only engines)."""
    time.sleep(seconds)
    return seconds


async def sleep_async(seconds: float) -> float:
    """Yield to the child's loop for ``seconds``."""
    await asyncio.sleep(seconds)
    return seconds


# ---- payloads ------------------------------------------------------------------------------


def echo(data: bytes) -> bytes:
    """Send the payload back (4 MiB in, 4 MiB out)."""
    return data


async def echo_async(data: bytes) -> bytes:
    """Coroutine twin of :func:`echo`."""
    return data


# ---- CPU-bound -----------------------------------------------------------------------------


def spin(n: int) -> int:
    """A pure-Python loop of ``n`` iterations (calibrated to about 50 ms by the workload)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


async def spin_async(n: int) -> int:
    """Coroutine wrapper of :func:`spin` for engines that accept only coroutines."""
    return spin(n)


def spin_report(n: int) -> tuple[int, float, float]:
    """:func:`spin`, reporting who ran it and when: (pid, start, end) on CLOCK_MONOTONIC
    (``time.perf_counter`` on Linux), a clock every process shares, so the parent can lay
    the children's work on one time line."""
    start = time.perf_counter()
    spin(n)
    return os.getpid(), start, time.perf_counter()


async def spin_report_async(n: int) -> tuple[int, float, float]:
    """Coroutine twin of :func:`spin_report`: CPU-bound, it never awaits."""
    start = time.perf_counter()
    spin(n)
    return os.getpid(), start, time.perf_counter()


# ---- HTTP ----------------------------------------------------------------------------------

_SESSION: Any = None  # one aiohttp.ClientSession per child process (bound to its loop)
_SESSION_LOOP: Any = None
_CONN: Any = None  # one http.client.HTTPConnection per sync worker process
_CONN_KEY: tuple[str, int] | None = None


async def http_get_async(url: str, count: int) -> int:
    """Do ``count`` GETs of ``url`` with this child's shared ClientSession; return bytes read."""
    global _SESSION, _SESSION_LOOP
    import aiohttp

    loop = asyncio.get_running_loop()
    if _SESSION is None or _SESSION_LOOP is not loop or _SESSION.closed:
        _SESSION = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        _SESSION_LOOP = loop
    received = 0
    for _ in range(count):
        async with _SESSION.get(url) as resp:
            received += len(await resp.read())
    return received


def http_get(url: str, count: int) -> int:
    """Sync twin of :func:`http_get_async`: one keep-alive http.client connection per worker."""
    global _CONN, _CONN_KEY
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    key = (parts.hostname or "127.0.0.1", parts.port or 80)
    if _CONN is None or key != _CONN_KEY:
        _CONN = http.client.HTTPConnection(*key, timeout=30)
        _CONN_KEY = key
    received = 0
    for _ in range(count):
        _CONN.request("GET", parts.path or "/")
        received += len(_CONN.getresponse().read())
    return received


# ---- cancellation and crashes --------------------------------------------------------------


def _notify(path: str, tag: str) -> None:
    """Send ``tag`` and this process's monotonic clock to the datagram socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(f"{tag} {time.perf_counter()!r} {os.getpid()}".encode(), path)


async def cancellable_async(path: str, seconds: float) -> str:
    """Announce the start, sleep, and report the moment ``CancelledError`` arrives.

    ``time.perf_counter`` is CLOCK_MONOTONIC on Linux, shared by every process, so the
    parent can subtract the moment it called ``cancel()`` from the child's marker.
    """
    _notify(path, "started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _notify(path, "cancelled")
        raise
    return "finished"


def cancellable(path: str, seconds: float) -> str:
    """Sync twin: a running plain function cannot be cancelled, so no marker ever comes."""
    _notify(path, "started")
    time.sleep(seconds)
    return "finished"


def announce_and_sleep(path: str, seconds: float) -> int:
    """Tell the parent which process runs this task, then block (the one to be killed)."""
    _notify(path, "started")
    time.sleep(seconds)
    return os.getpid()


async def announce_and_sleep_async(path: str, seconds: float) -> int:
    """Coroutine twin of :func:`announce_and_sleep`."""
    _notify(path, "started")
    await asyncio.sleep(seconds)
    return os.getpid()
