"""Shared set-up of the executor integration tests: a signed worker release, settings, runner."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from hardened_launcher import __version__
from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.binaries import VerifiedBinaryCache
from hardened_launcher.executor.entrypoint import worker_script_path
from hardened_launcher.executor.runner import DockerRunner, docker_client
from hardened_launcher.pipeline import BinaryGate, ReleaseDirectory
from hardened_launcher.settings import Settings
from tests.unit.test_binaries_support import keyring_of, make_key


@dataclass
class Release:
    root: Path
    gate: BinaryGate
    fingerprint: str


def publish(root: Path, name: str, version: str, data: bytes, key: object) -> None:
    directory = root / name / version
    directory.mkdir(parents=True)
    (directory / name).write_bytes(data)
    sums = f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode()
    (directory / "SHA256SUMS").write_bytes(sums)
    (directory / "SHA256SUMS.asc").write_bytes(key.sign(sums))  # type: ignore[attr-defined]


def signed_release(tmp: Path, extra: dict[str, bytes] | None = None) -> Release:
    """The shipped worker (and ``extra`` name → bytes, version 1.0) signed by a fresh key."""
    key = make_key()
    root = tmp / "releases"
    publish(root, "hl-worker", __version__, worker_script_path().read_bytes(), key)
    for name, data in (extra or {}).items():
        publish(root, name, "1.0", data, key)
    cache_root = tmp / "cache" / "binaries"
    gate = BinaryGate(
        releases=ReleaseDirectory(root=root),
        keyring=keyring_of(key.cert),
        pins=(key.fingerprint,),
        cache=VerifiedBinaryCache(cache_root),
    )
    return Release(root=root, gate=gate, fingerprint=key.fingerprint)


def settings_for(tmp: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "state_dir": tmp / "state",
        "cache_dir": tmp / "cache",
        "audit_dir": tmp / "audit",
        "launcher_logs_timeout": timedelta(seconds=20),
        "launcher_run_timeout": timedelta(seconds=30),
        "run_stop_grace": timedelta(seconds=1),
        "run_memory_bytes": 128 * 1024 * 1024,
        "run_pids_limit": 64,
        "run_workspace_bytes": 16 * 1024 * 1024,
        "run_tmp_bytes": 16 * 1024 * 1024,
        "worker_network": "none",
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


def runner_for(settings: Settings) -> DockerRunner:
    return DockerRunner(
        docker_client(),
        logs_timeout=settings.launcher_logs_timeout,
        run_timeout=settings.launcher_run_timeout,
        stop_grace=settings.run_stop_grace,
    )


def new_audit() -> MemoryAuditLog:
    return MemoryAuditLog()


def cleanup_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
