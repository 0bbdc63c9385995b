"""Conformance: CPython's own ProcessPoolExecutor tests, run against our executor.

CPython ships its executor tests as mixins that take the executor class as a
parameter (``test.test_concurrent_futures``: ``util.ExecutorMixin`` builds
``self.executor_type(max_workers=..., mp_context=self.get_context(), ...)``).
This module builds, for the ``spawn`` and ``forkserver`` start methods (never
``fork``), one ``unittest.TestCase`` per mixin exactly as CPython's
``create_executor_tests`` does -- same class names, hence the same test ids as
in CPython -- with ``executor_type`` pointing at the executor under test:

* ``AIOEXEC_CONFORMANCE_EXECUTOR=aioexec`` (default): ``aioexec.AsyncProcessExecutor``
  with ``fallback="error"`` (``tests/conformance_executor.py``), imported lazily
  (when a test first builds an executor), so that collecting this module never
  needs the package;
* ``AIOEXEC_CONFORMANCE_EXECUTOR=stdlib``: ``concurrent.futures.ProcessPoolExecutor``,
  a sanity check of the harness itself: everything must pass.

The nine mixins are ExecutorTest, WaitTests, AsCompletedTests,
ExecutorShutdownTest, ProcessPoolShutdownTest, InitializerMixin,
FailingInitializerMixin, ExecutorDeadlockTest and ProcessPoolExecutorTest. As in
CPython, ExecutorTest runs through its subclass ProcessPoolExecutorTest and
ExecutorShutdownTest through ProcessPoolShutdownTest (a mixin that is a base of
another one in the set gets no class of its own, or its tests would run twice).

Adaptations (each one changes only *which executor class the stdlib test
reaches*, never what it checks; they are no-ops in ``stdlib`` mode):

* ``test_interpreter_shutdown``, ``test_submit_after_interpreter_shutdown``,
  ``test_hang_gh83386`` run a script in a fresh ``python -I`` that does
  ``from concurrent.futures import {executor_type.__name__}``. We rewrite that
  one line of the script to import our class from the same place the test
  process imports it (``sys.path`` of the isolated child gets that directory),
  and add the ``import multiprocessing`` that ``test_hang_gh83386``'s script
  uses but never imports (a latent CPython bug: the test is skipped for
  ProcessPoolExecutor, so the script never ran with a start method).
* ``test_context_manager_shutdown``, ``test_del_shutdown``,
  ``test_shutdown_no_wait`` and ``test_max_workers_too_large`` (Windows only)
  construct ``futures.ProcessPoolExecutor(...)`` by name instead of
  ``self.executor_type``: while they run, the name ``futures`` in their module
  is bound to a view of ``concurrent.futures`` whose ``ProcessPoolExecutor``
  is the executor under test.
* ``ExecutorDeadlockTest.TIMEOUT`` is ``support.SHORT_TIMEOUT`` (30 s) instead
  of ``LONG_TIMEOUT`` (300 s), so that a deadlock is reported by the test's own
  ``_fail_on_deadlock`` (stack dump, workers terminated) before pytest-timeout
  (60 s per test) kills the test without that diagnosis.

What ``python -m test`` does around these tests is done here too: each test's
``BaseTestCase.setUp/tearDown`` (``threading_setup``, ``reap_children``,
``threading_cleanup``) runs unchanged, and a module fixture does what the
package's ``setUpModule`` (``util.setup_module``) registers: a module-wide
``threading_cleanup`` and ``multiprocessing.util._cleanup_tests`` (stops the
forkserver and the resource tracker, reaps children), after killing (and
reporting) any child process still alive, which would make it wait forever.
In addition, a test that passed but set ``test.support.environment_altered``
(a thread still alive 1 s after tearDown's ``shutdown(wait=True)``, a child
process nobody waited for) or left a child process running fails, as under
``python -m test --fail-env-changed`` (CPython's CI) where the module would be
``ENV CHANGED``. Children a test left running are killed after every test,
also after a failed one, whose stdlib body never reached its ``shutdown()``.
``support.use_resources`` stays ``None``, so tests gated on the ``walltime``
resource run (``python -m test`` skips them unless ``-u walltime``).

Expected failures: ``EXPECTED_FAILURES`` maps a test id to the reason the
test contradicts aioexec's deliberate design. Ids are
``"<Class>::<test>"`` where ``<Class>`` is either a generated class
(``ProcessPoolSpawnProcessPoolExecutorTest``: that start method only) or the
stdlib mixin (``ProcessPoolExecutorTest``: every start method). A matching
test method of the generated class is wrapped and marked
``pytest.mark.xfail(strict=True, reason=...)``: pytest evaluates the mark for
the unittest item, a failure anywhere in the unittest run of the test (setUp,
the test, tearDown) is XFAIL and a pass is a strict XPASS, i.e. a failure
telling us to delete the entry. An id whose class is unknown raises at import;
one whose test this CPython's suite lacks (older release) is ignored. The marks apply
only in ``aioexec`` mode: the stdlib must pass everything. ``EXPECTED_HANGS``
(same ids) is for a contradiction that hangs the test instead of failing it:
those are skipped, since a hang is not an xfail (pytest-timeout ends the run).

Children of a ``spawn``/``forkserver`` pool unpickle some test callables by
reference to the generated classes (``ProcessPoolExecutorTest._test_traceback``
is a classmethod), so they import this module by its ``__name__``: keep pytest's
default ``--import-mode`` (prepend/append); ``importlib`` mode breaks that.

Python versions: CPython ships the suite as a package
(``test/test_concurrent_futures/``) since 3.12 (gh-108388) and as one module
``test/test_concurrent_futures.py`` with the same mixins up to 3.11; both are
accepted. Where neither is installed (distributions and some builds strip
``test``) the module is skipped with the reason. ``STDLIB_KNOWN_HANGS`` skips,
in ``stdlib`` mode only, tests that can deadlock ProcessPoolExecutor itself on
the running CPython (gh-125451 before 3.12.8/3.13.1).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import importlib
import inspect
import multiprocessing
import multiprocessing.util
import os
import sys
import threading
import types
import unittest

import pytest

# --------------------------------------------------------------------------
# Which executor is under test.

ENV_VAR = "AIOEXEC_CONFORMANCE_EXECUTOR"
_MODE = os.environ.get(ENV_VAR, "").strip().lower() or "aioexec"

# mode -> (module the class is imported from, class name)
_EXECUTORS = {
    # aioexec's executor with fallback="error", as ProcessPoolExecutor behaves
    "aioexec": ("conformance_executor", "AsyncProcessExecutor"),
    "stdlib": ("concurrent.futures", "ProcessPoolExecutor"),
}
if _MODE not in _EXECUTORS:
    raise ValueError(f"{ENV_VAR}={_MODE!r}: expected one of {sorted(_EXECUTORS)}")
_EXECUTOR_MODULE, _EXECUTOR_NAME = _EXECUTORS[_MODE]

START_METHODS = ("spawn", "forkserver")

#: test id -> why the test contradicts aioexec's design (see module docstring).
#: Applied as ``pytest.mark.xfail(strict=True)`` in ``aioexec`` mode only.
EXPECTED_FAILURES: dict[str, str] = {
    "ProcessPoolExecutorTest::test_python_finalization_error": (
        "the test makes the creation of ProcessPoolExecutor's second internal thread fail; "
        "aioexec has one (its manager), so there is nothing to fail"
    ),
    # A design difference: aioexec can always replace a child, so it runs what was submitted.
    "ProcessPoolExecutorTest::test_gc_during_max_tasks_worker_exit_gh152967": (
        "an executor garbage-collected without shutdown() finishes the submitted work in "
        "aioexec (its engine still starts replacement children); ProcessPoolExecutor 3.14 "
        "fails it, having no way left to start a worker"
    ),
}

#: test id -> reason, for a contradiction that makes the test *hang* rather than fail
#: (e.g. an assertion fails before the test releases a semaphore its tasks wait on, and
#: tearDown's shutdown(wait=True) waits for them forever). Such a test cannot be an
#: xfail: pytest-timeout's "thread" method ends the whole session. Skipped in
#: ``aioexec`` mode only.
EXPECTED_HANGS: dict[str, str] = {
    # A test of ProcessPoolExecutor's private machinery (3.14); after the failed assertion,
    # its cleanup waits 30 s for a manager thread it never shuts down.
    "ProcessPoolExecutorTest::test_failed_worker_replacement_breaks_pool": (
        "it patches concurrent.futures.process._spawn_worker, which aioexec never calls: "
        "the replacement child starts and the queued work runs"
    ),
    "ProcessPoolExecutorTest::test_broken_process_pool_traceback": (
        "it kills one worker and waits for the whole pool to break; in aioexec only that "
        "child's task fails and the others wait on an event the test never sets"
    ),
}


def _has_gh125451() -> bool:
    """ProcessPoolExecutor can deadlock when shutdown() races a task that failed to pickle.

    The feeder thread takes ``_shutdown_lock`` in ``_on_queue_feeder_error`` while the
    manager thread holds it and joins the feeder. Fixed in 3.12.8 and 3.13.1 (never
    in 3.10/3.11). Seen here on 3.13.0 in about 1 run in 75 of test_processes_terminate
    (its semaphore arguments cannot be pickled) and 1 in 100 of test_shutdown_deadlock_pickle.
    """
    version = sys.version_info[:3]
    return version < (3, 12, 8) or (3, 13, 0) <= version < (3, 13, 1)


#: test id -> reason: tests that can hang ProcessPoolExecutor itself on this CPython;
#: skipped in ``stdlib`` mode only (the harness check), never for aioexec.
STDLIB_KNOWN_HANGS: dict[str, str] = {}
if _has_gh125451():
    for _test_id in (
        "ProcessPoolShutdownTest::test_processes_terminate",
        "ExecutorDeadlockTest::test_shutdown_deadlock_pickle",
    ):
        STDLIB_KNOWN_HANGS[_test_id] = (
            "CPython gh-125451 (fixed in 3.12.8/3.13.1): ProcessPoolExecutor.shutdown() can "
            "deadlock with the queue feeder thread reporting a pickling error"
        )


@functools.cache
def executor_type() -> type:
    """The executor class under test, imported on first use."""
    try:
        module = importlib.import_module(_EXECUTOR_MODULE)
        return getattr(module, _EXECUTOR_NAME)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"{ENV_VAR}={_MODE}: cannot import {_EXECUTOR_NAME} from "
            f"{_EXECUTOR_MODULE} ({exc!r}); {ENV_VAR}=stdlib runs the same "
            f"tests against concurrent.futures.ProcessPoolExecutor"
        ) from exc


class _ExecutorTypeAttribute:
    """``executor_type`` class attribute that resolves the class lazily."""

    def __get__(self, instance, owner=None):
        return executor_type()


# --------------------------------------------------------------------------
# Locate CPython's suite.

_NINE_MIXINS = (
    "ExecutorTest",
    "WaitTests",
    "AsCompletedTests",
    "ExecutorShutdownTest",
    "ProcessPoolShutdownTest",
    "InitializerMixin",
    "FailingInitializerMixin",
    "ExecutorDeadlockTest",
    "ProcessPoolExecutorTest",
)
_SUPPORT_NAMES = ("BaseTestCase", "ProcessPoolSpawnMixin", "ProcessPoolForkserverMixin")
# Submodules of the split package (3.12.x/3.13+) that define those names.
_PACKAGE_SUBMODULES = (
    "util",
    "executor",
    "test_wait",
    "test_as_completed",
    "test_shutdown",
    "test_init",
    "test_deadlock",
    "test_process_pool",
)


def _load_stdlib_suite() -> tuple[dict[str, object], str]:
    """Return ({name: object} for the mixins and helpers, description)."""
    try:
        from test import support  # noqa: F401
    except ImportError as exc:
        raise unittest.SkipTest(
            f"Python {sys.version.split()[0]} has no test.support ({exc}); "
            "its stdlib test package is not installed"
        ) from exc
    try:
        package = importlib.import_module("test.test_concurrent_futures")
    except ModuleNotFoundError as exc:
        raise unittest.SkipTest(
            f"Python {sys.version.split()[0]} at {sys.prefix} does not ship "
            f"test.test_concurrent_futures ({exc})"
        ) from exc
    names: dict[str, object] = {}
    if hasattr(package, "__path__"):  # split package
        layout = "package test.test_concurrent_futures"
        modules = []
        for sub in _PACKAGE_SUBMODULES:
            try:
                modules.append(importlib.import_module(f"{package.__name__}.{sub}"))
            except ModuleNotFoundError:
                continue
        for module in modules:
            for name in _NINE_MIXINS + _SUPPORT_NAMES:
                if name in vars(module) and name not in names:
                    names[name] = vars(module)[name]
    else:  # one module (3.8-3.11)
        layout = "module test/test_concurrent_futures.py"
        names = {n: vars(package)[n] for n in _NINE_MIXINS + _SUPPORT_NAMES if n in vars(package)}
    missing = [n for n in _NINE_MIXINS + _SUPPORT_NAMES if n not in names]
    if missing:
        raise unittest.SkipTest(
            f"Python {sys.version.split()[0]}: {layout} lacks {', '.join(missing)}"
        )
    return names, layout


try:
    _STDLIB, STDLIB_LAYOUT = _load_stdlib_suite()
    from test import support
    from test.support import threading_helper

    # What the package's __init__ checks before any of its tests run.
    if not getattr(threading_helper, "can_start_thread", True):
        raise unittest.SkipTest("requires working threading")
    if getattr(support, "check_sanitizer", lambda **kw: False)(address=True, memory=True):
        raise unittest.SkipTest("too slow on ASAN/MSAN builds (gh-90791)")
except unittest.SkipTest as exc:
    pytest.skip(f"CPython executor conformance suite unavailable: {exc}", allow_module_level=True)


# --------------------------------------------------------------------------
# Adaptations (see module docstring). Each wraps one stdlib test method.


def _rewrite_script_import(script: str) -> str:
    """Make a ``python -c`` script import the executor under test."""
    line = f"from concurrent.futures import {_EXECUTOR_NAME}"
    if script.count(line) != 1:
        raise AssertionError(
            f"conformance harness: expected exactly one {line!r} in the stdlib "
            f"test's script; the stdlib test changed, update the adaptation:\n{script}"
        )
    # One logical line (';'), so the script's indentation is kept.
    replacement = "import multiprocessing; "  # test_hang_gh83386's script uses it unimported
    if _MODE != "stdlib":
        # The child runs with -I (no PYTHONPATH, no cwd): let it import the very
        # modules this process imported, for the class and each of its bases
        # (tests/conformance_executor.py and the aioexec package).
        roots: list[str] = []
        for cls in executor_type().__mro__:
            module = sys.modules.get(cls.__module__.partition(".")[0])
            if getattr(module, "__file__", None) is None:
                continue
            root = os.path.dirname(os.path.abspath(module.__file__))
            if hasattr(module, "__path__"):  # a package: its parent directory
                root = os.path.dirname(root)
            if root not in roots:
                roots.append(root)
        replacement += f"import sys; sys.path[:0] = {roots!r}; "
    replacement += line.replace("concurrent.futures", _EXECUTOR_MODULE)
    return script.replace(line, replacement)


def _script_import_adapted(method):
    """Run ``method`` with its ``assert_python_ok`` scripts importing our class."""
    module_globals = inspect.unwrap(method).__globals__
    real_assert_python_ok = module_globals["assert_python_ok"]

    def assert_python_ok(*args, **env_vars):
        args = list(args)
        index = args.index("-c") + 1
        args[index] = _rewrite_script_import(args[index])
        return real_assert_python_ok(*args, **env_vars)

    @functools.wraps(method)
    def test(self):
        with support.swap_item(module_globals, "assert_python_ok", assert_python_ok):
            return method(self)

    return test


class _FuturesWithOurExecutor(types.ModuleType):
    """``concurrent.futures`` whose ``ProcessPoolExecutor`` is the class under test."""

    def __init__(self):
        super().__init__(concurrent.futures.__name__, concurrent.futures.__doc__)

    def __getattr__(self, name):
        if name == "ProcessPoolExecutor":
            return executor_type()
        return getattr(concurrent.futures, name)


def _futures_name_adapted(method):
    """Run ``method`` with the global ``futures`` naming our executor."""
    module_globals = inspect.unwrap(method).__globals__
    assert module_globals["futures"] is concurrent.futures, method

    @functools.wraps(method)
    def test(self):
        with support.swap_item(module_globals, "futures", _FuturesWithOurExecutor()):
            return method(self)

    return test


def _executor_kept_case_only(method):
    """Python 3.14's test_shutdown_no_wait_max_tasks_gh119592 runs two cases as subtests: the
    executor kept after ``shutdown(wait=False)`` (aioexec runs the queued work, as asked),
    and the executor also garbage-collected, which is the design difference of
    test_gc_during_max_tasks_worker_exit_gh152967 (an expected failure). Only the first
    case runs here: a strict xfail cannot cover one subtest of two."""

    @functools.wraps(method)
    def test(self):
        self._run_stranded_worker_exit_test(shutdown=True, drop_reference=False)

    return test


# test name -> adapter; applied to whichever generated class has the test.
_ADAPTATIONS = {
    "test_shutdown_no_wait_max_tasks_gh119592": _executor_kept_case_only,
    "test_interpreter_shutdown": _script_import_adapted,
    "test_submit_after_interpreter_shutdown": _script_import_adapted,
    "test_hang_gh83386": _script_import_adapted,
    "test_context_manager_shutdown": _futures_name_adapted,
    "test_del_shutdown": _futures_name_adapted,
    "test_shutdown_no_wait": _futures_name_adapted,
    "test_max_workers_too_large": _futures_name_adapted,
}


def _kill_children(keep=()) -> list[str]:
    """Kill this process's multiprocessing children not in ``keep``; describe them."""
    leftovers = [p for p in multiprocessing.active_children() if p not in keep]
    described = [repr(p) for p in leftovers]
    for process in leftovers:
        with contextlib.suppress(ValueError):  # closed meanwhile by its owner
            process.kill()
    for process in leftovers:
        with contextlib.suppress(ValueError):
            process.join(support.SHORT_TIMEOUT)
    return described


