"""``aioexec.ray`` without Ray: an ImportError that names the extra; ``aioexec`` never imports
Ray. These run everywhere (no Ray, no network namespace needed): Ray is hidden from a fresh
interpreter by a meta path finder."""

from __future__ import annotations

import subprocess
import sys
import textwrap

HIDE_RAY = textwrap.dedent(
    """
    import sys

    class HideRay:
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, HideRay())
    """
)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HIDE_RAY + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_aioexec_ray_without_ray_names_the_extra() -> None:
    done = run(
        """
        try:
            import aioexec.ray
        except ImportError as exc:
            print("ImportError:", exc)
        else:
            print("imported")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ImportError:")
    assert "pip install 'aioexec-pool[ray]'" in done.stdout


def test_aioexec_works_without_ray_and_never_imports_it() -> None:
    done = run(
        """
        import aioexec
        from aioexec import AsyncProcessExecutor, BrokenWorkerError, in_child
        print(any(m == "ray" or m.startswith("ray.") for m in sys.modules))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
