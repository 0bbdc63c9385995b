"""Run a third-party library's own test suite twice, with asyncio's default executor and with
aioexec as every event loop's default executor, and compare the outcomes test by test.

Used by ``tests/test_thirdparty_suites.py``. The steps, each bounded in time:

1. ``pip download --no-binary :all: --no-deps NAME==VERSION``: the library's sdist (its tests
   ship in it), cached as ``sdists/NAME-VERSION.tar.gz`` under the cache directory and unpacked
   afresh into the test's temporary directory for every run. Nothing third-party is committed.
2. A *tools venv* with the pinned test tools (pytest, pytest-asyncio, pytest-timeout), made
   from the running interpreter and cached under ``venvs/`` keyed by the interpreter and the
   pins. A dedicated venv rather than the running one: installing pytest-asyncio into aioexec's
   own venv would load it (an entry-point plugin) into aioexec's own test runs and make the CI
   venvs drift from run to run, and the library's tests get the tool versions they were written
   for. The library is imported from its unpacked source and aioexec from this repository,
   both through ``PYTHONPATH``, so the venv never needs rebuilding when either changes.
3. Two runs of the suite, each ``python -m pytest`` in its own process group under coreutils'
   ``timeout`` (SIGINT, then SIGKILL) so that a hang costs a bounded time and leaves no process
   behind even if the calling pytest dies; inside, pytest-timeout's signal method fails a single
   hung test and lets the run go on. The second run loads ``aioexec_default_plugin``.
4. The two junit XML reports are compared: every test that passed in the baseline must pass
   with aioexec, and the plugin's counts must show that aioexec really was the loops' default
   executor and was called.

The cache directory is ``$AIOEXEC_THIRDPARTY_CACHE``, else ``$XDG_CACHE_HOME/aioexec-thirdparty``,
else ``~/.cache/aioexec-thirdparty``; entries are built under a file lock (several sessions
share a machine) and marked complete last, so an interrupted build is redone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
REPO_ROOT = PLUGIN_DIR.parent.parent
PLUGIN = "aioexec_default_plugin"

# The test tools, pinned: aiofiles 25.1.0's own uv.lock pins pytest 8.3.5 and pytest-asyncio
# 1.0.0 (its "test" dependency group; coverage is left out, nothing here measures coverage);
# aioshutil 1.6 names pytest and pytest-asyncio unpinned. pytest-timeout is ours (a hung test
# fails alone instead of eating the run's whole time limit).
TEST_TOOLS = ("pytest==8.3.5", "pytest-asyncio==1.0.0", "pytest-timeout==2.4.0")

# Time limits in seconds. Their sum for one suite (two lock waits, the download, the venv,
# two runs with their grace periods: about 1,080 s at worst) stays below the calling test's own
# pytest-timeout (whose thread method would end the whole calling session).
PIP_DOWNLOAD_LIMIT = 150
VENV_BUILD_LIMIT = 200
RUN_LIMIT = 120  # one run of a suite; measured: 2-16 s
PER_TEST_LIMIT = 30  # one test inside a run
KILL_GRACE = 10  # SIGINT -> SIGKILL
LEFTOVER_GRACE = 10  # how long a run's processes may take to exit after it ended
LOCK_WAIT = 210  # longer than another session holds a lock (its own limits)


@dataclasses.dataclass(frozen=True)
class Suite:
    """A library whose own tests run here."""

    name: str  # the distribution name on the index
    version: str  # pinned; the newest on the index when it was added
    import_root: str  # the directory of the unpacked sdist that holds the import package
    min_aioexec_calls: int  # fewer run_in_executor(None, ...) calls reaching aioexec: vacuous
    pytest_args: tuple[str, ...] = ()  # after ours; e.g. to drop the library's coverage addopts


class IndexUnreachableError(Exception):
    """pip could not reach the package index (no network): the caller skips."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # "passed", "failed", "error", "skipped" or "missing"
    message: str = ""


@dataclasses.dataclass
class RunResult:
    label: str
    outcomes: dict[str, Outcome]
    returncode: int
    hung: bool
    seconds: float
    output: str
    plugin_counts: dict[str, int] | None
    leftover_processes: list[str]

    def tally(self) -> dict[str, int]:
        tally = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
        for outcome in self.outcomes.values():
            tally[outcome.status] += 1
        return tally

    def summary(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in self.tally().items())
        state = f"HUNG (killed after {RUN_LIMIT} s)" if self.hung else f"exit {self.returncode}"
        return f"{self.label}: {counts} in {self.seconds:.1f} s, {state}"


@dataclasses.dataclass(frozen=True)
class Difference:
    test: str
    baseline: Outcome
    aioexec: Outcome


# ------------------------------------------------------------------------------ the cache


def cache_root() -> Path:
    explicit = os.environ.get("AIOEXEC_THIRDPARTY_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "aioexec-thirdparty"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``, waited for with a deadline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {LOCK_WAIT} s") from None
                time.sleep(0.5)  # another session builds the same entry: poll its lock
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ pip

