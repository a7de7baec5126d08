"""Build step: the wheel carries the policy library, the docs and the commit it was built from.

``policies/`` and ``docs/`` stay where they are in the repository (the tests, the README's links
and ``policy test policies/`` use them there); building copies them into the package as
``hardened_launcher/policy_library/`` and ``hardened_launcher/docs/``. Editable installs skip the
copy: the package then finds the checkout's folders (hardened_launcher/buildinfo.py).

Two optional C extensions of the redaction engine (docs/redaction.md),
``hardened_launcher.redaction._linescan`` (wrap-break triggers and joined windows) and
``hardened_launcher.redaction._matches`` (match collection and the greedy choice): built for the
stable ABI of Python 3.11+, reproducibly (``-g0``, no build paths, no run path of the build
machine's Python); an install without a C compiler skips them and the engine uses its
pure-Python paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
BUNDLED = (("policies", "policy_library", "*.rego"), ("docs", "docs", "*.md"))
COMMIT_FILE = "_commit.txt"


def _commit() -> str:
    """HL_BUILD_COMMIT, else git, else the commit recorded in an sdist."""
    given = os.environ.get("HL_BUILD_COMMIT", "").strip()
    if given:
        return given
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    recorded = ROOT / COMMIT_FILE
    return recorded.read_text(encoding="ascii").strip() if recorded.is_file() else "unknown"


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        package = Path(self.build_lib) / "hardened_launcher"
        # The C source is in the sdist (for the build); the wheel carries the built module.
        for c_source in sorted(package.rglob("*.c")):
            c_source.unlink()
        for source, target, pattern in BUNDLED:
            destination = package / target
            shutil.rmtree(destination, ignore_errors=True)
            destination.mkdir(parents=True)
            for path in sorted((ROOT / source).glob(pattern)):
                shutil.copyfile(path, destination / path.name)
        (package / COMMIT_FILE).write_text(_commit() + "\n", encoding="ascii")


class Sdist(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        commit_file = Path(base_dir) / COMMIT_FILE
        commit_file.unlink(missing_ok=True)
        commit_file.write_text(_commit() + "\n", encoding="ascii")


class BuildExt(build_ext):
    def build_extensions(self) -> None:
        # The interpreter's LDSHARED may carry ``-Wl,-rpath,<its prefix>``: a path of the build
        # machine in the object, and not needed (an extension does not link libpython).
        linker = getattr(self.compiler, "linker_so", None)
        if isinstance(linker, list):
            self.compiler.linker_so = [a for a in linker if not a.startswith("-Wl,-rpath")]
        super().build_extensions()


def _extension(name: str) -> Extension:
    """An optional compiled helper of the redaction engine (a pure-Python path exists)."""
    return Extension(
        f"hardened_launcher.redaction.{name}",
        sources=[f"hardened_launcher/redaction/{name}.c"],
        # After the interpreter's CFLAGS (-g -O3): no debug information (it holds build
        # paths), and a path that still reaches the object (__FILE__) is made relative.
        extra_compile_args=["-O2", "-g0", f"-ffile-prefix-map={ROOT}/=", "-Wall", "-Wextra"],
        py_limited_api=True,
        optional=True,
    )


setup(
    cmdclass={"build_py": BuildPy, "build_ext": BuildExt, "sdist": Sdist},
    ext_modules=[_extension("_linescan"), _extension("_matches")],
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