class _PythonMinusMTestEnvironment:
    """First base of every generated class: fail a test that alters the environment.

    ``BaseTestCase.tearDown`` sets ``support.environment_altered`` when a child
    process was left for ``reap_children`` or a thread outlived the test by 1 s;
    ``python -m test --fail-env-changed`` fails on that, so do we. A child
    process started during the test and still alive after tearDown (typically
    the pool of an executor that a failed test body never shut down) is killed
    and counts as a change too, so that one failure does not leak into the
    next tests or hang the module's cleanup.
    """

    def setUp(self):
        support.environment_altered = False
        self._children_before_test = set(multiprocessing.active_children())
        # The first cleanup registered runs last: after the test's own cleanups, which may
        # stop processes it started (a multiprocessing Manager's, say).
        self.addCleanup(self._check_environment)
        super().setUp()

    def _check_environment(self):
        altered, support.environment_altered = support.environment_altered, False
        leftovers = _kill_children(keep=self._children_before_test)
        # After a failure the leak is that failure's consequence (stdlib test bodies
        # don't shut down in ``finally``); a second error from tearDown would be a
        # pytest *teardown* error, which an xfail mark does not cover.
        if (altered or leftovers) and not self.__dict__.get("_conformance_test_raised"):
            self.fail(
                "environment altered: a thread or child process outlived the test "
                "(see the warnings of reap_children/threading_cleanup)"
                + (f"; killed child processes left running: {leftovers}" if leftovers else "")
            )