# Lower-cased fragments of what pip prints when it cannot connect to the index.
_NETWORK_MARKERS = (
    "newconnectionerror",
    "failed to establish a new connection",
    "temporary failure in name resolution",
    "name or service not known",
    "nodename nor servname provided",
    "network is unreachable",
    "no route to host",
    "connection refused",
    "connecttimeouterror",
    "readtimeouterror",
    "connection timed out",
    "proxyerror",
    "max retries exceeded",
)
# ... and what it concludes from that (rather than, say, a failing build).
_NETWORK_CONCLUSIONS = (
    "no matching distribution found",
    "could not find a version that satisfies",
    "could not install packages due to an oserror",
)


def pip_could_not_reach_index(returncode: int, output: str) -> bool:
    """True when a failed pip command failed because it could not reach the index."""
    text = output.lower()
    return (
        returncode != 0
        and any(marker in text for marker in _NETWORK_MARKERS)
        and any(conclusion in text for conclusion in _NETWORK_CONCLUSIONS)
    )


def run_pip(python: str | Path, args: Sequence[str], limit: float) -> None:
    """Run ``python -m pip ARGS``; IndexUnreachableError if it could not reach the index,
    RuntimeError with pip's output for any other failure."""
    cmd = [
        str(python),
        "-m",
        "pip",
        *args,
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        # This machine's pip default waits 180 s per read; an unreachable index should say so
        # within the command's limit.
        "--timeout",
        "30",
        "--retries",
        "2",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"pip did not finish within {limit} s: {' '.join(cmd)}") from exc
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return
    if pip_could_not_reach_index(proc.returncode, output):
        lines = output.splitlines()
        first_cause = next(ln for ln in lines if any(m in ln.lower() for m in _NETWORK_MARKERS))
        raise IndexUnreachableError(
            f"pip could not reach the package index ({' '.join(args)}): {lines[-1].strip()}; "
            f"first cause: {first_cause.strip()[:300]}"
        )
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-4000:]}")


def fetch_sdist(suite: Suite) -> Path:
    """The library's sdist, downloaded with pip once and cached."""
    entry = cache_root() / "sdists" / f"{suite.name}-{suite.version}"
    with locked(entry.with_name(entry.name + ".lock")):
        if not entry.is_dir():
            staging = entry.with_name(f".{entry.name}.download-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            try:
                run_pip(
                    sys.executable,
                    [
                        *("download", "--no-binary", ":all:", "--no-deps"),
                        *("--dest", str(staging), f"{suite.name}=={suite.version}"),
                    ],
                    PIP_DOWNLOAD_LIMIT,
                )
                os.rename(staging, entry)  # the entry is complete, or absent
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        (archive,) = entry.glob("*.tar.gz")
        return archive


def unpack_sdist(archive: Path, dest: Path) -> Path:
    """Unpack into ``dest``; return the sdist's top directory."""
    with tarfile.open(archive) as tar:
        if sys.version_info >= (3, 12):
            tar.extractall(dest, filter="data")
        else:
            for member in tar.getmembers():  # what the "data" filter refuses, by hand
                target = (dest / member.name).resolve()
                if not target.is_relative_to(dest.resolve()) or not (
                    member.isfile() or member.isdir()
                ):
                    raise RuntimeError(f"unexpected member in {archive}: {member.name}")
            tar.extractall(dest)  # every member checked above
    (top,) = [p for p in dest.iterdir() if p.is_dir()]
    return top


def tools_venv() -> Path:
    """The python of a venv holding TEST_TOOLS, built from the running interpreter once."""
    base_python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    identity = "\n".join([sys.version, base_python, *TEST_TOOLS])
    key = f"py{sys.version_info[0]}.{sys.version_info[1]}-"
    key += hashlib.sha256(identity.encode()).hexdigest()[:12]
    venv = cache_root() / "venvs" / key
    stamp = venv / "aioexec-thirdparty-complete"
    python = venv / "bin" / "python"
    with locked(venv.with_name(venv.name + ".lock")):
        if stamp.exists() and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        deadline = time.monotonic() + VENV_BUILD_LIMIT
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                check=True,
                capture_output=True,
                timeout=VENV_BUILD_LIMIT,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"python -m venv failed:\n{exc.stderr.decode()}") from exc
        run_pip(python, ["install", *TEST_TOOLS], max(deadline - time.monotonic(), 1))
        stamp.write_text(identity)
        return python


# ------------------------------------------------------------------------------ one run


