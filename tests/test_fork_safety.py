"""A process forked while an executor is alive (issue 12, item 3).

The fork inherits the executor without its manager thread. Using it there must raise a clear
error that says so (the message mentions the fork), promptly: never write into the parent's
children (whose answers then reach the parent's futures), never hang. And the fork must not
keep the parent's children alive: after a SIGKILL of the parent, the executor's children exit
even while a process forked from it still runs.

Forks made two ways: ``os.fork()``, and a ``multiprocessing`` process with the ``fork`` start
method (the default on Linux before Python 3.14).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import reliability_helpers as rh

from aioexec import AsyncProcessExecutor

FORK_REPORT_TIMEOUT = 5.0
# A child sees end of file at once when its parent dies, and exits after at most a 2 s grace
# for its cancelled coroutines.
ORPHANS_GONE_WITHIN = 10.0
USE_FAILS_CLEARLY = re.compile(r"(?i)fork")


@pytest.fixture
def executor() -> Iterator[AsyncProcessExecutor]:
    ex = AsyncProcessExecutor(
        2, mp_context=multiprocessing.get_context("forkserver"), child_concurrency=4
    )
    yield ex
    assert rh.close_bounded(ex), "shutdown(wait=True) hung after the fork"


class Fork:
    """A fork of this process that submits to an inherited executor (see
    ``reliability_helpers.use_inherited_executor``) and reports each step through a pipe."""

    def __init__(self, ex: AsyncProcessExecutor, how: str) -> None:
        self.lines: list[str] = []
        self._read_fd, write_fd = os.pipe()
        self._process = None
        try:
            with warnings.catch_warnings():
                # 3.12+: forking a process with threads may deadlock the child. That is the
                # point.
                warnings.simplefilter("ignore", DeprecationWarning)
                if how == "os.fork":
                    self.pid = os.fork()
                    if self.pid == 0:  # the fork: never return into pytest
                        try:
                            os.close(self._read_fd)
                            rh.use_inherited_executor(ex, write_fd)
                        finally:
                            os._exit(0)
                else:
                    self._process = multiprocessing.get_context("fork").Process(
                        target=rh.use_inherited_executor, args=(ex, write_fd)
                    )
                    self._process.start()
                    self.pid = self._process.pid
        finally:
            os.close(write_fd)

    def wait_for_submit(self) -> None:
        """Until the fork's submit returned or raised; a fork that takes longer than
        FORK_REPORT_TIMEOUT hangs, and is killed."""
        self._read(lambda lines: any(ln.startswith("submit") for ln in lines[1:]))
        if not any(ln.startswith("submit") for ln in self.lines[1:]):
            self.lines.append("hung in submit")
            rh.kill_all([self.pid])

    def finish(self) -> list[str]:
        """Read the rest of the report and reap the fork (killed if it hangs)."""
        self._read(lambda lines: any(ln.startswith(("submit-raised", "result")) for ln in lines))
        os.close(self._read_fd)
        if rh.wait_until_gone([self.pid], FORK_REPORT_TIMEOUT):
            self.lines.append("hung on its way out")
            rh.kill_all([self.pid])
        if self._process is not None:
            self._process.join(rh.TIMEOUT)
        else:
            os.waitpid(self.pid, 0)
        return self.lines

    def _read(self, until: Callable[[list[str]], bool]) -> None:
        if "hung in submit" in self.lines:
            return
        more = rh.read_report(
            self._read_fd, lambda new: until(self.lines + new), FORK_REPORT_TIMEOUT
        )
        self.lines.extend(more)


def _start_both_children(ex: AsyncProcessExecutor) -> None:
    futures = [ex.submit(rh.async_triple_later, i, 0.1) for i in range(4)]
    assert [f.result(timeout=rh.TIMEOUT) for f in futures] == [0, 3, 6, 9]
    assert len(ex._processes) == 2


@pytest.mark.parametrize("how", ["os.fork", "mp-fork"])
@pytest.mark.parametrize("children", ["at-max-workers", "below-max-workers"])
def test_a_forked_process_using_the_inherited_executor_fails_clearly_and_steals_nothing(
    executor: AsyncProcessExecutor, tmp_path: Path, how: str, children: str
) -> None:
    ex = executor
    release = str(tmp_path / "release")
    if children == "at-max-workers":
        _start_both_children(ex)
        blockers = 2
    else:
        # One child; the second task takes the first one's "a child is idle" token, so that
        # the next submission would start a child (it is the manager thread that starts them).
        assert ex.submit(rh.async_tag, "first").result(timeout=rh.TIMEOUT) == ("tag", "first")
        blockers = 1
    # Parent tasks in flight across the fork.
    in_flight = [
        ex.submit(rh.async_report_pid_then_tag, str(tmp_path), i, release) for i in range(blockers)
    ]
    assert rh.wait_until(lambda: all((tmp_path / f"started-{i}").exists() for i in range(blockers)))
    if children == "below-max-workers":
        assert len(ex._processes) == 1

    fork = Fork(ex, how)
    fork.wait_for_submit()
    # The parent goes on submitting while the fork waits for its answer; if the fork wrote
    # into a child with the parent's next task number, its answer (after 0.5 s) reaches the
    # parent's future of that number (answered after 1 s).
    after = [ex.submit(rh.async_tag_later, ("parent", i), 1.0) for i in range(4)]
    report = fork.finish()

    rh.append_line(release, "go")
    assert [f.result(timeout=rh.TIMEOUT) for f in in_flight] == [
        ("tag", i) for i in range(blockers)
    ]
    assert [f.result(timeout=rh.TIMEOUT) for f in after] == [
        ("tag", ("parent", i)) for i in range(4)
    ], f"the parent's futures got another process's results; the fork reported: {report}"
    # The fork was told, at once and clearly, that it cannot use the executor.
    raised = [ln for ln in report if ln.startswith("submit-raised")]
    assert raised, f"the fork reported: {report}"
    assert USE_FAILS_CLEARLY.search(raised[0]), f"the fork reported: {report}"
    assert not {"hung in submit", "hung on its way out"} & set(report), (
        f"the fork reported: {report}"
    )


_GRANDCHILD_SCRIPT = """
    import multiprocessing
    import os
    import sys
    import warnings

    import reliability_helpers as rh
    from aioexec import AsyncProcessExecutor

    def linger(never):
        rh.wait_for_path(never, 60)

    if __name__ == "__main__":
        method, how, directory = sys.argv[1:4]
        never = os.path.join(directory, "never-written")
        ex = AsyncProcessExecutor(
            2, mp_context=multiprocessing.get_context(method), child_concurrency=4
        )
        # Both children up, each running a coroutine that never ends by itself.
        for i in range(4):
            ex.submit(rh.async_report_pid_then_tag, directory, i, never)
        assert rh.wait_until(
            lambda: all(os.path.exists(os.path.join(directory, f"started-{i}")) for i in range(4))
        )
        warnings.simplefilter("ignore", DeprecationWarning)
        if how == "os.fork":
            pid = os.fork()
            if pid == 0:
                linger(never)
                os._exit(0)
        else:
            process = multiprocessing.get_context("fork").Process(target=linger, args=(never,))
            process.start()
            pid = process.pid
        with open(os.path.join(directory, "pids.tmp"), "w") as f:
            f.write(" ".join(map(str, ex._processes)) + "\\n" + str(pid))
        os.replace(os.path.join(directory, "pids.tmp"), os.path.join(directory, "pids"))
        linger(never)  # until the test kills us
