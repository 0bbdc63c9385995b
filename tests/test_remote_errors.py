"""Errors from a child keep their type and traceback; exceptions, results and arguments that
cannot cross the process boundary fail only their own future, with a message naming the
object, and the executor keeps working after each."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

import helpers
import pytest

import aioexec
from aioexec import AsyncProcessExecutor, DeliveryError

TIMEOUT = 30


def _full_message(exc: BaseException) -> str:
    """str(exc) plus its notes (Python 3.10 has notes only as an attribute)."""
    return "\n".join([str(exc), *getattr(exc, "__notes__", [])])


def _exception(future: Future[object]) -> BaseException:
    exc = future.exception(TIMEOUT)
    assert exc is not None, f"expected a failure, got {future.result()!r}"
    return exc


def _assert_still_works(ex: AsyncProcessExecutor) -> None:
    fs = [ex.submit(helpers.async_double, 5), ex.submit(helpers.double, 6)]
    assert [f.result(TIMEOUT) for f in fs] == [10, 12]


@pytest.mark.parametrize(
    ("fn", "raising_line"),
    [
        (helpers.raise_value_error, "raise ValueError(message)  # raise_value_error's"),
        (helpers.async_raise_value_error, "raise ValueError(message)  # async_raise_value_"),
    ],
    ids=["plain", "coroutine"],
)
def test_exception_keeps_its_type_and_the_remote_traceback(
    shared_executor: AsyncProcessExecutor, fn: Callable[[str], object], raising_line: str
) -> None:
    exc = _exception(shared_executor.submit(fn, "the message"))
    assert type(exc) is ValueError
    assert exc.args == ("the message",)
    cause = exc.__cause__
    assert isinstance(cause, aioexec.RemoteTraceback)
    assert raising_line in str(cause)
    assert fn.__name__ in str(cause)
    _assert_still_works(shared_executor)


def test_exception_that_cannot_be_rebuilt_in_the_parent_becomes_remote_error(
    shared_executor: AsyncProcessExecutor,
) -> None:
    exc = _exception(shared_executor.submit(helpers.raise_two_argument_error))
    assert isinstance(exc, aioexec.RemoteError)
    assert "TwoArgumentError" in str(exc)
    assert "TwoArgumentError" in exc.type_name
    assert "first argument" in exc.message
    assert "raise TwoArgumentError" in exc.traceback_text
    assert isinstance(exc.__cause__, aioexec.RemoteTraceback)
    _assert_still_works(shared_executor)


def test_unpicklable_exception_becomes_remote_error_naming_its_type(
    shared_executor: AsyncProcessExecutor,
) -> None:
    exc = _exception(shared_executor.submit(helpers.async_raise_lock_holding_error))
    assert isinstance(exc, aioexec.RemoteError)
    assert "LockHoldingError" in str(exc)
    assert "an error holding a lock" in str(exc)
    assert "raise LockHoldingError" in exc.traceback_text
    assert isinstance(exc.__cause__, aioexec.RemoteTraceback)
    _assert_still_works(shared_executor)


def test_unpicklable_result_fails_only_its_own_future(
    shared_executor: AsyncProcessExecutor,
) -> None:
    before = shared_executor.submit(helpers.async_double, 1)
    bad = shared_executor.submit(helpers.return_lock)
    after = shared_executor.submit(helpers.double, 2)
    exc = _exception(bad)
    message = _full_message(exc)
    assert "return_lock" in message  # the function whose result it is
    assert "lock" in message.replace("return_lock", "")  # the object itself
    assert "pickle" in message
    assert (before.result(TIMEOUT), after.result(TIMEOUT)) == (2, 4)
    _assert_still_works(shared_executor)


def test_result_that_cannot_be_unpickled_in_the_parent_fails_only_its_own_future(
    shared_executor: AsyncProcessExecutor,
) -> None:
    before = shared_executor.submit(helpers.async_double, 1)
    bad = shared_executor.submit(helpers.return_child_only_instance)
    after = shared_executor.submit(helpers.double, 2)
    exc = _exception(bad)
    message = _full_message(exc)
    assert isinstance(exc, DeliveryError)  # a BrokenProcessPool, as ProcessPoolExecutor says
    assert isinstance(exc.__cause__, AttributeError)  # the unpickling error itself
    assert "ChildOnlyResultClass" in message  # the class of the object
    assert "unpickle" in message
    assert (before.result(TIMEOUT), after.result(TIMEOUT)) == (2, 4)
    _assert_still_works(shared_executor)


def test_unpicklable_argument_fails_only_its_own_future_with_fallback_error(
    strict_executor: AsyncProcessExecutor,
) -> None:
    before = strict_executor.submit(helpers.async_double, 1)
    lock = threading.Lock()
    bad = strict_executor.submit(helpers.call_record, "fine", lock)
    bad_kwarg = strict_executor.submit(helpers.async_call_record, key=lock)
    after = strict_executor.submit(helpers.double, 2)
    for future, which in ((bad, "positional argument 1"), (bad_kwarg, "keyword argument 'key'")):
        message = _full_message(_exception(future))
        assert which in message
        assert "lock" in message
        assert "pickle" in message
    assert (before.result(TIMEOUT), after.result(TIMEOUT)) == (2, 4)
    _assert_still_works(strict_executor)