# --------------------------------------------------------------------------
# Generate the test classes, named as CPython's create_executor_tests names them.


def _strip_mixin(name: str) -> str:
    if name.endswith(("Mixin", "Tests")):
        return name[:-5]
    if name.endswith("Test"):
        return name[:-4]
    return name


def _test_names(cls) -> list[str]:
    return sorted(n for n in dir(cls) if n.startswith("test") and callable(getattr(cls, n)))


def _noting_failure(method):
    """Wrap a test method so that tearDown knows whether the test itself failed."""

    @functools.wraps(method)
    def test(self):
        try:
            return method(self)
        except unittest.SkipTest:
            raise
        except BaseException:
            self._conformance_test_raised = True
            raise

    return test


def _expected_failure(method, reason: str):
    @functools.wraps(method)
    def test(self):
        return method(self)

    return pytest.mark.xfail(strict=True, reason=reason)(test)


def _generate() -> dict[str, type]:
    mixins = [_STDLIB[n] for n in _NINE_MIXINS]
    # A mixin that another one subclasses runs through the subclass only.
    leaves = [m for m in mixins if not any(o is not m and issubclass(o, m) for o in mixins)]
    executor_mixins = {
        "spawn": _STDLIB["ProcessPoolSpawnMixin"],
        "forkserver": _STDLIB["ProcessPoolForkserverMixin"],
    }
    classes: dict[str, type] = {}
    for mixin in leaves:
        for method in START_METHODS:
            exe = executor_mixins[method]
            assert exe.ctx == method, exe
            name = f"{_strip_mixin(exe.__name__)}{_strip_mixin(mixin.__name__)}Test"
            namespace = {
                "__module__": __name__,
                "__qualname__": name,
                "executor_type": _ExecutorTypeAttribute(),
            }
            if mixin is _STDLIB["ExecutorDeadlockTest"]:
                namespace["TIMEOUT"] = support.SHORT_TIMEOUT
            for test_name, adapt in _ADAPTATIONS.items():
                if hasattr(mixin, test_name):
                    namespace[test_name] = adapt(getattr(mixin, test_name))
            bases = (_PythonMinusMTestEnvironment, mixin, exe, _STDLIB["BaseTestCase"])
            cls = type(name, bases, namespace)
            for test_name in _test_names(cls):
                setattr(cls, test_name, _noting_failure(getattr(cls, test_name)))
            classes[name] = cls
    return classes