"""


@pytest.mark.parametrize("how", ["os.fork", "mp-fork"])
@pytest.mark.parametrize("start_method", ["forkserver", "spawn", "fork"])
def test_children_exit_after_a_parent_sigkill_while_a_fork_of_the_parent_lives(
    tmp_path: Path, start_method: str, how: str
) -> None:
    proc = rh.start_script(tmp_path, _GRANDCHILD_SCRIPT, start_method, how, str(tmp_path))
    children: set[int] = set()
    grandchild = None
    try:
        if not rh.wait_until(lambda: (tmp_path / "pids").exists() or proc.poll() is not None):
            pytest.fail("the script never reported its pids")
        if proc.poll() is not None:
            pytest.fail(f"the script ended: {(tmp_path / 'stderr').read_text()}")
        first, second = (tmp_path / "pids").read_text().splitlines()
        children = set(map(int, first.split()))
        grandchild = int(second)
        assert len(children) == 2

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(rh.TIMEOUT)
        assert not rh.process_gone(grandchild), "the forked process should still run"
        left = rh.wait_until_gone(children, ORPHANS_GONE_WITHIN)
        assert left == set(), (
            f"the executor's children {left} still run {ORPHANS_GONE_WITHIN} s after the parent's "
            "SIGKILL: the forked process holds their pipes open"
        )
    finally:
        rh.kill_all([*children, *([grandchild] if grandchild else [])])
        rh.stop_script(proc)
