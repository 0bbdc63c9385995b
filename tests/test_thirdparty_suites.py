"""Libraries' own test suites pass with aioexec as every event loop's default executor, with
the same results as with asyncio's own default executor.

Each library's sdist is fetched with pip at test time (cached, never committed) and its tests
run twice in subprocesses: once as they are, once with ``tests/thirdparty/
aioexec_default_plugin.py`` making every new event loop's default executor an
``AsyncProcessExecutor``. A test that passes in the first run and fails, errors, is skipped or
does not run in the second, or a second run that hangs, fails the test here; so does a second
run in which aioexec was never called (the plugin counts the calls). How the suites are fetched
and run is in ``tests/thirdparty/harness.py``.

These tests are marked ``thirdparty``: ``python -m pytest -m "not thirdparty"`` leaves them
out of a quick local run. Without network access to the package index (and nothing cached)
they skip, saying so; any other failure to fetch or install fails them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from thirdparty import harness

SUITES = [
    # aiofiles sends partial(open, ...) and bound methods of open files to
    # run_in_executor(None, ...): ~300 calls in its suite.
    harness.Suite("aiofiles", "25.1.0", import_root="src", min_aioexec_calls=100),
    # aioshutil sends partial(shutil.<function>, ...) to run_in_executor(None, ...), among
    # them functions that change this process's state (register_unpack_format).
    harness.Suite(
        "aioshutil",
        "1.6",
        import_root=".",
        min_aioexec_calls=5,
        pytest_args=("-o", "addopts="),  # its addopts need pytest-cov
    ),
]


@pytest.mark.thirdparty
# Bounds the cold path too (sdist download, tools venv); the harness's own limits stay below
# it, since pytest-timeout's thread method would end this whole session.
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("suite", SUITES, ids=lambda suite: f"{suite.name}-{suite.version}")
def test_library_suite_passes_with_aioexec_as_every_loops_default_executor(
    suite: harness.Suite, tmp_path: Path
) -> None:
    try:
        archive = harness.fetch_sdist(suite)
        python = harness.tools_venv()
    except harness.IndexUnreachableError as exc:
        pytest.skip(str(exc))
    runs = []
    for with_aioexec in (False, True):
        # Each run gets a fresh copy: a suite may leave files in its own tree.
        label = "aioexec" if with_aioexec else "baseline"
        source = harness.unpack_sdist(archive, tmp_path / f"src-{label}")
        runs.append(harness.run_suite(suite, python, source, tmp_path, with_aioexec=with_aioexec))
    baseline, aioexec = runs

    report = [
        f"{suite.name} {suite.version}, {' '.join(harness.TEST_TOOLS)}, Python {sys.version}",
        baseline.summary(),
        aioexec.summary(),
        f"plugin counts: {aioexec.plugin_counts}",
    ]
    improved = harness.improvements(baseline, aioexec)
    if improved:
        report += ["tests that pass only with aioexec:", harness.table(improved)]
    report.append(f"logs and junit reports: {tmp_path}")
    print("\n".join(report))  # shown with -rP or -s, and in the failure below

    problems = []
    if baseline.hung or baseline.tally()["passed"] == 0:
        problems.append(f"the baseline run is broken:\n{baseline.output[-3000:]}")
    if aioexec.hung:
        problems.append(f"the run with aioexec hung; its last output:\n{aioexec.output[-3000:]}")
    for run in runs:
        # pytest's exit code 1 means "some test failed", but also a plugin that fails to load
        if not run.hung and (run.returncode not in (0, 1) or not run.outcomes):
            problems.append(
                f"the {run.label} run reported {len(run.outcomes)} test(s) and ended with exit "
                f"code {run.returncode}; its last output:\n{run.output[-3000:]}"
            )
    regressed = harness.regressions(baseline, aioexec)
    if regressed:
        problems.append(
            f"{len(regressed)} test(s) that pass with asyncio's default executor do not pass "
            f"with aioexec:\n{harness.table(regressed)}"
        )
    counts = aioexec.plugin_counts or {}
    if counts.get("loops_with_aioexec_default", 0) == 0:
        problems.append("no event loop got aioexec as its default executor: a vacuous run")
    if counts.get("reached_aioexec", 0) < suite.min_aioexec_calls:
        problems.append(
            f"only {counts.get('reached_aioexec', 0)} run_in_executor(None, ...) call(s) reached "
            f"aioexec (expected at least {suite.min_aioexec_calls}): a vacuous run"
        )
    for run in runs:
        if run.leftover_processes:
            problems.append(
                f"the {run.label} run left processes behind (killed):\n"
                + "\n".join(run.leftover_processes)
            )
    assert not problems, "\n\n".join([*problems, *report])


# ---------------------------------------------------------------------------- the harness


PLUGIN_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import json
    import sys

    import aioexec_default_plugin as plugin
    from aioexec import AsyncProcessExecutor


    async def probe():
        loop = asyncio.get_running_loop()
        assert isinstance(loop._default_executor, AsyncProcessExecutor), loop._default_executor
        return await loop.run_in_executor(None, sum, [1, 2])


    if __name__ == "__main__":
        results = [asyncio.run(probe())]
        if sys.version_info >= (3, 11):
            with asyncio.Runner() as runner:
                results.append(runner.run(probe()))
        for make in (asyncio.new_event_loop, asyncio.SelectorEventLoop):
            loop = make()
            try:
                results.append(loop.run_until_complete(probe()))
            finally:
                loop.close()
        print(json.dumps({"results": results, "counts": plugin.counts()}))
    """
)


