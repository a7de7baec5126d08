"""Container ownership labels: a dead owner or a passed deadline makes a container stale, a live
owner, another host's owner or a malformed label never does (no Docker: fake /proc, fake API)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.audit import MemoryAuditLog, Outcome
from hardened_launcher.docker_api import DockerClient
from hardened_launcher.executor.cleanup import (
    LauncherIdInUseError,
    exec_launcher_id,
    remove_leftover_containers,
    remove_stale_containers,
    remove_stale_probes,
)
from hardened_launcher.executor.ownership import (
    LABEL_DEADLINE,
    LABEL_OWNER,
    is_stale,
    owner_alive,
    owner_token,
)
from hardened_launcher.executor.passwd import LABEL_PROBE, PROBE_DEADLINE_SECONDS, probe_labels

BOOT = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def fake_proc(tmp_path: Path, processes: dict[int, int]) -> Path:
    """A /proc with a boot id and ``pid → start ticks`` (a command name with spaces and ')')."""
    proc = tmp_path / "proc"
    (proc / "sys/kernel/random").mkdir(parents=True)
    (proc / "sys/kernel/random/boot_id").write_text(BOOT + "\n")
    for pid, ticks in processes.items():
        (proc / str(pid)).mkdir()
        rest = " ".join(["S", *(["0"] * 18), str(ticks), "0", "0"])
        (proc / str(pid) / "stat").write_text(f"{pid} (evil ) name) {rest}\n")
    return proc


def test_this_process_is_alive_by_its_own_token() -> None:
    token = owner_token()
    assert token.split(":")[1] == str(os.getpid())
    assert owner_alive(token) is True


def test_dead_reused_and_foreign_owners(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {100: 5000, 200: 7000})
    assert owner_token(pid=100, proc=proc) == f"{BOOT}:100:5000"
    assert owner_alive(f"{BOOT}:100:5000", proc=proc) is True
    assert owner_alive(f"{BOOT}:300:5000", proc=proc) is False  # gone
    assert owner_alive(f"{BOOT}:200:6999", proc=proc) is False  # pid reused by another process
    other_boot = "ffffffff-4b5a-6978-8796-a5b4c3d2e1f0"
    assert owner_alive(f"{other_boot}:300:1", proc=proc) is None  # another host or boot


@pytest.mark.parametrize(
    "token", ["", "garbage", f"{BOOT}:x:1", f"{BOOT}:1", f"{BOOT}:1:2:3", "../../etc:1:1", "\n"]
)
def test_malformed_owner_labels_are_never_judged_dead(tmp_path: Path, token: str) -> None:
    proc = fake_proc(tmp_path, {})
    assert owner_alive(token, proc=proc) is None
    assert not is_stale({LABEL_OWNER: token}, now=0, proc=proc)


def test_staleness(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {100: 5000})
    live = {LABEL_OWNER: f"{BOOT}:100:5000", LABEL_DEADLINE: "2000"}
    assert not is_stale(live, now=1000, proc=proc)
    assert is_stale(live, now=2001, proc=proc)  # the deadline passed, even with a live owner
    assert is_stale({**live, LABEL_OWNER: f"{BOOT}:101:1"}, now=1000, proc=proc)
    assert not is_stale({LABEL_DEADLINE: "not-a-number"}, now=10**12, proc=proc)
    assert not is_stale({}, now=10**12, proc=proc)  # older containers: left to the daemon


@given(st.dictionaries(st.text(max_size=40), st.text(max_size=80), max_size=6))
def test_any_labels_are_judged_without_error(labels: dict[str, str]) -> None:
    assert isinstance(is_stale(labels, now=0), bool)


class FakeAPI:
    def __init__(self, items: dict[str, list[dict[str, Any]]]) -> None:
        self.items = items
        self.calls: list[tuple[str, str]] = []

    def containers(self, *, labels: list[str]) -> list[dict[str, Any]]:
        if labels == [LABEL_PROBE]:
            return list(self.items.get(LABEL_PROBE, []))
        wanted = next(f.split("=", 1)[1] for f in labels if "launcher-id=" in f)
        return list(self.items.get(wanted, []))

    def stop(self, container_id: str, *, timeout: int) -> None:
        assert timeout >= 0
        self.calls.append(("stop", container_id))

    def remove_container(self, container_id: str, *, force: bool) -> None:
        assert force
        self.calls.append(("remove", container_id))


def FakeClient(api: FakeAPI) -> DockerClient:  # noqa: N802 - reads as the class it stands for
    """The fake, typed as the client the functions take (it has the calls they make)."""
    return cast("DockerClient", api)


def item(cid: str, *, state: str, run_id: str, **labels: str) -> dict[str, Any]:
    return {
        "Id": cid,
        "State": state,
        "Labels": {"io.hardened-launcher.run-id": run_id, **labels},
    }


def test_daemon_start_removes_its_own_and_only_the_stale_exec_containers() -> None:
    live = owner_token()
    api = FakeAPI(
        {
            "L": [item("d1", state="running", run_id="r1", **{LABEL_OWNER: live})],
            "L-exec": [
                item("e1", state="running", run_id="r2", **{LABEL_OWNER: live}),
                item("e2", state="exited", run_id="r3", **{LABEL_DEADLINE: "1"}),
            ],
        }
    )
    audit = MemoryAuditLog()
    crashed = remove_leftover_containers(FakeClient(api), launcher_id="L", audit=audit)
    assert [c.container_id for c in crashed] == ["d1", "e2"]
    assert api.calls == [("stop", "d1"), ("remove", "d1"), ("remove", "e2")]
    assert [(e.type, e.run_id, e.reason) for e in audit.events] == [
        ("run.crashed", "r1", "launcher_restarted"),
        ("run.crashed", "r3", "owner_gone"),
    ]


def test_exec_removes_only_stale_containers() -> None:
    live = owner_token()
    api = FakeAPI(
        {
            "L-exec": [
                item("live", state="running", run_id="a", **{LABEL_OWNER: live}),
                item("old", state="running", run_id="b", **{LABEL_DEADLINE: "1"}),
            ],
            "L": [item("daemon", state="running", run_id="c", **{LABEL_OWNER: live})],
        }
    )
    crashed = remove_stale_containers(FakeClient(api), launcher_ids=("L-exec", "L"))
    assert [c.container_id for c in crashed] == ["old"]
    assert exec_launcher_id("x" * 80) == ("x" * 80 + "-exec")[:63]


def _probe(cid: str, labels: dict[str, str], created: int = 1000) -> dict[str, Any]:
    return {"Id": cid, "State": "created", "Created": created, "Labels": labels}


def test_the_passwd_probe_carries_managed_owner_and_deadline_labels() -> None:
    labels = probe_labels(now=1000.0)
    assert labels[LABEL_PROBE] == "passwd"
    assert labels["io.hardened-launcher.managed"] == "true"
    assert labels[LABEL_OWNER] == owner_token()
    assert labels[LABEL_DEADLINE] == str(1000 + PROBE_DEADLINE_SECONDS)
    # Not a run container: the per-launcher sweep (managed + launcher-id) never lists it.
    assert "io.hardened-launcher.launcher-id" not in labels


def test_a_restart_removes_the_probe_a_dead_launcher_left() -> None:
    now = 10_000
    dead = {**probe_labels(now=now), LABEL_OWNER: f"{owner_token().split(':')[0]}:999999999:1"}
    api = FakeAPI(
        {
            LABEL_PROBE: [
                _probe("dead", dead),
                _probe("live", probe_labels(now=now)),  # a probe of this (live) process
                _probe("expired", {**probe_labels(now=0), LABEL_OWNER: "elsewhere:1:1"}),
                _probe("legacy-old", {LABEL_PROBE: "passwd"}, created=0),
                _probe("legacy-new", {LABEL_PROBE: "passwd"}, created=now - 5),
            ],
        }
    )
    audit = MemoryAuditLog()
    removed = remove_stale_probes(FakeClient(api), audit=audit, now=now)
    assert removed == ("dead", "expired", "legacy-old")
    assert api.calls == [("remove", c) for c in removed]
    assert [(e.type, e.reason, e.run_id) for e in audit.events] == [
        ("executor.leftover_probe_removed", "owner_gone", None)
    ] * 3


def test_daemon_start_sweeps_probes_too() -> None:
    dead = {**probe_labels(), LABEL_OWNER: f"{owner_token().split(':')[0]}:999999999:1"}
    api = FakeAPI({LABEL_PROBE: [_probe("p", dead, created=int(1e10))]})
    crashed = remove_leftover_containers(FakeClient(api), launcher_id="L")
    assert crashed == ()  # a probe is not a run: no run.crashed
    assert api.calls == [("remove", "p")]


@pytest.fixture
def other_live_owner() -> Iterator[str]:
    """The owner token of another live process (a child ``sleep``)."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        yield owner_token(pid=child.pid)
    finally:
        child.kill()
        child.wait(10)


