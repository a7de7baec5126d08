"""The lock files (scripts/lock) pin every dependency of pyproject.toml exactly, with hashes.

A failure here after a dependency change means: run scripts/lock and commit requirements/*.lock.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"
DEV_LOCK = ROOT / "requirements" / "dev.lock"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)(\[[^\]]*\])?==(?P<version>[^\s;\\]+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})\b")


def _entries(lock: Path) -> dict[str, tuple[Version, int]]:
    """Name → (pinned version, number of sha256 hashes), one entry per requirement line."""
    logical: list[str] = []
    for raw in lock.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].rstrip() if raw.lstrip().startswith("#") else raw.rstrip()
        if not line.strip():
            continue
        if logical and logical[-1].endswith("\\"):
            logical[-1] = logical[-1][:-1] + " " + line.strip()
        else:
            logical.append(line.strip())
    entries: dict[str, tuple[Version, int]] = {}
    for line in logical:
        match = PIN.match(line)
        assert match, f"{lock.name}: not an exact pin: {line[:80]}"
        name = canonicalize_name(match["name"])
        assert name not in entries, f"{lock.name}: {name} pinned twice"
        entries[name] = (Version(match["version"]), len(HASH.findall(line)))
    return entries


def _declared(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    if extra is not None:
        declared += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return declared


@pytest.mark.parametrize(("lock", "extra"), [(RUNTIME_LOCK, None), (DEV_LOCK, "dev")])
def test_every_declared_dependency_is_locked_within_its_range(
    lock: Path, extra: str | None
) -> None:
    entries = _entries(lock)
    for requirement in _declared(extra):
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{name} is not in {lock.name}: run scripts/lock"
        version, _ = entries[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {name}=={version} outside {requirement.specifier}: run scripts/lock"
        )


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK])
def test_every_pin_carries_hashes(lock: Path) -> None:
    entries = _entries(lock)
    assert len(entries) >= 10
    unhashed = sorted(name for name, (_, hashes) in entries.items() if hashes == 0)
    assert unhashed == []


def test_runtime_pins_are_the_dev_pins() -> None:
    runtime, dev = _entries(RUNTIME_LOCK), _entries(DEV_LOCK)
    differing = {n: (v, dev.get(n)) for n, (v, _) in runtime.items() if dev.get(n, (None,))[0] != v}
    assert differing == {}


def test_the_forked_policy_engine_stays_exactly_pinned() -> None:
    (engine,) = [r for r in _declared(None) if r.name == "gordon-to-regorus"]
    assert str(engine.specifier).startswith("==")


@pytest.mark.parametrize(
    "text",
    [
        "requests>=2\n",  # a range is not a pin
        "requests\n",
        "-e .\n",
        "git+https://example.invalid/x.git\n",
    ],
)
def test_the_parser_rejects_anything_but_exact_pins(tmp_path: Path, text: str) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(text, encoding="utf-8")
    with pytest.raises(AssertionError, match="not an exact pin"):
        _entries(lock)


def test_the_parser_counts_hashes_across_continuation_lines(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    digest = "a" * 64
    lock.write_text(
        f"# header\nfoo==1.0 ; sys_platform == 'linux' \\\n    --hash=sha256:{digest} \\\n"
        f"    --hash=sha256:{'b' * 64}\n    # via bar\nbar==2\n",
        encoding="utf-8",
    )
    assert _entries(lock) == {"foo": (Version("1.0"), 2), "bar": (Version("2"), 0)}
