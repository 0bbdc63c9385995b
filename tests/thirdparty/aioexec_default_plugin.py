"""pytest plugin: every event loop made in this process gets an ``AsyncProcessExecutor`` as its
default executor, and the plugin reports how often that executor was really used.

Loaded into a third-party library's own test run with ``-p aioexec_default_plugin`` (its
directory on ``PYTHONPATH``) by ``tests/test_thirdparty_suites.py``; it is not a plugin of
aioexec's own test suite.

The hook is ``asyncio.BaseEventLoop.__init__``: every asyncio loop class (selector and
proactor loops alike) runs it, however the loop was made: ``asyncio.new_event_loop()``, an
event loop policy's ``new_event_loop`` (pytest-asyncio, any version), ``asyncio.run``,
``asyncio.Runner``, or a direct ``SelectorEventLoop()``. Wrapping the policy instead would miss
loops made without it and leans on the policy API that Python 3.14 deprecates; this hook uses
no deprecated API on any Python.

Counting: each loop gets an instance attribute ``run_in_executor`` that counts the calls with
``executor=None`` that reach the installed ``AsyncProcessExecutor`` and then calls the class's
own ``run_in_executor`` unchanged. The executor itself is a plain ``AsyncProcessExecutor``, not a
subclass whose ``submit`` counts: ``submit`` looks at its caller's frame to tell a call from
asyncio's ``run_in_executor`` (for the loop's own future, and for the routing rule of a loop's
default executor), and a counting ``submit`` in between would hide that caller and change what
is measured. The class attribute ``BaseEventLoop.run_in_executor`` is left alone for the same
reason.

At the end of the session the counts are written as JSON to the file named by the environment
variable ``AIOEXEC_PLUGIN_REPORT`` (if set), so that the harness can fail a run in which no
loop or no call ever met aioexec (a vacuous pass), and printed in the terminal summary.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import threading
from collections import Counter
from typing import Any

import pytest

import aioexec
from aioexec import AsyncProcessExecutor

REPORT_ENV = "AIOEXEC_PLUGIN_REPORT"

# Only loops of the process that loaded the plugin: a child forked from it (the fork start
# method) runs its own loop and must keep asyncio's own default executor.
_PLUGIN_PID = os.getpid()
_original_init = asyncio.BaseEventLoop.__init__
_counts: Counter[str] = Counter()
_counts_lock = threading.Lock()  # loops may be made, and calls made, in any thread


def _count(key: str) -> None:
    with _counts_lock:
        _counts[key] += 1


def _init_with_aioexec_default(self: asyncio.BaseEventLoop, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    if os.getpid() != _PLUGIN_PID:
        return
    executor = AsyncProcessExecutor()
    self.set_default_executor(executor)
    _count("loops_with_aioexec_default")
    loop_class_run_in_executor = type(self).run_in_executor

    def run_in_executor(executor_arg: Any, func: Any, *args: Any) -> Any:
        if executor_arg is None:
            _count("run_in_executor_none")
            if self._default_executor is executor:
                _count("reached_aioexec")
                kind = "coroutine_function" if inspect.iscoroutinefunction(func) else "plain"
                _count(f"reached_aioexec_{kind}")
        return loop_class_run_in_executor(self, executor_arg, func, *args)

    # An instance attribute: the class's function (whose frame aioexec looks for) still does
    # the work, one frame below this wrapper.
    self.run_in_executor = run_in_executor  # type: ignore[method-assign]


asyncio.BaseEventLoop.__init__ = _init_with_aioexec_default  # type: ignore[method-assign]


def counts() -> dict[str, int]:
    """A snapshot of the counts (also used by the plugin's own self-test)."""
    with _counts_lock:
        return dict(_counts)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        report = {
            "aioexec": os.path.dirname(aioexec.__file__ or "?"),  # which copy was tested
            "tests_collected": session.testscollected,
            **counts(),
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(report, f)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    summary = ", ".join(f"{key}={value}" for key, value in sorted(counts().items()))
    terminalreporter.write_line(f"aioexec default executor plugin: {summary or 'no loop made'}")