def _skipped(method, reason: str):
    @functools.wraps(method)
    def test(self):
        return method(self)

    return unittest.skip(reason)(test)


def _apply_table(classes: dict[str, type], table: dict[str, str], decorate, active: bool) -> None:
    """Decorate the generated tests named by ``table``'s ids (see module docstring)."""
    by_mixin: dict[str, list[type]] = {}
    for cls in classes.values():
        for base in cls.__mro__[1:]:
            by_mixin.setdefault(base.__name__, []).append(cls)
    for test_id, reason in table.items():
        class_name, sep, test_name = test_id.partition("::")
        targets = [classes[class_name]] if class_name in classes else by_mixin.get(class_name, [])
        if not sep or not targets:
            raise ValueError(f"{test_id!r} names no generated class or stdlib mixin")
        # A test that this CPython's suite does not have yet (e.g. 3.13's
        # test_python_finalization_error on 3.10) is simply not marked.
        targets = [c for c in targets if test_name in _test_names(c)]
        if active:
            for cls in targets:
                setattr(cls, test_name, decorate(getattr(cls, test_name), reason))


_GENERATED = _generate()
_apply_table(_GENERATED, EXPECTED_FAILURES, _expected_failure, active=_MODE == "aioexec")
_apply_table(_GENERATED, EXPECTED_HANGS, _skipped, active=_MODE == "aioexec")
_apply_table(_GENERATED, STDLIB_KNOWN_HANGS, _skipped, active=_MODE == "stdlib")
globals().update(_GENERATED)


