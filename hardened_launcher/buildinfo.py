"""What this installation is: version, commit, bundled resources and the libraries that decide.

The wheel's build step (``setup.py``) copies ``policies/`` and ``docs/`` into the package as
``policy_library/`` and ``docs/`` and records the commit in ``_commit.txt``. In a source checkout
(an editable install) those are absent and the checkout's own folders are used instead, so the
repository's tests and the README's links keep pointing at ``policies/``.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hardened_launcher import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT_DIR = PACKAGE_DIR.parent
COMMIT_FILE = "_commit.txt"
MAX_COMMIT_CHARS = 64
GIT_TIMEOUT_S = 2.0


@dataclass(frozen=True, kw_only=True)
class Component:
    """One library whose version matters to an operator or an auditor."""

    role: str
    name: str
    version: str


def _bundled_or_checkout(bundled: str, checkout: str) -> Path | None:
    inside = PACKAGE_DIR / bundled
    if inside.is_dir():
        return inside
    beside = _CHECKOUT_DIR / checkout
    if beside.is_dir() and (_CHECKOUT_DIR / "pyproject.toml").is_file():
        return beside
    return None


def policy_library_dir() -> Path | None:
    """The ready policies: bundled in the wheel, or ``policies/`` of a source checkout."""
    return _bundled_or_checkout("policy_library", "policies")


def docs_dir() -> Path | None:
    """The documentation pages: bundled in the wheel, or ``docs/`` of a source checkout."""
    return _bundled_or_checkout("docs", "docs")


def _valid_commit(text: str) -> str | None:
    text = text.strip()
    if 7 <= len(text) <= MAX_COMMIT_CHARS and all(c in "0123456789abcdef" for c in text):
        return text
    return None


def commit() -> str:
    """The commit this package was built from, ``unknown`` when it cannot be told."""
    recorded = PACKAGE_DIR / COMMIT_FILE
    if recorded.is_file():
        return _valid_commit(recorded.read_text(encoding="ascii", errors="replace")) or "unknown"
    if (_CHECKOUT_DIR / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "-C", str(_CHECKOUT_DIR), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        found = _valid_commit(out.stdout) if out.returncode == 0 else None
        return f"{found} (source checkout)" if found else "unknown"
    return "unknown"


def _distribution_version(name: str) -> str:
    # importlib.metadata brings email, zipfile and csv: only `version` and `doctor` need it.
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _openssl_version() -> str:
    try:
        from cryptography.hazmat.backends.openssl import backend  # noqa: PLC0415
    except ImportError:  # pragma: no cover - cryptography is a hard dependency
        return "unavailable"
    return str(backend.openssl_version_text())


def components() -> tuple[Component, ...]:
    """The libraries behind the gates, with the versions installed now."""
    return (
        Component(
            role="policy engine",
            name="regorus (gordon-to-regorus)",
            version=_distribution_version("gordon-to-regorus"),
        ),
        Component(
            role="OpenSSL",
            name=f"cryptography {_distribution_version('cryptography')}",
            version=_openssl_version(),
        ),
        Component(
            role="OpenPGP",
            name="pysequoia (Sequoia PGP)",
            version=_distribution_version("pysequoia"),
        ),
        Component(
            role="Python", name=platform.python_implementation(), version=platform.python_version()
        ),
    )


def version_report() -> str:
    """The multi-line text of ``--version``."""
    lines = [f"hardened-launcher {__version__}", f"commit: {commit()}"]
    lines.extend(f"{c.role}: {c.name} {c.version}" for c in components())
    return "\n".join(lines)
