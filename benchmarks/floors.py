"""Floors: each measurement done with the least machinery that can do it, in the same run.

The table shows each floor next to the rows it bounds, and every engine's ratio to it:

- ``pingpong`` (under ``latency`` and the scaling rows' latency): two processes, each running
  an asyncio event loop; the parent writes a few bytes to a pipe and awaits a future that a
  reader callback sets when the echo comes back; the child's reader callback echoes what it
  reads. No pickling, no framing, no bookkeeping: two event-loop wake-ups and four system
  calls per round trip. What a process pool whose workers run event loops cannot go below.
- ``loop_alone`` (under ``throughput``, ``map``, ``amap`` and the scaling rows' throughput):
  one event loop, no other process: the same gather of ``throughput_n`` calls, each awaiting
  a future that the loop itself completes (``call_soon``). What asyncio costs per task in
  the parent, whatever the engine does between submitting and completing.
- ``pipe`` (under every payload row): ``N`` bytes written to a pipe, read by a second process
  into a buffer it reuses, written back and read into a buffer the first process reuses,
  with the pipes grown to 1 MiB as aioexec grows its own. Blocking I/O, no event loop: the
  two copies through the kernel in each direction, and nothing else.

Each floor runs in its own subprocess like an engine's cell (``_worker.py --engine floor``),
and reports the CPU per task of the parent and of the other process, read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import multiprocessing
import os
import statistics
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

from benchmarks import _cpuacct
from benchmarks._common import Params, Result, median_result

_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1024 * 1024
_LEN = struct.Struct("<Q")


def _grow(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)


class _Peer:
    """A second process running ``target(read_fd, write_fd)`` on two fresh pipes."""

    def __init__(self, target: Callable[[Any, Any], None], start_method: str) -> None:
        ctx = multiprocessing.get_context(start_method)
        to_r, to_w = ctx.Pipe(duplex=False)
        from_r, from_w = ctx.Pipe(duplex=False)
        self._conns = (to_w, from_r)
        self.write_fd, self.read_fd = to_w.fileno(), from_r.fileno()
        for fd in (self.write_fd, self.read_fd):
            _grow(fd)
        self.process = ctx.Process(target=target, args=(to_r, from_w), daemon=True)
        self.process.start()
        to_r.close()
        from_w.close()

    def close(self) -> None:
        for conn in self._conns:
            conn.close()  # end of file: the peer's loop ends
        self.process.join(10)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()


# ---- ping-pong -----------------------------------------------------------------------------


def _echo_loop(rx: Any, tx: Any) -> None:
    """The ping-pong's second process: an asyncio loop whose reader callback echoes."""
    fd_in, fd_out = rx.fileno(), tx.fileno()
    os.set_blocking(fd_in, False)
    loop = asyncio.new_event_loop()

    def on_readable() -> None:
        try:
            data = os.read(fd_in, 65536)
        except BlockingIOError:
            return
        if not data:
            loop.stop()
            return
        os.write(fd_out, data)

    loop.add_reader(fd_in, on_readable)
    try:
        loop.run_forever()
    finally:
        loop.close()


async def pingpong(p: Params, repeats: int, start_method: str) -> Result:
    """Mean round trip (µs) of a few bytes between two processes' event loops."""
    peer = _Peer(_echo_loop, start_method)
    loop = asyncio.get_running_loop()
    os.set_blocking(peer.read_fd, False)
    pending: list[asyncio.Future[bytes]] = []

    def on_readable() -> None:
        try:
            data = os.read(peer.read_fd, 65536)
        except BlockingIOError:
            return
        if pending:
            pending.pop().set_result(data)

    async def call(i: int) -> bytes:
        # The same shape as an engine's call: a coroutine that sends and awaits a future.
        fut = loop.create_future()
        pending.append(fut)
        os.write(peer.write_fd, _LEN.pack(i))
        return await fut

    loop.add_reader(peer.read_fd, on_readable)
    try:
        for i in range(100):  # warm: both loops have run a round trip
            await call(i)
        samples, cpu = [], []
        for _ in range(max(1, repeats)):
            a = _cpuacct.usage()
            t0 = time.perf_counter()
            for i in range(p.latency_calls):
                await call(i)
            samples.append((time.perf_counter() - t0) / p.latency_calls * 1e6)
            cpu.append(_cpuacct.per_task(a, _cpuacct.usage(), p.latency_calls))
    finally:
        loop.remove_reader(peer.read_fd)
        peer.close()
    return median_result(
        samples, calls=p.latency_calls, cpu_us=_cpuacct.median_per_task(cpu), cpu_log=cpu
    )


# ---- one event loop alone ------------------------------------------------------------------