def run_suite(
    suite: Suite, python: Path, source: Path, workdir: Path, *, with_aioexec: bool
) -> RunResult:
    """One run of the suite's tests (in ``source``) by ``python``; outputs go to workdir."""
    label = "aioexec" if with_aioexec else "baseline"
    junit = workdir / f"{suite.name}-{label}.xml"
    counts_file = workdir / f"{suite.name}-{label}-plugin.json"
    log = workdir / f"{suite.name}-{label}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(source / suite.import_root), str(REPO_ROOT), str(PLUGIN_DIR)]
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONASYNCIODEBUG", None)
    env["AIOEXEC_PLUGIN_REPORT"] = str(counts_file)
    pytest_cmd = [
        str(python),
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        f"--junitxml={junit}",
        f"--timeout={PER_TEST_LIMIT}",
        "--timeout-method=signal",
        *(["-p", PLUGIN] if with_aioexec else []),
        *suite.pytest_args,
    ]
    timeout_bin = shutil.which("timeout")
    if timeout_bin is not None:
        cmd = [timeout_bin, "--signal=INT", f"--kill-after={KILL_GRACE}", str(RUN_LIMIT)]
        cmd += pytest_cmd
    else:
        cmd = pytest_cmd
    start = time.monotonic()
    with open(log, "wb") as out:
        # Its own session and process group: the run and every process it starts (aioexec's
        # forkserver and children included) can be found and killed as one.
        proc = subprocess.Popen(
            cmd, cwd=source, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        hung = False
        try:
            returncode = proc.wait(RUN_LIMIT + KILL_GRACE + 15)
        except subprocess.TimeoutExpired:
            # Only without coreutils' timeout, or if it failed to end the run.
            hung = True
            _kill_group(proc.pid)
            returncode = proc.wait(15)
    seconds = time.monotonic() - start
    hung = hung or returncode in (124, 137) or returncode == -signal.SIGKILL
    leftovers = _reap_group(proc.pid)
    counts = json.loads(counts_file.read_text()) if counts_file.exists() else None
    return RunResult(
        label=label,
        outcomes=parse_junit(junit),
        returncode=returncode,
        hung=hung,
        seconds=seconds,
        output=log.read_text(errors="replace"),
        plugin_counts=counts,
        leftover_processes=leftovers,
    )


def _group_members(pgid: int) -> list[str]:
    """``pid command line`` of each process in process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) != pgid:
                continue
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        members.append(f"{stat.parent.name} {b' '.join(argv).decode(errors='replace')[:200]}")
    return members


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _reap_group(pgid: int) -> list[str]:
    """Processes of the run still alive after LEFTOVER_GRACE s; they are killed."""
    if not Path("/proc/self/stat").exists():
        return []
    deadline = time.monotonic() + LEFTOVER_GRACE
    members = _group_members(pgid)
    while members and time.monotonic() < deadline:
        time.sleep(0.1)  # children exit on their own once their parent is gone: poll for it
        members = _group_members(pgid)
    if members:
        _kill_group(pgid)
    return members


# ------------------------------------------------------------------------------ junit


def parse_junit(path: Path) -> dict[str, Outcome]:
    """Test id -> outcome, from pytest's junit XML (empty if the run wrote none)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
    outcomes: dict[str, Outcome] = {}
    for case in root.iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = Outcome("passed")
        for tag, status in (("skipped", "skipped"), ("failure", "failed"), ("error", "error")):
            element = case.find(tag)
            if element is not None:
                message = (element.get("message") or element.text or "").strip()
                outcome = Outcome(status, message.splitlines()[0] if message else "")
        previous = outcomes.get(test)
        if previous is None or rank[outcome.status] > rank[previous.status]:
            outcomes[test] = outcome
    return outcomes


def regressions(baseline: RunResult, candidate: RunResult) -> list[Difference]:
    """Tests that passed in the baseline and did not pass (or did not run) in the candidate."""
    missing = Outcome("missing", "hung: the run was killed" if candidate.hung else "not run")
    return [
        Difference(test, outcome, candidate.outcomes.get(test, missing))
        for test, outcome in sorted(baseline.outcomes.items())
        if outcome.status == "passed" and candidate.outcomes.get(test, missing).status != "passed"
    ]


def improvements(baseline: RunResult, candidate: RunResult) -> list[Difference]:
    """Tests that pass only with aioexec (reported, never a failure)."""
    return [
        Difference(test, baseline.outcomes.get(test, Outcome("missing")), outcome)
        for test, outcome in sorted(candidate.outcomes.items())
        if outcome.status == "passed"
        and baseline.outcomes.get(test, Outcome("missing")).status != "passed"
    ]


def table(differences: Sequence[Difference], limit: int = 60) -> str:
    """The differences as a fixed-width table, at most ``limit`` rows."""
    if not differences:
        return "(none)"
    width = min(max(len(d.test) for d in differences), 70)
    lines = [f"{'test':<{width}}  {'baseline':<8}  {'aioexec':<8}  aioexec's message"]
    lines.append("-" * len(lines[0]))
    for d in differences[:limit]:
        message = d.aioexec.message[:100] or d.baseline.message[:100]
        lines.append(
            f"{d.test[-width:]:<{width}}  {d.baseline.status:<8}  {d.aioexec.status:<8}  {message}"
        )
    if len(differences) > limit:
        lines.append(f"... and {len(differences) - limit} more")
    return "\n".join(lines)
