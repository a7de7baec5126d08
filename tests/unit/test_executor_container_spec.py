"""The container spec is pure: hardened defaults, settings honoured, dangerous mounts refused."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher.binaries import VerifiedBinary
from hardened_launcher.executor.container_spec import (
    GVISOR_MAX_RUN_TASKS,
    LABEL_LAUNCHER_ID,
    LABEL_RUN_ID,
    NetworkPlan,
    build_container_spec,
    check_extra_mounts,
    gvisor_run_tasks,
    gvisor_sandbox_pids_limit,
    is_gvisor_runtime,
)
from hardened_launcher.executor.errors import MountRefusedError
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.settings import Mount, Settings

CANARY = "CANARY-container-spec-77aa"
BASE_ENV = {"PATH", "HOME", "HL_WORKSPACE", "HL_PROTOCOL", "HL_TIME_LIMIT_SECONDS", "HL_OUTPUTS"}


def proof(name: str, path: str) -> VerifiedBinary:
    return VerifiedBinary(
        name=name,
        path=Path(path),
        sha256=hashlib.sha256(name.encode()).hexdigest(),
        size=1,
        signer_fingerprint="f" * 40,
        signing_key_fingerprint="f" * 40,
        signature_created=datetime.now(UTC),
        sums_sha256="0" * 64,
    )


def settings(**overrides: Any) -> Settings:
    return Settings(
        state_dir=Path("/var/lib/hl"),
        cache_dir=Path("/var/cache/hl"),
        audit_dir=Path("/var/log/hl"),
        **overrides,
    )


def spec(**extra: Any) -> Any:
    return run_spec_from_mapping(
        {
            "version": 1,
            "run_id": "run-7",
            "run_type": "ro",
            "image": "busybox:1",
            "phases": [{"name": "main", "commands": [f"echo {CANARY}"]}],
            "secret_env": {"TOKEN": CANARY},
            "files": [{"path": "k", "content": CANARY, "secret": True}],
            **extra,
        }
    )


WORKER = proof("hl-worker", "/var/cache/hl/binaries/sha256/aa")


def test_hardened_defaults() -> None:
    c = build_container_spec(spec(), settings(), launcher_id="L1", worker=WORKER)
    h, a = c.host_config_args, c.create_args
    assert a["user"] == "1983:1983"
    assert a["entrypoint"] == ["/bin/sh", "/opt/hl/bin/hl-worker"]
    assert a["command"] == []
    assert a["stdin_open"] is True
    assert a["tty"] is False
    assert a["detach"] is False
    assert h["cap_drop"] == ["ALL"]
    assert "cap_add" not in h
    assert h["security_opt"] == ["no-new-privileges:true"]
    assert h["read_only"] is True
    assert h["privileged"] is False
    assert h["init"] is True
    assert h["ipc_mode"] == "private"
    assert h["log_config"] == {"Type": "none", "Config": {}}
    assert h["pids_limit"] == 1024
    assert h["mem_limit"] == h["memswap_limit"] == 4 * 1024**3
    assert h["nano_cpus"] == 2 * 10**9
    assert h["network_mode"] == "bridge"
    assert "runtime" not in h
    assert {"Name": "core", "Soft": 0, "Hard": 0} in h["ulimits"]
    for key in ("pid_mode", "userns_mode", "uts_mode", "devices", "cap_add", "binds"):
        assert key not in h
    assert set(h["tmpfs"]) == {"/workspace", "/tmp", "/home/spacelift"}
    for target, options in h["tmpfs"].items():
        flags = options.split(",")
        # Executable (a run runs what it builds) but never setuid or device files.
        assert flags[:4] == ["rw", "exec", "nosuid", "nodev"], target
        assert not {"noexec", "suid", "dev"} & set(flags), target
    assert "uid=1983" in h["tmpfs"]["/workspace"]
    assert "uid=1983" in h["tmpfs"]["/home/spacelift"]
    assert a["environment"]["HOME"] == "/home/spacelift"
    assert h["mounts"] == [
        {
            "Type": "bind",
            "Source": "/var/cache/hl/binaries/sha256/aa",
            "Target": "/opt/hl/bin/hl-worker",
            "ReadOnly": True,
            "BindOptions": {"Propagation": "rprivate"},
        }
    ]
    assert c.labels == {
        "io.hardened-launcher.managed": "true",
        LABEL_LAUNCHER_ID: "L1",
        LABEL_RUN_ID: "run-7",
    }


def test_no_secret_reaches_the_docker_arguments() -> None:
    c = build_container_spec(spec(), settings(), launcher_id="L1", worker=WORKER)
    assert CANARY not in repr(dict(c.create_args)) + repr(dict(c.host_config_args))
    assert set(c.create_args["environment"]) == BASE_ENV


def test_settings_and_run_limits_within_them() -> None:
    s = settings(
        worker_network="runs",
        worker_runtime="runsc",
        worker_uid=5000,
        worker_gid=6000,
        run_memory_bytes=512 * 1024**2,
        run_pids_limit=100,
        run_cpus=1.0,
        worker_extra_mounts=(
            Mount(host_path="/opt/tools", container_path="/tools", read_only=True),
        ),
        worker_extra_mounts_ro=(Mount(host_path="/srv/ro", container_path="/ro"),),
        worker_extra_mounts_wo=(Mount(host_path="/srv/wo", container_path="/wo"),),
    )
    c = build_container_spec(
        spec(limits={"memory_bytes": 64 * 1024**2, "pids": 100, "cpus": 0.5}),
        s,
        launcher_id="L",
        worker=WORKER,
    )
    h = c.host_config_args
    assert c.create_args["user"] == "5000:6000"
    assert h["network_mode"] == "runs"
    assert h["runtime"] == "runsc"
    assert h["mem_limit"] == 64 * 1024**2
    # gVisor: the run's 100 processes are limited inside the sandbox, the host cgroup is sized
    # for the sandbox (see test_gvisor_limits_the_runs_processes_inside_the_sandbox).
    assert {"Name": "nproc", "Soft": 100, "Hard": 100} in h["ulimits"]
    assert gvisor_sandbox_pids_limit(100) == 256 + 128 * 100
    assert h["pids_limit"] == gvisor_sandbox_pids_limit(100)
    assert h["nano_cpus"] == 5 * 10**8
    targets = [(m["Target"], m["ReadOnly"]) for m in h["mounts"]]
    assert targets == [("/opt/hl/bin/hl-worker", True), ("/tools", True), ("/ro", False)]


@pytest.mark.parametrize("runtime", [None, "runc", "io.containerd.runc.v2", "kata", "crun"])
def test_other_runtimes_get_the_run_pids_limit_as_the_cgroup_limit(runtime: str | None) -> None:
    s = settings(worker_runtime=runtime, run_pids_limit=64)
    h = build_container_spec(spec(), s, launcher_id="L", worker=WORKER).host_config_args
    assert h["pids_limit"] == 64
    # RLIMIT_NPROC counts every process of the UID on the host: never set outside gVisor.
    assert h["ulimits"] == [{"Name": "core", "Soft": 0, "Hard": 0}]
    assert not is_gvisor_runtime(runtime)


@pytest.mark.parametrize("runtime", ["runsc", "runsc-kvm", "runsc-debug", "gVisor"])
def test_gvisor_limits_the_runs_processes_inside_the_sandbox(runtime: str) -> None:
    assert is_gvisor_runtime(runtime)
    s = settings(worker_runtime=runtime, run_pids_limit=64)
    h = build_container_spec(
        spec(limits={"pids": 32}), s, launcher_id="L", worker=WORKER
    ).host_config_args
    assert h["runtime"] == runtime
    assert h["ulimits"] == [
        {"Name": "core", "Soft": 0, "Hard": 0},
        {"Name": "nproc", "Soft": 32, "Hard": 32},
    ]
    # The sandbox's own host threads (Sentry, Gofer, platform stubs) need room beyond the
    # run's processes, but the host cgroup stays bounded.
    assert h["pids_limit"] == gvisor_sandbox_pids_limit(32)
    # Sized for the worst measured under a fork bomb (~60 host tasks per run task).
    assert 32 * 60 + 64 < h["pids_limit"] <= 256 + 128 * 32


@pytest.mark.parametrize("pids", [8, 100, 128, 129, 256, 1024, 1 << 20])
def test_gvisor_caps_a_runs_tasks_so_the_sandbox_fits_its_host_budget(pids: int) -> None:
    s = settings(worker_runtime="runsc", run_pids_limit=pids)
    h = build_container_spec(spec(), s, launcher_id="L", worker=WORKER).host_config_args
    tasks = min(pids, GVISOR_MAX_RUN_TASKS)
    assert gvisor_run_tasks(pids) == tasks
    assert {"Name": "nproc", "Soft": tasks, "Hard": tasks} in h["ulimits"]
    assert h["pids_limit"] == 256 + 128 * tasks <= 16640


def test_requested_binaries_are_mounted_read_only_by_name() -> None:
    s = spec(binaries=[{"name": "terraform", "version": "1.5.7"}])
    c = build_container_spec(
        s, settings(), launcher_id="L", worker=WORKER, binaries=[proof("terraform", "/c/bb")]
    )
    assert {
        "Type": "bind",
        "Source": "/c/bb",
        "Target": "/opt/hl/bin/terraform",
        "ReadOnly": True,
        "BindOptions": {"Propagation": "rprivate"},
    } in c.host_config_args["mounts"]
    with pytest.raises(ValueError, match="do not match"):
        build_container_spec(s, settings(), launcher_id="L", worker=WORKER)


def test_same_inputs_same_output() -> None:
    one = build_container_spec(spec(), settings(), launcher_id="L", worker=WORKER)
    two = build_container_spec(spec(), settings(), launcher_id="L", worker=WORKER)
    assert one == two


@pytest.mark.parametrize(
    "host",
    [
        "/",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/srv/docker.sock",
        "/proc",
        "/proc/1/root",
        "/sys/fs",
        "/dev",
        "/etc",
        "/etc/shadow",
        "/var/lib/docker",
        "/var/lib/docker/volumes/x",
        "/var",
        "/var/lib",
        "/run",
        "/var/lib/hl",
        "/var/lib/hl/audit",
        "/var/cache/hl/binaries",
        "/var/log/hl",
        "/var/lib/../lib/docker",
    ],
)
def test_dangerous_host_paths_are_refused(host: str) -> None:
    s = settings(worker_extra_mounts_wo=(Mount(host_path=host, container_path="/mnt/x"),))
    with pytest.raises(MountRefusedError) as info:
        check_extra_mounts(s)
    assert info.value.reason == "mount_refused"
    assert "SPACELIFT_WORKER_WO_EXTRA_MOUNTS" in info.value.message
    assert host in info.value.message


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/proc",
        "/opt/hl/bin/hl-worker",
        "/opt",
        "/workspace",
        "/tmp/x",
        "/home",
        "/home/spacelift/.ssh",
    ],
)
def test_mounts_over_the_containers_own_paths_are_refused(target: str) -> None:
    s = settings(worker_extra_mounts=(Mount(host_path="/srv/data", container_path=target),))
    with pytest.raises(MountRefusedError):
        check_extra_mounts(s)


def test_symlinked_host_paths_are_judged_by_their_target() -> None:
    s = settings(worker_extra_mounts=(Mount(host_path="/srv/sock", container_path="/mnt/s"),))
    assert check_extra_mounts(s)
    with pytest.raises(MountRefusedError):
        check_extra_mounts(s, resolved={"/srv/sock": "/var/run/docker.sock"})


def test_safe_mounts_pass() -> None:
    s = settings(worker_extra_mounts=(Mount(host_path="/opt/tools", container_path="/tools"),))
    assert check_extra_mounts(s) == s.worker_extra_mounts


PROXY_ENV = {
    "HTTP_PROXY": "http://10.99.0.1:41234",
    "HTTPS_PROXY": "http://10.99.0.1:41234",
    "NO_PROXY": "localhost,127.0.0.1,::1",
    "http_proxy": "http://10.99.0.1:41234",
}


def plan(**overrides: Any) -> NetworkPlan:
    base: dict[str, Any] = {
        "network_mode": "hl-egress-run-7",
        "dns": ("10.99.0.254",),
        "dns_search": (),
        "dns_options": ("timeout:1", "attempts:1"),
        "environment": PROXY_ENV,
    }
    base.update(overrides)
    return NetworkPlan(**base)


def test_network_plan_puts_the_run_on_its_own_network_with_the_proxy_env() -> None:
    s = settings(worker_network="runs")
    c = build_container_spec(spec(), s, launcher_id="L1", worker=WORKER, network=plan())
    h, env = c.host_config_args, c.create_args["environment"]
    assert h["network_mode"] == "hl-egress-run-7"  # replaces SPACELIFT_WORKER_NETWORK
    assert h["dns"] == ["10.99.0.254"]
    assert h["dns_search"] == []
    assert h["dns_opt"] == ["timeout:1", "attempts:1"]
    assert {k: env[k] for k in PROXY_ENV} == PROXY_ENV
    # The launcher's plumbing is still there and unchanged; nothing secret joined it.
    assert env["PATH"].startswith("/opt/hl/bin:")
    assert env["HOME"] == "/home/spacelift"
    assert env["HL_WORKSPACE"] == "/workspace"
    assert env["HL_PROTOCOL"] == "1"
    assert set(env) == {*BASE_ENV, *PROXY_ENV}
    assert CANARY not in repr(dict(c.create_args)) + repr(dict(h))
    # The hardening does not depend on the network.
    without = build_container_spec(spec(), s, launcher_id="L1", worker=WORKER)
    changed = {
        k for k in {*h, *without.host_config_args} if h.get(k) != without.host_config_args.get(k)
    }
    assert changed == {"network_mode", "dns", "dns_search", "dns_opt"}


def test_without_a_network_plan_nothing_changes() -> None:
    s = settings(worker_network="runs")
    c = build_container_spec(spec(), s, launcher_id="L1", worker=WORKER, network=None)
    assert c == build_container_spec(spec(), s, launcher_id="L1", worker=WORKER)
    assert c.host_config_args["network_mode"] == "runs"
    for key in ("dns", "dns_search", "dns_opt"):
        assert key not in c.host_config_args
    assert set(c.create_args["environment"]) == BASE_ENV


def test_network_plan_is_pure_and_frozen() -> None:
    one = build_container_spec(spec(), settings(), launcher_id="L", worker=WORKER, network=plan())
    two = build_container_spec(spec(), settings(), launcher_id="L", worker=WORKER, network=plan())
    assert one == two
    p = plan(dns=["10.99.0.254"], environment=dict(PROXY_ENV))
    assert p.dns == ("10.99.0.254",)
    with pytest.raises(TypeError):
        p.environment["HTTP_PROXY"] = "http://elsewhere:1"  # type: ignore[index]


@pytest.mark.parametrize(
    "overrides",
    [
        {"network_mode": ""},
        {"network_mode": "host"},
        {"network_mode": "bridge"},
        {"network_mode": "default"},
        {"network_mode": "none"},
        {"network_mode": "container:abc"},
        {"dns": ("8.8.8.8.8",)},
        {"dns": ("resolver.example",)},
        {"dns_options": ("timeout:1 attempts:9",)},
        {"dns_search": ("",)},
        {"environment": {"PATH": "/evil"}},
        {"environment": {"HL_PROTOCOL": "2"}},
        {"environment": {"HOME": "/"}},
        {"environment": {"BAD NAME": "x"}},
        {"environment": {"1X": "x"}},
        {"environment": {"X": "a\0b"}},
    ],
)
def test_network_plan_refuses_what_is_not_a_runs_own_plumbing(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        plan(**overrides)
