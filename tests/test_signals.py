"""Signals: the parent's SIGKILL, Ctrl-C in a ``with`` block, SIGTERM to one child.

- SIGKILL of the parent under each start method, with 200 coroutines and a plain function
  running: every process it started (children, forkserver, resource tracker) is gone within
  a deadline.
- Ctrl-C (SIGINT to the script's process group, as a terminal sends it) to a script blocked in
  a plain ``with AsyncProcessExecutor() as ex:`` block with 200 running coroutines: it exits
  within 2 s, prints exactly one traceback, and leaves no process (issue 11's acceptance;
  ``ProcessPoolExecutor`` would wait for the work).
- SIGTERM to one child: only its tasks fail, with a ``BrokenWorkerError`` that names SIGTERM;
  the pool goes on.

Scenarios that end a parent run a script in a subprocess; it reports through files.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import reliability_helpers as rh

from aioexec import AsyncProcessExecutor, BrokenWorkerError

# Issue 11's acceptance figure for Ctrl-C. Measured 0.12-0.17 s where it already held.
CTRL_C_EXIT_WITHIN = 2.0
# A child sees end of file at once when its parent dies, then gives its cancelled coroutines
# at most 2 s; a forkserver or resource tracker sees end of file on its own pipe.
ORPHANS_GONE_WITHIN = 10.0
RUNNING = 200

_BUSY_SCRIPT = """
    import multiprocessing
    import os
    import sys

    import reliability_helpers as rh
    from aioexec import AsyncProcessExecutor

    if __name__ == "__main__":
        method, directory, mode = sys.argv[1:4]
        running = os.path.join(directory, "running")
        kwargs = {} if method == "default" else {
            "mp_context": multiprocessing.get_context(method)
        }
        with AsyncProcessExecutor(2, child_concurrency=100, **kwargs) as ex:
            futures = [
                ex.submit(rh.async_record_running_then_sleep, running, 30) for _ in range(200)
            ]
            if mode == "with-plain-function":
                futures.append(ex.submit(rh.record_running_then_sleep, running, 30))
            expected = len(futures)
            assert rh.wait_until(lambda: rh.count_lines(running) >= expected, 60)
            with open(os.path.join(directory, "pids.tmp"), "w") as f:
                f.write(" ".join(map(str, ex._processes)))
            os.replace(os.path.join(directory, "pids.tmp"), os.path.join(directory, "pids"))
            for future in futures:  # Ctrl-C lands here
                future.result()
"""


def _start_busy_script(
    tmp_path: Path, method: str, mode: str, own_group: bool = False
) -> tuple[subprocess.Popen[bytes], set[int]]:
    """Start the script; return it and its executor's children once all its tasks run."""
    proc = rh.start_script(tmp_path, _BUSY_SCRIPT, method, str(tmp_path), mode, own_group=own_group)
    if not rh.wait_until(lambda: (tmp_path / "pids").exists() or proc.poll() is not None, 60):
        rh.stop_script(proc)
        pytest.fail("the script's tasks never all ran")
    if proc.poll() is not None:
        pytest.fail(f"the script ended early: {(tmp_path / 'stderr').read_text()}")
    return proc, set(map(int, (tmp_path / "pids").read_text().split()))


@pytest.mark.parametrize("start_method", ["forkserver", "spawn", "fork"])
def test_every_process_exits_after_a_parent_sigkill(tmp_path: Path, start_method: str) -> None:
    proc, children = _start_busy_script(tmp_path, start_method, "with-plain-function")
    started = rh.descendants(proc.pid)  # the children, and a forkserver or resource tracker
    assert children <= started
    print(f"{len(started)} processes below the script ({len(children)} children)")
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(rh.TIMEOUT)
        left = rh.wait_until_gone(started, ORPHANS_GONE_WITHIN)
        assert left == set(), f"still running {ORPHANS_GONE_WITHIN} s after the parent's SIGKILL"
    finally:
        rh.kill_all(started)
        rh.stop_script(proc)


@pytest.mark.parametrize("start_method", ["default", "spawn"])
def test_ctrl_c_in_a_with_block_exits_at_once_with_one_traceback_and_no_process(
    tmp_path: Path, start_method: str
) -> None:
    proc, children = _start_busy_script(tmp_path, start_method, "coroutines-only", own_group=True)
    started = rh.descendants(proc.pid)
    assert children <= started
    try:
        sent = time.monotonic()
        # As a terminal does: SIGINT to the whole foreground process group (the script and
        # every process it started).
        os.killpg(proc.pid, signal.SIGINT)
        exited = rh.wait_until(lambda: proc.poll() is not None, CTRL_C_EXIT_WITHIN)
        took = time.monotonic() - sent
        if not exited:
            proc.kill()
        proc.wait(rh.TIMEOUT)
        stderr = (tmp_path / "stderr").read_text()
        assert exited, (
            f"still running {CTRL_C_EXIT_WITHIN} s after Ctrl-C (it waits for the 200 "
            f"coroutines' 30 s); stderr so far:\n{stderr}"
        )
        print(f"exited {took:.2f} s after Ctrl-C")
        assert stderr.count("Traceback (most recent call last)") == 1, stderr
        assert "KeyboardInterrupt" in stderr, stderr
        left = rh.wait_until_gone(started, ORPHANS_GONE_WITHIN)
        assert left == set(), f"processes left after Ctrl-C: {left}"
    finally:
        rh.kill_all(started)
        rh.stop_script(proc)


@pytest.fixture
def executor() -> Iterator[AsyncProcessExecutor]:
    ex = AsyncProcessExecutor(
        2, mp_context=multiprocessing.get_context("forkserver"), child_concurrency=4
    )
    yield ex
    assert rh.close_bounded(ex)


def test_sigterm_to_one_child_fails_only_its_tasks_naming_sigterm(
    executor: AsyncProcessExecutor, tmp_path: Path
) -> None:
    ex = executor
    release = str(tmp_path / "release")
    tasks = [ex.submit(rh.async_report_pid_then_tag, str(tmp_path), i, release) for i in range(4)]
    assert rh.wait_until(lambda: all((tmp_path / f"started-{i}").exists() for i in range(4)))
    pids = [int((tmp_path / f"started-{i}").read_text()) for i in range(4)]
    assert len(set(pids)) == 2
    victim = pids[0]

    os.kill(victim, signal.SIGTERM)
    assert rh.wait_until_gone([victim]) == set()
    rh.append_line(release, "go")
    for index, (pid, future) in enumerate(zip(pids, tasks, strict=True)):
        if pid == victim:
            error = future.exception(timeout=rh.TIMEOUT)
            assert type(error) is BrokenWorkerError, repr(error)
            assert "SIGTERM" in str(error)
        else:
            assert future.result(timeout=rh.TIMEOUT) == ("tag", index)
    later = [ex.submit(rh.async_tag, i) for i in range(8)]
    assert [f.result(timeout=rh.TIMEOUT) for f in later] == [("tag", i) for i in range(8)]
