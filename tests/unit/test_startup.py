"""The composition root: ``doctor`` and ``start`` run the same checks (one function, one list),
doctor green means start's checks pass, and the components are built once from what they proved.

Real credentials, a real signed release, real settings and file systems; Docker is a fake.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher import doctor
from hardened_launcher.cli import start
from hardened_launcher.doctor import CheckResult, DoctorContext, Status, exit_code_for, run_checks
from hardened_launcher.startup import (
    StartupCheckError,
    build_launcher,
    check_startup,
)
from tests.unit.test_launcher_start import (
    FAST,
    FakeDocker,
    credentials,  # noqa: F401 - a fixture used by ``environment``
    environment,  # noqa: F401 - a fixture
)


class NetworkDocker(FakeDocker):
    def __init__(self, drivers: dict[str, str] | None = None) -> None:
        super().__init__(drivers or {})


def test_doctor_and_start_run_exactly_the_same_checks(
    environment: dict[str, str],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def spy(check: Callable[[DoctorContext], CheckResult]) -> Any:
        def run(ctx: DoctorContext) -> CheckResult:
            calls.append(check.__name__)
            return check(ctx)

        run.__name__ = check.__name__
        return run

    monkeypatch.setattr(doctor, "CHECKS", [spy(c) for c in doctor.CHECKS])
    expected = [c.__name__ for c in doctor.CHECKS]

    results = run_checks(docker_factory=FakeDocker)
    assert exit_code_for(results) == 0, [r for r in results if r.status is Status.FAIL]
    doctor_calls, calls[:] = list(calls), []
    checked = check_startup(docker_factory=FakeDocker)
    assert doctor_calls == calls == expected
    assert [r.name for r in checked.results] == [r.name for r in results]
    assert [r.status for r in checked.results] == [r.status for r in results]
    # And `start` itself goes through check_startup (no list of its own).
    calls[:] = []
    with pytest.raises(Exception):  # noqa: B017 - the closed broker port, after the checks
        start.run(argparse.Namespace(), connect_retry=FAST, docker_factory=FakeDocker)
    assert calls == expected


def _symlink_to_etc(tmp: Path) -> str:
    link = tmp / "innocent"
    link.symlink_to("/etc")
    return f"{link}:/mnt/data:ro"


def _broken_egress(tmp: Path) -> str:
    path = tmp / "egress.yaml"
    path.write_text("allow: [{host: a.com, port: [1]}]\n")
    return str(path)


def _broken_policy(tmp: Path) -> str:
    path = tmp / "bad.rego"
    path.write_text("package spacelift\n\ndeny contains msg if {\n    msg := \n}\n")
    return str(path)


#: Configurations start must refuse; each as (variables to set, to unset, the failing check).
BAD: list[tuple[str, Callable[[Path], dict[str, str]], tuple[str, ...], str]] = [
    ("no release dir", lambda _t: {}, ("HL_RELEASE_DIR",), "worker release"),
    ("no release pins", lambda _t: {}, ("HL_RELEASE_KEY_FINGERPRINTS",), "release keys"),
    ("no keyring", lambda _t: {}, ("HL_RELEASE_KEYRING",), "release keys"),
    ("root worker", lambda _t: {"HL_WORKER_UID": "0"}, (), "settings"),
    ("root group", lambda _t: {"HL_WORKER_GID": "0"}, (), "settings"),
    ("host network", lambda _t: {"SPACELIFT_WORKER_NETWORK": "host"}, (), "settings"),
    ("container ns", lambda _t: {"SPACELIFT_WORKER_NETWORK": "container:db"}, (), "settings"),
    ("missing network", lambda _t: {"SPACELIFT_WORKER_NETWORK": "nope"}, (), "worker network"),
    ("host driver by id", lambda _t: {"SPACELIFT_WORKER_NETWORK": "a1b2c3"}, (), "worker network"),
    (
        "token whitelisted",
        lambda _t: {"SPACELIFT_WHITELIST_ENVS": "ro_spacelift_token"},
        (),
        "settings",
    ),
    (
        "key whitelisted",
        lambda _t: {"SPACELIFT_WHITELIST_ENVS": "SPACELIFT_POOL_PRIVATE_KEY"},
        (),
        "settings",
    ),
    (
        "docker socket",
        lambda _t: {"SPACELIFT_WORKER_EXTRA_MOUNTS": "/var/run/docker.sock:/d"},
        (),
        "extra mounts",
    ),
    (
        "//etc",
        lambda _t: {"SPACELIFT_WORKER_EXTRA_MOUNTS": "//etc:/mnt/etc:ro"},
        (),
        "extra mounts",
    ),
    (
        "symlink to /etc",
        lambda t: {"SPACELIFT_WORKER_RO_EXTRA_MOUNTS": _symlink_to_etc(t)},
        (),
        "extra mounts",
    ),
    (
        "target /usr/bin",
        lambda t: {"SPACELIFT_WORKER_EXTRA_MOUNTS": f"{t}:/usr/bin"},
        (),
        "extra mounts",
    ),
    (
        "missing mount",
        lambda t: {"SPACELIFT_WORKER_EXTRA_MOUNTS": f"{t}/absent:/m"},
        (),
        "extra mounts",
    ),
    ("egress typo", lambda t: {"HL_EGRESS_POLICY": _broken_egress(t)}, (), "egress policy"),
    (
        "policy typo",
        lambda t: {"SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": _broken_policy(t)},
        (),
        "run initialization policy",
    ),
]


@pytest.mark.parametrize(("label", "set_", "unset", "check"), BAD, ids=[b[0] for b in BAD])
def test_doctor_fails_exactly_where_start_refuses(
    environment: dict[str, str],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    label: str,
    set_: Callable[[Path], dict[str, str]],
    unset: tuple[str, ...],
    check: str,
) -> None:
    del label
    for name, value in set_(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in unset:
        monkeypatch.delenv(name)
    docker = lambda: NetworkDocker({"a1b2c3": "host"})  # noqa: E731
    results = run_checks(docker_factory=docker)
    failed = [r for r in results if r.status is Status.FAIL]
    assert failed, "doctor is green on a configuration start refuses"
    assert failed[0].name == check
    with pytest.raises(StartupCheckError) as info:
        check_startup(docker_factory=docker)
    assert info.value.check == failed[0].name
    assert info.value.exit_code == exit_code_for(results)
    assert info.value.exit_code != 70
    assert environment["SPACELIFT_TOKEN"] not in str(info.value)


def test_start_refuses_with_the_checks_reason(
    environment: dict[str, str],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del environment
    monkeypatch.setenv("SPACELIFT_WORKER_EXTRA_MOUNTS", "/run/containerd/containerd.sock:/c")
    with pytest.raises(StartupCheckError) as info:
        start.run(argparse.Namespace(), connect_retry=FAST, docker_factory=FakeDocker)
    assert info.value.reason == "mount_refused"
    assert "SPACELIFT_WORKER_EXTRA_MOUNTS" in info.value.message


def _audit_records(directory: Path) -> list[dict[str, Any]]:
    records = []
    for segment in sorted(directory.glob("*.jsonl")):
        records += [json.loads(line) for line in segment.read_text().splitlines() if line]
    return records


def test_build_launcher_builds_once_and_audits_unsafe_opt_ins(
    environment: dict[str, str],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    egress = tmp_path / "egress.toml"
    egress.write_text('version = 1\n[[allow]]\nhost = "github.com"\n')
    policy = tmp_path / "good.rego"
    policy.write_text('package spacelift\n\ndeny contains "never" if { false }\n')
    for name, value in {
        "HL_WORKER_UID": "0",
        "HL_UNSAFE_ROOT_WORKER": "true",
        "SPACELIFT_WORKER_EXTRA_MOUNTS": f"{tmp_path}//link:/mnt/data:ro",
        "HL_EGRESS_POLICY": str(egress),
        "SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": str(policy),
        "HL_AUDIT_CHECKPOINT_RECORDS": "2",
    }.items():
        monkeypatch.setenv(name, value)
    checks = check_startup(docker_factory=FakeDocker)
    assert [w.name for w in checks.warnings] == ["unsafe opt-ins"]
    components = build_launcher(checks)
    try:
        assert components.unsafe_opt_ins == ("HL_UNSAFE_ROOT_WORKER",)
        assert components.identity is checks.identity
        assert components.egress_policy is checks.egress_policy
        assert components.egress_policy is not None
        assert [str(r.pattern) for r in components.egress_policy.allow_hosts] == ["github.com"]
        assert [m.real_path for m in components.mounts.mounts] == [str(data)]
        assert components.policy is not None
        assert components.worker.path.is_file()
        assert components.launcher_id == "launcher-start-test"
    finally:
        components.close()
    records = _audit_records(Path(environment["HL_STATE_DIR"]) / "audit")
    unsafe = [r for r in records if r.get("type") == "startup.unsafe_opt_in"]
    assert len(unsafe) == 1
    assert unsafe[0]["fields"]["variable"] == "HL_UNSAFE_ROOT_WORKER"
    # HL_AUDIT_CHECKPOINT_RECORDS=2 reached the log: checkpoints every second record.
    assert sum(1 for r in records if r.get("type") == "audit.checkpoint") >= 2


def _good_policy(tmp_path: Path) -> str:
    policy = tmp_path / "good.rego"
    policy.write_text('package spacelift\n\ndeny contains "never" if { false }\n')
    return str(policy)


def _record_kept_workers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    kept: list[Any] = []
    from hardened_launcher.policy.worker import start_isolated as real  # noqa: PLC0415

    def recording(*args: Any, **kwargs: Any) -> Any:
        backend = real(*args, **kwargs)
        kept.append(backend)
        return backend

    monkeypatch.setattr(doctor, "start_isolated", recording)
    return kept


def test_start_runs_the_gate_on_the_worker_that_passed_the_probe(
    environment: dict[str, str],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    del environment
    monkeypatch.setenv("SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY", _good_policy(tmp_path))
    kept = _record_kept_workers(monkeypatch)
    checks = check_startup(docker_factory=FakeDocker, keep_policy_worker=True)
    assert len(kept) == 1
    assert checks.policy_worker is kept[0]
    assert checks.policy_worker._proc is not None  # alive, probed, ready
    components = build_launcher(checks)
    try:
        assert components.policy is not None
        gate = components.policy.gate
        assert gate._backend is checks.policy_worker  # type: ignore[attr-defined]
        assert gate.evaluate({}).allowed  # type: ignore[attr-defined]
    finally:
        components.close()
    assert checks.policy_worker._proc is None  # closed with the components


def test_a_failed_start_up_check_stops_the_kept_policy_worker(
    environment: dict[str, str],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    del environment
    monkeypatch.setenv("SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY", _good_policy(tmp_path))
    monkeypatch.setenv("SPACELIFT_WORKER_EXTRA_MOUNTS", "/var/run/docker.sock:/d")
    kept = _record_kept_workers(monkeypatch)
    with pytest.raises(StartupCheckError, match="extra mounts"):
        check_startup(docker_factory=FakeDocker, keep_policy_worker=True)
    assert len(kept) == 1
    assert kept[0]._proc is None


def test_doctor_alone_keeps_no_policy_worker(
    environment: dict[str, str],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    del environment
    monkeypatch.setenv("SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY", _good_policy(tmp_path))
    kept = _record_kept_workers(monkeypatch)
    checks = check_startup(docker_factory=FakeDocker)
    assert kept == []
    assert checks.policy_worker is None