def test_plugin_gives_every_kind_of_new_loop_an_aioexec_default_executor(
    tmp_path: Path,
) -> None:
    script = tmp_path / "plugin_probe.py"
    script.write_text(PLUGIN_SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(harness.PLUGIN_DIR), str(harness.REPO_ROOT)])
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    loops = 4 if sys.version_info >= (3, 11) else 3  # asyncio.Runner is new in 3.11
    assert report["results"] == [3] * loops
    # aioexec's own self-tests (_cpython) make a private loop or two, which count too.
    assert report["counts"]["loops_with_aioexec_default"] >= loops
    assert report["counts"]["reached_aioexec"] == loops


PIP_OFFLINE = """\
WARNING: Retrying (Retry(total=1, connect=None, read=None, redirect=None, status=None)) after \
connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection \
object at 0x7f>: Failed to establish a new connection: [Errno -3] Temporary failure in name \
resolution')': /simple/aiofiles/
ERROR: Could not find a version that satisfies the requirement aiofiles==25.1.0 (from versions: \
none)
ERROR: No matching distribution found for aiofiles==25.1.0
"""

PIP_NO_SUCH_VERSION = """\
ERROR: Could not find a version that satisfies the requirement aiofiles==99 (from versions: \
0.8.0, 23.2.1, 24.1.0, 25.1.0)
ERROR: No matching distribution found for aiofiles==99
"""

PIP_BUILD_FAILED = """\
  error: subprocess-exited-with-error
  Preparing metadata (pyproject.toml) did not run successfully.
ERROR: Could not build wheels; a retry after connection refused would not help
"""


@pytest.mark.parametrize(
    ("output", "unreachable"),
    [(PIP_OFFLINE, True), (PIP_NO_SUCH_VERSION, False), (PIP_BUILD_FAILED, False)],
    ids=["offline", "no-such-version", "build-failed"],
)
def test_only_an_unreachable_index_counts_as_offline(output: str, unreachable: bool) -> None:
    assert harness.pip_could_not_reach_index(1, output) is unreachable
    assert harness.pip_could_not_reach_index(0, output) is False


def _junit(tmp_path: Path, name: str, cases: str) -> Path:
    path = tmp_path / name
    path.write_text(f'<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    return path


def _run(outcomes: dict[str, harness.Outcome], *, hung: bool = False) -> harness.RunResult:
    return harness.RunResult("run", outcomes, 0, hung, 0.0, "", None, [])


def test_junit_outcomes_and_regressions(tmp_path: Path) -> None:
    baseline = harness.parse_junit(
        _junit(
            tmp_path,
            "a.xml",
            '<testcase classname="t" name="ok"/>'
            '<testcase classname="t" name="breaks"/>'
            '<testcase classname="t" name="vanishes"/>'
            '<testcase classname="t" name="skipped_later"/>'
            '<testcase classname="t" name="root"><failure message="root only">x</failure>'
            "</testcase>",
        )
    )
    with_aioexec = harness.parse_junit(
        _junit(
            tmp_path,
            "b.xml",
            '<testcase classname="t" name="ok"/>'
            '<testcase classname="t" name="breaks"><failure message="TypeError: cannot '
            'pickle\nmore">tb</failure><error message="teardown">tb</error></testcase>'
            '<testcase classname="t" name="skipped_later"><skipped message="why"/></testcase>'
            '<testcase classname="t" name="root"/>',
        )
    )
    assert baseline["t::root"] == harness.Outcome("failed", "root only")
    assert with_aioexec["t::breaks"] == harness.Outcome("error", "teardown")
    diffs = harness.regressions(_run(baseline), _run(with_aioexec))
    assert [(d.test, d.aioexec.status) for d in diffs] == [
        ("t::breaks", "error"),
        ("t::skipped_later", "skipped"),
        ("t::vanishes", "missing"),
    ]
    assert harness.regressions(_run(baseline), _run({}, hung=True))[0].aioexec.message == (
        "hung: the run was killed"
    )
    assert [d.test for d in harness.improvements(_run(baseline), _run(with_aioexec))] == ["t::root"]
    assert "t::vanishes" in harness.table(diffs)
    assert harness.parse_junit(tmp_path / "absent.xml") == {}
