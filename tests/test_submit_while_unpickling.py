"""An answer whose unpickling submits work, while another thread submits: no deadlock (issue 12,
item 4).

The parent unpickles answers where it reads them, and unpickling may run user code (a
``__reduce__`` constructor) that submits to the same executor, a case the executor supports.
Meanwhile a second thread submits in a loop, one task at a time (so that each of its submissions
takes the executor's lock, then the manager's). Every future must end, and shutdown must
return.

A deadlock would leave threads of this process stuck on locks for good (and pytest's exit
waiting for them), so the scenario runs in a script; the script dumps every thread's stack and
exits if it is still running after ``STUCK_AFTER`` seconds, and the test kills it at the
deadline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import reliability_helpers as rh

STUCK_AFTER = 20
ANSWERS = 200

_SCRIPT = """
    import concurrent.futures
    import faulthandler
    import sys
    import threading
    import time

    import reliability_helpers as rh
    from aioexec import AsyncProcessExecutor

    if __name__ == "__main__":
        stuck_after, answers = int(sys.argv[1]), int(sys.argv[2])
        faulthandler.dump_traceback_later(stuck_after, exit=True)
        ex = AsyncProcessExecutor(2, child_concurrency=8)
        rh.EXECUTORS["unpickling"] = ex
        stop = threading.Event()
        background = []

        def submit_in_a_loop():
            # One task at a time: a child always has room, so each submit sends its task
            # itself, under the executor's lock and then the manager's (a queued one would
            # only be posted to the manager thread).
            i = 0
            while not stop.is_set():
                background.append((3 * i, ex.submit(rh.triple, i)))
                background[-1][1].result()
                i += 1

        thread = threading.Thread(target=submit_in_a_loop)
        thread.start()
        results = []
        for first in range(0, answers, 4):  # a few at a time, so that none is queued
            batch = [
                ex.submit(rh.async_return_submitting_when_unpickled, "unpickling", i)
                for i in range(first, min(first + 4, answers))
            ]
            results.extend(f.result() for f in batch)
        assert results == [("rebuilt", i) for i in range(answers)], results[:5]
        print("answers unpickled", flush=True)
        submitted = rh.SUBMITTED["unpickling"]
        assert sorted(f.result() for f in submitted) == [3 * i for i in range(answers)]
        print("work submitted while unpickling done", flush=True)
        stop.set()
        thread.join()
        assert all(f.result() == expected for expected, f in background)
        print(f"{len(background)} background submissions done", flush=True)
        ex.shutdown(wait=True)
        print("shut down", flush=True)
"""


def test_answers_that_submit_when_unpickled_with_another_thread_submitting_never_deadlock(
    tmp_path: Path,
) -> None:
    proc = rh.start_script(tmp_path, _SCRIPT, str(STUCK_AFTER), str(ANSWERS))
    try:
        finished = rh.wait_until(lambda: proc.poll() is not None, STUCK_AFTER + 10)
    finally:
        rh.stop_script(proc)
    stdout = (tmp_path / "stdout").read_text()
    stderr = (tmp_path / "stderr").read_text()
    if not finished or proc.returncode != 0 or "shut down" not in stdout:
        pytest.fail(
            f"the script did not finish (exit status {proc.returncode}); its progress:\n"
            f"{stdout}\nits stderr (every thread's stack if it was stuck):\n{stderr}"
        )
