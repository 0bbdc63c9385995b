"""Helpers of the reliability tests (issue 12): what children run, and parent-side checks.

Children import this module by name (they inherit the test process's ``sys.path``), so it
imports only the standard library and ``aioexec``'s public names. Everything below uses the
public API, ``executor._processes`` (``ProcessPoolExecutor``'s attribute, kept for
compatibility), multiprocessing's public ``Process.sentinel``, signals and ``/proc``.

Sections: values with a known answer (chaos), cross-process counters in files (cancellation
storm, slot check), corrupting one's own result pipe (corrupt child), objects whose pickling
misbehaves (deadlock, ``__reduce__`` raising ``SystemExit``), loop factories that misbehave,
a forked process using an inherited executor, and parent-side checks (processes, fds, scripts).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

# Bound of every wait for something a child or a script does: far above what it normally takes
# on a busy 2-core machine, far below pytest-timeout's 60 s.
TIMEOUT = 20.0
POLL_INTERVAL = 0.01
TESTS_DIR = Path(__file__).resolve().parent


def wait_until(condition: Callable[[], object], timeout: float = TIMEOUT) -> bool:
    """Poll ``condition()`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


# -- values with a known answer (chaos test) ------------------------------------------------


def triple(x: int) -> int:
    """A plain function whose answer identifies its input."""
    return 3 * x


async def async_triple(x: int) -> int:
    """A coroutine whose answer identifies its input, after one trip through the loop."""
    await asyncio.sleep(0)
    return 3 * x


async def async_triple_later(x: int, seconds: float) -> int:
    """Like :func:`async_triple`, after ``seconds`` (so that kills find it running)."""
    await asyncio.sleep(seconds)
    return 3 * x


def tag(value: object) -> tuple[str, object]:
    """Return ``("tag", value)``: a result that cannot be confused with another task's."""
    return ("tag", value)


async def async_tag(value: object) -> tuple[str, object]:
    """Coroutine twin of :func:`tag`."""
    return ("tag", value)


async def async_tag_later(value: object, seconds: float) -> tuple[str, object]:
    """``("tag", value)`` after ``seconds``."""
    await asyncio.sleep(seconds)
    return ("tag", value)


async def async_report_pid_then_tag(directory: str, index: int, release: str) -> tuple[str, object]:
    """Write this child's pid to ``directory/started-<index>``, wait (at most TIMEOUT) for the
    file ``release``, then return ``("tag", index)``."""
    path = os.path.join(directory, f"started-{index}")
    with open(f"{path}.tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(f"{path}.tmp", path)  # readers never see an empty file
    await async_wait_for_path(release)
    return ("tag", index)


def getpid() -> int:
    return os.getpid()


async def async_getpid() -> int:
    return os.getpid()


# -- cross-process records in files ---------------------------------------------------------
#
# A line appended with one os.write() on a descriptor opened with O_APPEND is never interleaved
# with another process's line (the kernel appends each write atomically to a regular file), so
# many children can record events in one file without a lock.


def append_line(path: str, text: str) -> None:
    """Append ``text`` and a newline to ``path`` in one atomic write."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)


def read_lines(path: str | Path) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def count_lines(path: str | Path) -> int:
    return len(read_lines(path))


async def async_wait_for_path(path: str, timeout: float = TIMEOUT) -> bool:
    """Poll (without blocking the loop) until ``path`` exists, at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_INTERVAL)
    return True


def wait_for_path(path: str, timeout: float = TIMEOUT) -> bool:
    return wait_until(lambda: os.path.exists(path), timeout)


async def async_storm_task(directory: str, task_id: int, hold: float) -> int:
    """Record ``task_id`` in ``started``, hold ``hold`` s, and record it in ``finally`` on the
    way out (however it ends). Nothing awaits between the two records and the ``try``, so a
    task that recorded its start always reaches its ``finally``."""
    append_line(os.path.join(directory, "started"), str(task_id))
    try:
        await asyncio.sleep(hold)
        return task_id
    finally:
        append_line(os.path.join(directory, "finally"), str(task_id))


async def async_wait_until_all_running(path: str, expected: int, timeout: float = TIMEOUT) -> int:
    """A barrier across processes: record one arrival in ``path``, then return once
    ``expected`` arrivals are recorded (so all ``expected`` tasks ran at the same time).
    Returns this child's pid; raises TimeoutError when they never all arrive."""
    append_line(path, str(os.getpid()))
    deadline = time.monotonic() + timeout
    while count_lines(path) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {count_lines(path)} of {expected} tasks ever ran at once")
        await asyncio.sleep(POLL_INTERVAL)
    return os.getpid()


def wait_until_all_running(path: str, expected: int, timeout: float = TIMEOUT) -> int:
    """Plain-function twin of :func:`async_wait_until_all_running`. A child runs one plain
    function at a time, so ``expected`` of these can only all run on ``expected`` children."""
    append_line(path, str(os.getpid()))
    if not wait_until(lambda: count_lines(path) >= expected, timeout):
        raise TimeoutError(f"only {count_lines(path)} of {expected} tasks ever ran at once")
    return os.getpid()


async def async_record_running_then_sleep(path: str, seconds: float) -> None:
    """Record this task's start in ``path``, then sleep ``seconds`` (a long running task)."""
    append_line(path, str(os.getpid()))
    await asyncio.sleep(seconds)


def record_running_then_sleep(path: str, seconds: float) -> None:
    """Plain-function twin of :func:`async_record_running_then_sleep`."""
    append_line(path, str(os.getpid()))
    time.sleep(seconds)


# -- a child corrupting its own result pipe --------------------------------------------------


def _pipe_fds(pid: int | str) -> Iterator[tuple[str, int, int]]:
    """(``pipe:[inode]``, fd, access mode) of every pipe descriptor process ``pid`` holds."""
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
            if not target.startswith("pipe:"):
                continue
            with open(f"/proc/{pid}/fdinfo/{name}") as info:
                flags = int(next(ln for ln in info if ln.startswith("flags:")).split()[1], 8)
        except (OSError, StopIteration):
            continue  # closed meanwhile
        yield target, int(name), flags & os.O_ACCMODE


def result_pipe_candidates(executor: Any) -> list[str]:
    """The pipes over which ``executor``'s children may answer, seen from the parent: those
    this process holds for reading only (never also for writing, as its own wake-up pipes),
    minus the children's multiprocessing sentinels. A child holds the write end of exactly one
    of them: its result pipe (it holds neither the other children's pipes nor our private ones).

    Found without aioexec's internals, which are being renamed."""
    ours = list(_pipe_fds("self"))
    writable = {target for target, _, mode in ours if mode != os.O_RDONLY}
    sentinels = set()
    for process in executor._processes.values():
        with contextlib.suppress(OSError, ValueError):
            sentinels.add(os.readlink(f"/proc/self/fd/{process.sentinel}"))
    return sorted({t for t, _, mode in ours if mode == os.O_RDONLY} - writable - sentinels)


def _own_result_pipes(candidates: list[str]) -> list[int]:
    return [
        fd for target, fd, mode in _pipe_fds("self") if mode == os.O_WRONLY and target in candidates
    ]


async def count_own_result_pipes(candidates: list[str]) -> int:
    """How many descriptors of this child qualify as its result pipe (the harness's check)."""
    return len(_own_result_pipes(candidates))


async def async_corrupt_result_pipe(candidates: list[str], garbage: bytes, marker: str) -> None:
    """Run in a child: write ``garbage`` into this child's own result pipe (the one pipe it
    holds for writing among ``candidates``, see :func:`result_pipe_candidates`), record its
    pid in ``marker`` first, then wait to be stopped (at most 60 s)."""
    fds = _own_result_pipes(candidates)
    if len(fds) != 1:
        raise RuntimeError(f"expected one result pipe among {candidates}, found fds {fds}")
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    view = memoryview(garbage)
    while view:
        try:
            view = view[os.write(fds[0], view) :]
        except BlockingIOError:
            await asyncio.sleep(POLL_INTERVAL)
    await asyncio.sleep(60)  # the parent must stop this child; it never answers


# -- objects whose pickling misbehaves --------------------------------------------------------

# Executors of this process that objects unpickled here may submit to, by name.
EXECUTORS: dict[str, Any] = {}
# What they submitted while being unpickled: name -> futures.
SUBMITTED: dict[str, list[concurrent.futures.Future[Any]]] = {}


def _rebuild_by_submitting(name: str, value: int) -> tuple[str, int]:
    """Unpickling a :class:`SubmitsWhenUnpickled` lands here (in the parent): submit a task
    to the executor registered as ``name`` from inside the unpickling."""
    SUBMITTED.setdefault(name, []).append(EXECUTORS[name].submit(triple, value))
    return ("rebuilt", value)


class SubmitsWhenUnpickled:
    """A result that, unpickled in the parent, submits ``triple(value)`` to ``EXECUTORS[name]``
    and becomes ``("rebuilt", value)``."""

    def __init__(self, name: str, value: int) -> None:
        self.name = name
        self.value = value

    def __reduce__(self) -> tuple[object, tuple[str, int]]:
        return _rebuild_by_submitting, (self.name, self.value)


async def async_return_submitting_when_unpickled(name: str, value: int) -> SubmitsWhenUnpickled:
    return SubmitsWhenUnpickled(name, value)


_EXITS: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
}


class ReduceRaisesError(Exception):
    """An exception whose pickling raises ``SystemExit`` or ``KeyboardInterrupt`` (named by
    ``how``), as a badly written library exception might."""

    def __init__(self, how: str) -> None:
        super().__init__(f"an error whose __reduce__ raises {how}")
        self.how = how

    def __reduce__(self) -> tuple[object, ...]:
        raise _EXITS[self.how]()


class ReduceRaisesResult:
    """A return value whose pickling raises ``SystemExit`` or ``KeyboardInterrupt``."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __reduce__(self) -> tuple[object, ...]:
        raise _EXITS[self.how]()


def raise_reduce_raises(how: str) -> None:
    raise ReduceRaisesError(how)


async def async_raise_reduce_raises(how: str) -> None:
    await asyncio.sleep(0)
    raise ReduceRaisesError(how)


def return_reduce_raises(how: str) -> ReduceRaisesResult:
    return ReduceRaisesResult(how)


async def async_return_reduce_raises(how: str) -> ReduceRaisesResult:
    await asyncio.sleep(0)
    return ReduceRaisesResult(how)


# -- loop factories that misbehave -------------------------------------------------------------


def loop_factory_returning_none() -> None:
    """A ``loop_factory`` that forgets to return its loop."""
    asyncio.new_event_loop().close()


def loop_factory_returning_a_string() -> str:
    return "not an event loop"


def loop_factory_raising() -> asyncio.AbstractEventLoop:
    raise OSError("the loop factory failed on purpose")


# -- a forked process using an inherited executor -------------------------------------------


def use_inherited_executor(executor: Any, report_fd: int) -> None:
    """Run in a process forked from the executor's owner: submit one task (answered after
    0.5 s, so that its answer can reach the parent's future of the same task number) and
    report each step as a line on ``report_fd``: ``submitting``, then ``submit-raised <type>:
    <message>``, or ``submitted`` followed by ``result <repr>`` / ``result-raised <type>:
    <message>``."""

    def report(line: str) -> None:
        os.write(report_fd, (line.replace("\n", " ") + "\n").encode())

    report("submitting")
    try:
        future = executor.submit(async_tag_later, "from-the-fork", 0.5)
    except BaseException as exc:
        report(f"submit-raised {type(exc).__name__}: {exc}")
        return
    report("submitted")
    try:
        report(f"result {future.result(timeout=2)!r}")
    except BaseException as exc:
        report(f"result-raised {type(exc).__name__}: {exc}")


def read_report(fd: int, until: Callable[[list[str]], bool], timeout: float) -> list[str]:
    """Read lines from ``fd`` until ``until(lines)`` holds, end of file, or ``timeout``."""
    import selectors

    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            lines = data.decode(errors="replace").splitlines()
            remaining = deadline - time.monotonic()
            if until(lines) or remaining <= 0:
                return lines
            if selector.select(remaining):
                chunk = os.read(fd, 65536)
                if not chunk:
                    return data.decode(errors="replace").splitlines()
                data += chunk


# -- parent-side checks ------------------------------------------------------------------------


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (no /proc entry, or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def wait_until_gone(pids: Iterable[int], timeout: float = TIMEOUT) -> set[int]:
    """Poll until every pid in ``pids`` is gone; returns those still running at the deadline."""
    alive = set(pids)

    def all_gone() -> bool:
        alive.difference_update({pid for pid in alive if process_gone(pid)})
        return not alive

    wait_until(all_gone, timeout)
    return alive


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
    """SIGKILL whichever of ``pids`` still run (cleanup after a failed test)."""
    import signal

    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def close_bounded(executor: Any, timeout: float = TIMEOUT) -> bool:
    """``shutdown(wait=True)`` in a helper thread; False if it did not return in time (a
    hang). Then kill whatever is left, so that a failed test leaves no process behind."""
    done = threading.Event()

    def close() -> None:
        executor.shutdown(wait=True)
        done.set()

    threading.Thread(target=close, name="reliability-close", daemon=True).start()
    returned = done.wait(timeout)
    if not returned:
        executor.kill_workers()
    return returned


def script_env() -> dict[str, str]:
    """The environment of a script that imports this directory's helpers and this aioexec."""
    import aioexec

    env = dict(os.environ)
    paths = [str(TESTS_DIR), str(Path(aioexec.__file__).resolve().parent.parent)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return env


def start_script(
    directory: Path, source: str, *args: str, stdin_script: bool = False, own_group: bool = False
) -> subprocess.Popen[bytes]:
    """Run ``source`` in a new interpreter (``python script.py ARGS``, or ``python - ARGS`` fed
    on stdin); its stdout and stderr go to files in ``directory``. ``own_group``: in a process
    group of its own, as a terminal's foreground job (for a Ctrl-C to the whole group)."""
    script = directory / "script.py"
    script.write_text(textwrap.dedent(source))
    with (
        open(directory / "stdout", "wb") as out,
        open(directory / "stderr", "wb") as err,
        open(script, "rb") as source_file,
    ):
        return subprocess.Popen(
            [sys.executable, "-" if stdin_script else str(script), *args],
            stdin=source_file if stdin_script else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=script_env(),
            cwd=directory,
            start_new_session=own_group,  # its own process group (3.10 has no process_group)
        )


def stop_script(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(TIMEOUT)