@pytest.fixture(scope="module", autouse=True)
def _stdlib_module_setup_and_cleanups():
    """What ``util.setup_module()`` registers with ``unittest.addModuleCleanup``.

    Cleanups run last-registered first: ``threading_cleanup`` then
    ``multiprocessing.util._cleanup_tests`` (stops the forkserver and the
    resource tracker, runs finalizers, reaps children).

    Unlike under ``python -m test``, child processes still alive at that point
    are killed first, and reported as an error: ``_cleanup_tests`` waits for
    the resource tracker, which lives as long as any child holding its pipe,
    and after a failed test neither pytest-timeout nor faulthandler's
    watchdog covers the teardown (both stop at ``pytest_exception_interact``),
    so one leaked child would hang the session.
    """
    from concurrent.futures.process import _check_system_limits

    thread_info = threading_helper.threading_setup()
    yield
    threading_helper.threading_cleanup(*thread_info)
    leftovers = _kill_children()
    try:
        _check_system_limits()
    except NotImplementedError:
        pass
    else:
        cleanup = threading.Thread(
            target=multiprocessing.util._cleanup_tests, name="conformance-cleanup", daemon=True
        )
        cleanup.start()
        cleanup.join(support.SHORT_TIMEOUT)
        if cleanup.is_alive():
            pytest.fail(
                "multiprocessing.util._cleanup_tests() still waits after "
                f"{support.SHORT_TIMEOUT:.0f}s (the forkserver or resource tracker does not "
                "exit: a process outside multiprocessing.active_children() holds its pipe)"
            )
    if leftovers:
        pytest.fail(
            f"{len(leftovers)} child process(es) outlived every test of the module "
            f"(killed now): {leftovers}"
        )