async def loop_alone(p: Params, repeats: int, start_method: str) -> Result:
    """``throughput_n`` calls gathered in one event loop (tasks/s), each awaiting a future
    that the loop completes; also the same calls awaited one after another (µs)."""
    loop = asyncio.get_running_loop()

    async def call(i: int) -> int:
        fut: asyncio.Future[int] = loop.create_future()
        loop.call_soon(fut.set_result, i)
        return await fut

    rates, cpu, latencies = [], [], []
    for _ in range(max(1, repeats)):
        a = _cpuacct.usage()
        t0 = time.perf_counter()
        await asyncio.gather(*(call(i) for i in range(p.throughput_n)))
        rates.append(p.throughput_n / (time.perf_counter() - t0))
        cpu.append(_cpuacct.per_task(a, _cpuacct.usage(), p.throughput_n))
        t0 = time.perf_counter()
        for i in range(p.latency_calls):
            await call(i)
        latencies.append((time.perf_counter() - t0) / p.latency_calls * 1e6)
    return median_result(
        rates,
        n=p.throughput_n,
        cpu_us=_cpuacct.median_per_task(cpu),
        cpu_log=cpu,
        latency_us=statistics.median(latencies),
    )


# ---- raw pipe transfer ---------------------------------------------------------------------


def _read_exact(fd: int, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError("the other end closed the pipe")
        got += n


def _write_all(fd: int, view: memoryview) -> None:
    sent = 0
    while sent < len(view):
        sent += os.write(fd, view[sent:])


def _pipe_echo(rx: Any, tx: Any) -> None:
    """The transfer's second process: read ``N`` bytes into a reused buffer, send them back."""
    fd_in, fd_out = rx.fileno(), tx.fileno()
    buf = bytearray()
    head = bytearray(_LEN.size)
    while True:
        try:
            _read_exact(fd_in, memoryview(head))
        except EOFError:
            return
        (n,) = _LEN.unpack(head)
        if len(buf) < n:
            buf = bytearray(n)  # zero-filled once: its pages are resident from now on
        view = memoryview(buf)[:n]
        _read_exact(fd_in, view)
        _write_all(fd_out, view)


async def pipe(nbytes: int, trips: int, repeats: int, start_method: str) -> Result:
    """``trips`` round trips of ``nbytes`` through two pipes; MB/s (10^6 B, both directions
    counted, as the payload rows count them), with both processes' peak RSS."""
    return await asyncio.to_thread(_pipe_blocking, nbytes, trips, repeats, start_method)


def _pipe_blocking(nbytes: int, trips: int, repeats: int, start_method: str) -> Result:
    data = os.urandom(1 << 20) * (nbytes >> 20) + os.urandom(nbytes & ((1 << 20) - 1))
    out = bytearray(nbytes)
    peer = _Peer(_pipe_echo, start_method)
    try:

        def trip() -> None:
            os.write(peer.write_fd, _LEN.pack(nbytes))
            _write_all(peer.write_fd, memoryview(data))
            _read_exact(peer.read_fd, memoryview(out))

        trip()  # warm: the peer's buffer is allocated and resident
        samples, cpu = [], []
        for _ in range(max(1, repeats)):
            a = _cpuacct.usage()
            t0 = time.perf_counter()
            for _ in range(trips):
                trip()
            samples.append(2 * nbytes * trips / (time.perf_counter() - t0) / 1e6)
            cpu.append(_cpuacct.per_task(a, _cpuacct.usage(), trips))
        if out[-4096:] != data[-4096:]:
            raise RuntimeError("the pipe floor's echo came back different")
        peaks = {
            "parent": _cpuacct.peak_rss(os.getpid()),
            "child": _cpuacct.peak_rss(peer.process.pid),
        }
    finally:
        peer.close()
    return median_result(
        samples,
        bytes=nbytes,
        trips=trips,
        cpu_us=_cpuacct.median_per_task(cpu),
        cpu_log=cpu,
        **_peak_extras(peaks, nbytes),
    )


def _peak_extras(peaks: dict[str, int | None], nbytes: int) -> dict[str, Any]:
    """``parent_peak_mib``/``child_peak_mib`` and the same as multiples of the payload."""
    out: dict[str, Any] = {}
    for side, peak in peaks.items():
        if peak is not None:
            out[f"{side}_peak_mib"] = round(peak / 2**20, 1)
            out[f"{side}_peak_x"] = round(peak / nbytes, 2)
    return out


# ---- shared --------------------------------------------------------------------------------

FloorFn = Callable[[Params, int, str], Coroutine[Any, Any, Result]]


def payload_trips(p: Params, nbytes: int) -> int:
    """Round trips per sample: the 4 MiB row keeps its own count; larger payloads move at
    least ``big_payload_min_bytes`` per sample, so that one sample is not one hiccup."""
    if nbytes <= p.payload_bytes:
        return p.payload_trips
    return max(1, p.big_payload_min_bytes // nbytes)
