"""The documentation's examples run: every marked Python block of README.md and docs/**/*.md.

A fenced ```python block is an example when the line just before its fence (blank lines
aside) is one of these HTML comments, which Markdown renders as nothing:

    <!-- run -->                        runs here, as a script, and must exit with status 0
    <!-- run: requires=uvloop,loky -->  the same, skipped unless those modules import
    <!-- pending: REASON -->            shown as a skipped test with REASON (an example of
                                        an API that does not exist yet)

Each example runs as its own script (``python example.py``, in a temporary directory, under
a timeout), so it must be complete: imports, and the ``if __name__ == "__main__":`` guard
that a child process needs. Examples check what they claim with ``assert`` where they can.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Below pytest's own timeout (pyproject.toml), so a hung example fails with its output.
EXAMPLE_TIMEOUT = 45
# The longest code line in docs/ that shows without a scroll bar, alone and side by side.
PAGE_COLUMNS = 79
GRID_COLUMNS = 60

_MARK = re.compile(r"<!--\s*(run|pending)\s*(?::\s*(.*?))?\s*-->")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(\S*)")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    source: Path
    line: int  # 1-based line of the opening fence
    lang: str  # "python", "sh", "text", ...
    code: str
    in_grid: bool  # inside <div class="grid">: one of two blocks side by side
    kind: str = ""  # "run", "pending" or "" (no marker)
    argument: str = ""  # after the marker's colon: "requires=..." or the pending reason

    @property
    def id(self) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line}"


def _blocks(path: Path) -> tuple[list[Block], list[str]]:
    """The fenced blocks of one file, and the problems found: a marker that does not stand
    right before a Python block, an unclosed fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    mark: tuple[int, re.Match[str]] | None = None  # the marker waiting for its block
    in_grid = False
    i = 0
    while i < len(lines):
        line = lines[i]
        found = _MARK.fullmatch(line.strip())
        fence = _FENCE.match(line)
        if found or (fence is None and line.strip()):
            if mark is not None:
                problems.append(f"{path.name}:{mark[0] + 1}: marker without a block")
            mark = (i, found) if found else None
            in_grid = (in_grid or line.startswith('<div class="grid"')) and line != "</div>"
            i += 1
            continue
        if fence is None:  # a blank line
            i += 1
            continue
        indent, ticks, lang = fence.groups()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(ticks):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        if i == len(lines):
            problems.append(f"{path.name}:{start + 1}: unclosed code fence")
        i += 1
        kind = argument = ""
        if mark is not None:
            if lang == "python":
                kind, argument = mark[1].group(1), mark[1].group(2) or ""
            else:
                problems.append(f"{path.name}:{mark[0] + 1}: marker before a {lang!r} block")
            mark = None
        code = "\n".join(body) + "\n"
        blocks.append(Block(path, start + 1, lang, code, in_grid, kind, argument))
    if mark is not None:
        problems.append(f"{path.name}:{mark[0] + 1}: marker without a block")
    return blocks, problems


def _collect() -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    problems: list[str] = []
    for path in SOURCES:
        if path.exists():
            found, wrong = _blocks(path)
            blocks += found
            problems += wrong
    return blocks, problems


BLOCKS, PROBLEMS = _collect()
EXAMPLES = [block for block in BLOCKS if block.kind]


def test_every_marker_stands_before_a_python_block():
    assert PROBLEMS == []


def test_docs_have_runnable_examples():
    # Guards the parser: a change of marker syntax must not turn this test file into a no-op.
    assert sum(example.kind == "run" for example in EXAMPLES) >= 10


def test_code_in_the_docs_fits_the_page_without_scrolling():
    # What fits at a 1280-pixel window (checked with .ci/docs_screenshots.py): a block of
    # its own, and each of two blocks side by side (smaller font, docs/assets/extra.css).
    too_wide = [
        f"{block.id}+{n}: {len(line)} > {limit} columns"
        for block in BLOCKS
        if block.source.is_relative_to(ROOT / "docs")
        for limit in [GRID_COLUMNS if block.in_grid else PAGE_COLUMNS]
        for n, line in enumerate(block.code.splitlines(), 1)
        if len(line) > limit
    ]
    assert too_wide == []


def _missing_modules(argument: str) -> list[str]:
    if not argument:
        return []
    key, _, value = argument.partition("=")
    if key.strip() != "requires" or not value.strip():
        raise ValueError(f"unknown run marker argument {argument!r} (expected requires=a,b)")
    names = [name.strip() for name in value.split(",") if name.strip()]
    return [name for name in names if importlib.util.find_spec(name) is None]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda example: example.id)
def test_documented_example_runs(example: Block, tmp_path: Path):
    if example.kind == "pending":
        pytest.skip(f"{example.id} pending: {example.argument or 'no reason given'}")
    missing = _missing_modules(example.argument)
    if missing:
        pytest.skip(f"{example.id} needs {', '.join(missing)}")
    script = tmp_path / "example.py"
    script.write_text(example.code, encoding="utf-8")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    # Its own session, so that a hung example can be stopped with every process it started.
    with subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=EXAMPLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(
                f"{example.id} did not finish within {EXAMPLE_TIMEOUT} s\n"
                f"--- stdout\n{stdout}\n--- stderr\n{stderr}"
            )
    assert process.returncode == 0, (
        f"{example.id} exited with {process.returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    )