def test_a_start_refuses_a_launcher_id_another_live_launcher_uses(other_live_owner: str) -> None:
    # Two daemons given one HL_LAUNCHER_ID: the second one's start must not stop the first
    # one's running containers as its own leftovers.
    dead = f"{owner_token().split(':')[0]}:999999999:1"
    api = FakeAPI(
        {
            "L": [
                item("gone", state="exited", run_id="r0", **{LABEL_OWNER: dead}),
                item("theirs", state="running", run_id="r1", **{LABEL_OWNER: other_live_owner}),
            ]
        }
    )
    audit = MemoryAuditLog()
    with pytest.raises(LauncherIdInUseError) as info:
        remove_leftover_containers(FakeClient(api), launcher_id="L", audit=audit)
    err = info.value
    assert (err.exit_code, err.reason) == (78, "launcher_id_in_use")
    assert f"pid {other_live_owner.split(':')[1]}" in err.message
    assert "HL_LAUNCHER_ID" in err.hint
    assert api.calls == []  # nothing stopped, not even the dead owner's container
    # The refusal is audited (and only it: no run.crashed for the dead owner's container).
    assert [(e.type, e.outcome, e.reason) for e in audit.events] == [
        ("executor.launcher_id_shared", Outcome.DENY, "launcher_id_in_use")
    ]
    fields = audit.events[0].fields
    assert (fields["container_id"], fields["launcher_id"]) == ("theirs", "L")
    assert (fields["owner"], fields["action"]) == (other_live_owner, "start_refused")


