"""Where a call runs (the routing rule of design.md section 3).

As a loop's default executor, plain callables keep asyncio's thread semantics: they run on a
thread of this process and act on its objects, exactly as with asyncio's own default executor.
Coroutine functions go to a child. Through the executor's own API, and through
``run_in_executor(ex, ...)`` with ``ex`` not the loop's default, plain functions go to a child
as in ``ProcessPoolExecutor``. ``aioexec.in_child`` sends one plain function to a child from a
default-executor call.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import helpers
import pytest

from aioexec import AsyncProcessExecutor, in_child

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
TIMEOUT = 30


@pytest.fixture(scope="module")
def executor() -> Iterator[AsyncProcessExecutor]:
    from conftest import close_executor

    ex = AsyncProcessExecutor(2, mp_context="forkserver")
    yield ex
    close_executor(ex)


def run_with_default(executor: AsyncProcessExecutor, main: Callable[[], object]) -> object:
    """Run ``main()`` (a coroutine function) in a loop whose default executor is ``executor``.
    The module's executor outlives the loop (``loop.close()`` shuts the default executor down,
    so another one takes its place first)."""
    loop = asyncio.new_event_loop()
    try:
        loop.set_default_executor(executor)
        return loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))  # type: ignore[arg-type]
    finally:
        loop.set_default_executor(ThreadPoolExecutor(1))
        loop.close()


# -- as the default executor: plain callables act on this process ----------------------------


def test_a_bound_method_run_in_the_default_executor_mutates_the_parent_object(
    executor: AsyncProcessExecutor,
) -> None:
    counter = helpers.Counter()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, counter.add, 1)
        return await loop.run_in_executor(None, counter.add, 2)

    assert run_with_default(executor, main) == 2
    assert counter.calls == [1, 2]


def test_gc_collect_run_in_the_default_executor_collects_the_parents_garbage(
    executor: AsyncProcessExecutor,
) -> None:
    collected = threading.Event()

    class Cycle:
        pass

    def make_garbage() -> None:
        a, b = Cycle(), Cycle()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        weakref.finalize(a, collected.set)

    async def main() -> int:
        return await asyncio.get_running_loop().run_in_executor(None, gc.collect)

    gc.disable()
    try:
        make_garbage()
        assert run_with_default(executor, main) >= 2  # type: ignore[operator]
    finally:
        gc.enable()
    assert collected.is_set(), "gc.collect ran somewhere else: the parent's cycle survived"


def test_partial_open_in_the_default_executor_returns_a_file_of_this_process(
    executor: AsyncProcessExecutor, tmp_path: Path
) -> None:
    path = tmp_path / "data.txt"

    async def main() -> str:
        loop = asyncio.get_running_loop()
        f = await loop.run_in_executor(None, functools.partial(open, path, "w+"))
        try:
            await loop.run_in_executor(None, f.write, "written through the executor")
            await loop.run_in_executor(None, f.seek, 0)
            return await loop.run_in_executor(None, f.read)
        finally:
            await loop.run_in_executor(None, f.close)

    assert run_with_default(executor, main) == "written through the executor"
    assert path.read_text() == "written through the executor"


def test_bytesio_write_in_the_default_executor_fills_the_parents_buffer(
    executor: AsyncProcessExecutor,
) -> None:
    buffer = io.BytesIO()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for chunk in (b"one ", b"two"):
            await loop.run_in_executor(None, buffer.write, chunk)

    run_with_default(executor, main)
    assert buffer.getvalue() == b"one two"


def test_plain_calls_of_the_default_executor_run_on_threads_named_and_sized_as_asyncios(
    executor: AsyncProcessExecutor,
) -> None:
    async def main() -> tuple[int, str]:
        return await asyncio.get_running_loop().run_in_executor(None, helpers.where)

    pid, thread_name = run_with_default(executor, main)  # type: ignore[misc]
    assert pid == os.getpid()
    assert thread_name.startswith("asyncio_")  # asyncio's default executor names them so
    # Same concurrency as asyncio's own default executor (a ThreadPoolExecutor's default).
    assert executor._local_threads._pool is not None
    assert executor._local_threads._pool._max_workers == ThreadPoolExecutor()._max_workers


def test_run_in_executor_of_the_default_executor_named_explicitly_is_a_default_call(
    executor: AsyncProcessExecutor,
) -> None:
    # asyncio passes the same executor either way, so it cannot be told apart: documented.
    async def main() -> int:
        loop = asyncio.get_running_loop()
        pid: int = await loop.run_in_executor(executor, helpers.pid)
        return pid

    assert run_with_default(executor, main) == os.getpid()


# -- as the default executor: coroutine functions go to a child ------------------------------


def test_a_coroutine_function_in_the_default_executor_runs_in_a_child(
    executor: AsyncProcessExecutor,
) -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, helpers.async_pid), await loop.run_in_executor(
            None, helpers.async_double, 21
        )

    pid, doubled = run_with_default(executor, main)  # type: ignore[misc]
    assert pid != os.getpid()
    assert pid in executor._processes
    assert doubled == 42


def test_a_coroutine_function_in_the_default_executor_is_cancelled_in_its_child(
    executor: AsyncProcessExecutor, tmp_path: Path
) -> None:
    record = tmp_path / "finally.txt"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(None, helpers.async_sleep_recording_finally, 60, str(record))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(call, 0.5)

    run_with_default(executor, main)
    helpers.wait_until(lambda: record.exists() and record.read_text().strip(), TIMEOUT)
    [pid] = record.read_text().split()
    assert int(pid) != os.getpid(), "the coroutine's finally ran in the child"


def test_in_child_sends_one_plain_function_to_a_child_from_a_default_executor_call(
    executor: AsyncProcessExecutor,
) -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        child = await loop.run_in_executor(None, in_child(helpers.pid))
        here = await loop.run_in_executor(None, helpers.pid)
        return child, here

    child, here = run_with_default(executor, main)  # type: ignore[misc]
    assert child != os.getpid()
    assert here == os.getpid()


def test_in_child_wrapping_is_transparent_elsewhere() -> None:
    wrapped = in_child(helpers.double)
    assert wrapped(4) == 8
    with ThreadPoolExecutor(1) as threads:
        assert threads.submit(wrapped, 5).result(TIMEOUT) == 10
    with pytest.raises(TypeError, match="callable"):
        in_child(5)  # type: ignore[arg-type]


# -- the executor's own API: plain functions go to a child -----------------------------------


def test_run_in_executor_with_an_executor_that_is_not_the_default_runs_in_a_child(
    executor: AsyncProcessExecutor,
) -> None:
    async def main() -> int:
        pid: int = await asyncio.get_running_loop().run_in_executor(executor, helpers.pid)
        return pid

    assert asyncio.run(main()) != os.getpid()


def test_submit_map_run_and_amap_run_plain_functions_in_a_child_even_as_the_default(
    executor: AsyncProcessExecutor,
) -> None:
    async def main() -> list[int]:
        pids = [executor.submit(helpers.pid).result(TIMEOUT)]
        pids += list(executor.map(helpers.echo, [os.getpid()]))  # echoes: control value
        pids.append(await executor.run(helpers.pid))
        pids += [p async for p in executor.amap(helpers.where_pid, [None])]
        return pids

    submitted, echoed, ran, mapped = run_with_default(executor, main)  # type: ignore[misc]
    assert echoed == os.getpid()
    for pid in (submitted, ran, mapped):
        assert pid != os.getpid()


# -- asyncio's own calls, and asyncio.run's shutdown -----------------------------------------

SCENARIO = textwrap.dedent(
    """
    import asyncio
    import json
    import os
    import socket
    import threading
    import time

    import helpers
    from aioexec import AsyncProcessExecutor

    report = {"parent_pid": os.getpid()}


    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(AsyncProcessExecutor(2))
        report["to_thread"] = await asyncio.to_thread(helpers.where)
        infos = await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        report["addresses"] = sorted({info[4][0] for info in infos})
        report["nameinfo"] = await loop.getnameinfo(
            ("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        )
        report["coroutine_pid"] = await loop.run_in_executor(None, helpers.async_pid)
        # Still running when main() returns: asyncio.run waits for it, as for a thread of
        # its own default executor.
        loop.run_in_executor(None, helpers.sleep, 0.5, "late")
        report["main_returned_at"] = time.monotonic()


    if __name__ == "__main__":
        asyncio.run(main())
        report["shutdown_seconds"] = time.monotonic() - report.pop("main_returned_at")
        report["threads_left"] = [t.name for t in threading.enumerate()][1:]
        print(json.dumps(report))
    """
)


def test_asyncios_own_calls_stay_local_and_asyncio_run_waits_for_running_plain_calls(
    tmp_path: Path,
) -> None:
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=45,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the asyncio.run scenario hung (killed after 45 s); stderr:\n{exc.stderr}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    parent_pid = report["parent_pid"]
    to_thread_pid, to_thread_name = report["to_thread"]
    assert to_thread_pid == parent_pid  # asyncio's own work stays in this process
    assert to_thread_name.startswith("asyncio_")
    assert report["addresses"]
    assert set(report["addresses"]) <= {"127.0.0.1", "::1"}
    assert report["nameinfo"] == ["127.0.0.1", "80"]
    assert report["coroutine_pid"] != parent_pid
    # asyncio.run shut the default executor down: it waited for the running plain call
    # (about 0.5 s), and for nothing else.
    assert 0.3 < report["shutdown_seconds"] < 15
    assert report["threads_left"] == []


def test_as_the_default_executor_of_a_uvloop_loop_plain_calls_stay_local(
    executor: AsyncProcessExecutor,
) -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    counter = helpers.Counter()

    async def main() -> tuple[int, int]:
        running = asyncio.get_running_loop()
        await running.run_in_executor(None, counter.add, 1)
        here = await running.run_in_executor(None, helpers.pid)
        return here, await executor.run(helpers.pid)

    try:
        loop.set_default_executor(executor)
        here, child = loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    finally:
        loop.set_default_executor(ThreadPoolExecutor(1))
        loop.close()
    assert counter.calls == [1]
    assert here == os.getpid()
    assert child != os.getpid()
