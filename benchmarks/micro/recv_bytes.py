"""The receive side of a large ``bytes`` that crosses a pipe, five ways (issue 16).

``python -m benchmarks.micro.recv_bytes [--rounds 5] [--ways current,prealloc,...] 64 256 1024``

A forked sender writes ``N`` bytes into a pipe grown to 1 MiB, from memory it reuses; the
receiver turns them into a ``bytes`` object, one of these ways:

=====================  =====================================================================
``current``            ``bytearray(N)`` (malloc + memset), ``readv`` into it, then the copy
                       that unpickling ``bytes(buffer)`` makes: what aioexec did before the
                       redesign for a body above ``REUSE_MAX`` (64 MiB)
``mmap``               ``mmap.mmap(-1, N)`` as the receive buffer (no memset: the kernel's
                       pages are zero; Python's default flags make it a *shared* mapping,
                       backed by shmem), then the same copy: aioexec's decoder since the
                       redesign (bodies from 1 MiB that are not reused)
``mmap-thp``           a *private* anonymous ``mmap`` with ``MADV_HUGEPAGE`` as the receive
                       buffer, then the same copy
``prealloc``           ``PyBytes_FromStringAndSize(NULL, N)``: a ``bytes`` whose storage is
                       not initialised, read into directly (through a writable ``ctypes``
                       view of its storage); unpickling would hand back this very object
``prealloc-thp``       the same, with ``MADV_HUGEPAGE`` on its storage before the first read
``prealloc-populate``  the same, with ``MADV_POPULATE_WRITE`` (Linux 5.14): all its pages
                       faulted in by one system call
``floor``              ``readv`` into a buffer reused from round to round (already resident):
                       the two copies through the pipe and nothing else
=====================  =====================================================================

Printed per size and way (median of the rounds): the receiver's CPU per GiB (freeing the
object included), its minor page faults per GiB, the sender's CPU per GiB (from
``/proc/<pid>/schedstat``) and the wall time. On a shared machine only the CPU columns mean
much. Linux and CPython only (``ctypes.pythonapi``, ``madvise``).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import mmap
import os
import resource
import statistics
import struct
import time

_MADV_HUGEPAGE = 14
_MADV_POPULATE_WRITE = 23
_F_SETPIPE_SZ = 1031
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
_DATA_OFFSET = bytes.__basicsize__ - 1  # where a bytes object's data starts (ob_sval)

WAYS = ("current", "mmap", "mmap-thp", "prealloc", "prealloc-thp", "prealloc-populate", "floor")


def writable_bytes(n: int, advice: tuple[int, ...] = ()) -> tuple[bytes, memoryview]:
    """A new ``bytes`` of ``n`` bytes, not initialised, and a writable view of its storage.

    Only safe while nobody else holds the object: fill it, release the view, then hand it
    out (its hash is computed later, from the final content)."""
    b: bytes = _new_bytes(None, n)
    addr = id(b) + _DATA_OFFSET
    start = (addr + 4095) & ~4095
    for advise in advice:
        _libc.madvise(start, (addr + n - start) & ~4095, advise)
    return b, memoryview((ctypes.c_char * n).from_address(addr)).cast("B")


def _read_into(fd: int, view: memoryview) -> None:
    got = 0
    while got < len(view):
        got += os.readv(fd, [view[got:]])


def receive(fd: int, n: int, way: str, reused: bytearray) -> object:
    """Read ``n`` bytes from ``fd`` and return them as ``way`` would."""
    if way == "current":
        buf = bytearray(n)
        _read_into(fd, memoryview(buf))
        return bytes(memoryview(buf))
    if way.startswith("mmap"):
        if way == "mmap":
            m = mmap.mmap(-1, n)
        else:
            m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            m.madvise(mmap.MADV_HUGEPAGE)
        with memoryview(m) as view:
            _read_into(fd, view)
            out = bytes(view)
        m.close()
        return out
    if way.startswith("prealloc"):
        advice = {
            "prealloc": (),
            "prealloc-thp": (_MADV_HUGEPAGE,),
            "prealloc-populate": (_MADV_POPULATE_WRITE,),
        }[way]
        b, view = writable_bytes(n, advice)
        _read_into(fd, view)
        view.release()
        return b
    if way == "floor":
        _read_into(fd, memoryview(reused)[:n])
        return reused
    raise ValueError(way)


def _sender(data_w: int, ctl_r: int, largest: int) -> None:
    src = memoryview(os.urandom(1 << 20) * ((largest >> 20) + 1))
    while head := os.read(ctl_r, 8):
        (n,) = struct.unpack("<Q", head)
        sent = 0
        while sent < n:
            sent += os.write(data_w, src[sent:n])
    os._exit(0)


def _cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mib", type=int, nargs="*", default=[64, 256, 1024])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ways", default=",".join(WAYS))
    args = parser.parse_args()
    sizes = [m << 20 for m in args.mib]
    data_r, data_w = os.pipe()
    fcntl.fcntl(data_w, _F_SETPIPE_SZ, 1 << 20)
    ctl_r, ctl_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(data_r)
        os.close(ctl_w)
        _sender(data_w, ctl_r, max(sizes))
    os.close(data_w)
    os.close(ctl_r)
    reused = bytearray(max(sizes))
    print(f"load average {os.getloadavg()}")
    for n in sizes:
        gib = n / 2**30
        for way in args.ways.split(","):
            cpu, wall, faults, sender = [], [], [], []
            for _ in range(args.rounds):
                s0 = _cpu_ns(pid)
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                c0, t0 = time.process_time(), time.perf_counter()
                os.write(ctl_w, struct.pack("<Q", n))
                out = receive(data_r, n, way, reused)
                t1 = time.perf_counter()
                f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                del out  # freeing a fresh object is part of its cost
                cpu.append((time.process_time() - c0) / gib)
                wall.append((t1 - t0) / gib)
                faults.append((f1 - f0) / gib)
                sender.append((_cpu_ns(pid) - s0) / 1e9 / gib)
            w = statistics.median(wall)
            print(
                f"{n >> 20:5d} MiB {way:<18} receiver CPU {statistics.median(cpu):5.2f} s/GiB"
                f"  faults {statistics.median(faults):7.0f}/GiB"
                f"  sender CPU {statistics.median(sender):4.2f} s/GiB"
                f"  wall {w:5.2f} s/GiB ({1024 / w:5.0f} MiB/s)",
                flush=True,
            )
    os.close(ctl_w)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