@pytest.mark.parametrize(
    "owner",
    [
        pytest.param("", id="no-owner-label"),
        pytest.param("garbage", id="malformed"),
        pytest.param("ffffffff-0000-0000-0000-000000000000:1:1", id="another-boot"),
    ],
)
def test_a_container_whose_owner_cannot_be_judged_alive_is_still_a_leftover(owner: str) -> None:
    labels = {LABEL_OWNER: owner} if owner else {}
    api = FakeAPI({"L": [item("c", state="running", run_id="r", **labels)]})
    crashed = remove_leftover_containers(FakeClient(api), launcher_id="L")
    assert [c.container_id for c in crashed] == ["c"]


def test_after_a_docker_outage_another_live_owners_container_is_left_alone(
    other_live_owner: str,
) -> None:
    dead = f"{owner_token().split(':')[0]}:999999999:1"
    api = FakeAPI(
        {
            "L": [
                item("theirs", state="running", run_id="r1", **{LABEL_OWNER: other_live_owner}),
                item("interrupted", state="exited", run_id="r2", **{LABEL_OWNER: dead}),
                item("mine", state="running", run_id="r3", **{LABEL_OWNER: owner_token()}),
            ]
        }
    )
    audit = MemoryAuditLog()
    crashed = remove_leftover_containers(
        FakeClient(api),
        launcher_id="L",
        audit=audit,
        keep_run_ids=frozenset({"r3"}),
        reason="docker_restarted",
    )
    assert [c.container_id for c in crashed] == ["interrupted"]
    assert api.calls == [("remove", "interrupted")]
    shared = [e for e in audit.events if e.type == "executor.launcher_id_shared"]
    assert [(e.outcome, e.fields["container_id"], e.fields["action"]) for e in shared] == [
        (Outcome.ERROR, "theirs", "left_alone")
    ]
    assert [e.run_id for e in audit.events if e.type == "run.crashed"] == ["r2"]
