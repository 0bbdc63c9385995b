"""Tests of the Ray engine; the Ray cases run only inside a loopback-only network namespace.

A package, so that nothing here is a second top-level ``conftest`` module (that would replace
``tests/conftest.py`` in ``sys.modules`` and break ``from conftest import ...``). Not named
``ray``: that would shadow Ray itself. Its fixtures (``fixtures.py``) are registered once, by
``tests/conftest.py``, so that ``tests/test_contract.py`` shares the session's Ray cluster.
"""
