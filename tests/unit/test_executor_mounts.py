"""Operator mounts: every spelling, every symlink chain, every runtime socket and system tree is
refused, and a path that changes between start-up and container creation refuses the run."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from hardened_launcher.executor.container_spec import check_extra_mounts
from hardened_launcher.executor.errors import MountRefusedError
from hardened_launcher.executor.mounts import (
    REFUSED_CONTAINER_TREES,
    REFUSED_HOST_TREES,
    RUNTIME_SOCKET_NAMES,
    canonical_path,
    check_mounts,
    resolve_mounts,
)
from hardened_launcher.settings import Mount, Settings

OWN = {"state_dir": "/srv/hl/state", "cache_dir": "/srv/hl/cache", "audit_dir": "/srv/hl/audit"}


def make(*mounts: Mount, variable: str = "worker_extra_mounts", **overrides: Any) -> Settings:
    base: dict[str, Any] = {k: Path(v) for k, v in OWN.items()}
    base.update(overrides)
    base[variable] = tuple(mounts)
    return Settings(**base)


def host(path: str, target: str = "/mnt/data", *, ro: bool = False) -> Mount:
    return Mount(host_path=path, container_path=target, read_only=ro)


RUNTIME_SOCKETS = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/podman/podman.sock",
    "/run/user/1000/docker.sock",
    "/run/user/1000/podman/podman.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/lib/kubelet/device-plugins/kubelet.sock",
    "/run/buildkit/buildkitd.sock",
    # Sockets moved or copied outside the usual directories are refused by name.
    "/srv/docker.sock",
    "/opt/sockets/containerd.sock",
    "/data/crio.sock",
    "/data/podman.sock",
    "/data/my-docker-proxy.sock",
    "/data/cri-dockerd.sock",
]

SYSTEM_TREES = [
    "/",
    "/etc",
    "/etc/shadow",
    "/proc",
    "/proc/1/root",
    "/sys",
    "/sys/fs/cgroup",
    "/dev",
    "/dev/sda",
    "/boot",
    "/root",
    "/root/.ssh",
    "/home",
    "/home/alice",
    "/var/lib/kubelet",
    "/var/lib/kubelet/pods",
    "/var/run",
    "/run",
    "/run/user/1000",
    "/var/lib/docker",
    "/var/lib/docker/volumes/x",
    "/var/lib/containerd",
    "/var/lib/containers/storage",
    "/usr",
    "/usr/bin",
    "/bin",
    "/lib",
    "/var/log",
    # Parents of refused trees.
    "/var",
    "/var/lib",
    # The launcher's own directories, their parents and what is under them.
    "/srv/hl",
    "/srv/hl/state",
    "/srv/hl/state/audit-key.pem",
    "/srv/hl/cache/binaries",
    "/srv/hl/audit",
    "/srv",
]


def spellings(path: str) -> list[str]:
    """Spellings the kernel reads as ``path``: doubled slashes, ``.``, ``..`` and a trailing /."""
    parts = path.strip("/").split("/") if path != "/" else []
    forms = {
        path,
        "/" + path,
        "//" + path.lstrip("/"),
        "///" + path.lstrip("/"),
        path.replace("/", "//"),
        path.replace("/", "/./"),
        (path.rstrip("/") or "") + "/",
        "/tmp/../" + path.lstrip("/"),
        "/nowhere/x/../../" + path.lstrip("/"),
    }
    if parts:
        forms.add("/" + "/".join([*parts[:-1], ".", parts[-1]]))
    return sorted(f for f in forms if f.startswith("/"))


@pytest.mark.parametrize("path", RUNTIME_SOCKETS + SYSTEM_TREES)
def test_refused_host_paths_in_every_spelling_and_variable(path: str) -> None:
    for spelled in spellings(path):
        for variable in ("worker_extra_mounts", "worker_extra_mounts_ro", "worker_extra_mounts_wo"):
            with pytest.raises(MountRefusedError) as info:
                check_mounts(make(host(spelled), variable=variable))
            assert info.value.reason == "mount_refused"
            assert "_EXTRA_MOUNTS" in info.value.message
            assert "remove it from SPACELIFT_WORKER_" in (info.value.hint or "")


@pytest.mark.parametrize("path", RUNTIME_SOCKETS + SYSTEM_TREES)
def test_check_extra_mounts_delegates(path: str) -> None:
    with pytest.raises(MountRefusedError):
        check_extra_mounts(make(host(path)))


@pytest.mark.parametrize("name", sorted(RUNTIME_SOCKET_NAMES))
def test_every_runtime_socket_name_is_refused_anywhere(name: str) -> None:
    with pytest.raises(MountRefusedError, match="socket"):
        check_mounts(make(host(f"/srv/any/{name}")))


@given(
    tree=st.sampled_from(REFUSED_HOST_TREES),
    tail=st.lists(st.from_regex(r"[a-z0-9._-]{1,8}", fullmatch=True), max_size=4),
    slashes=st.integers(min_value=1, max_value=4),
)
@hsettings(max_examples=300, deadline=None)
def test_property_anything_under_a_refused_tree_is_refused(
    tree: str, tail: list[str], slashes: int
) -> None:
    sep = "/" * slashes
    path = sep + sep.join([*tree.strip("/").split("/"), *tail])
    with pytest.raises(MountRefusedError):
        check_mounts(make(host(path)))


@given(
    tree=st.sampled_from(REFUSED_CONTAINER_TREES),
    tail=st.lists(st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True), max_size=3),
    spelling=st.sampled_from(["{}", "/{}", "{}/", "{}/.", "/x/..{}"]),
)
@hsettings(max_examples=300, deadline=None)
def test_property_container_targets_over_system_paths_are_refused(
    tree: str, tail: list[str], spelling: str
) -> None:
    target = spelling.format("/".join([tree, *tail]))
    with pytest.raises(MountRefusedError, match="covers the container"):
        check_mounts(make(host("/srv/data", target)))


@pytest.mark.parametrize(
    "target", ["/", "//", "/opt", "/opt/hl/bin", "/usr/local/bin", "/etc/ssl", "/var", "/lib64"]
)
def test_container_targets_covering_system_paths_or_parents_are_refused(target: str) -> None:
    with pytest.raises(MountRefusedError):
        check_mounts(make(host("/srv/data", target)))


@given(path=st.text(alphabet="/.ab", min_size=1, max_size=30).map(lambda p: "/" + p))
@hsettings(max_examples=300, deadline=None)
def test_property_canonical_path_is_what_the_kernel_reads(path: str) -> None:
    canon = canonical_path(path)
    assert canon.startswith("/")
    assert "//" not in canon
    assert canon == "/" or not canon.endswith("/")
    assert all(part not in (".", "..") for part in canon.split("/"))
    assert canonical_path(canon) == canon


@pytest.mark.parametrize(
    ("path", "target"),
    [("/srv/data", "/data"), ("/opt/tools", "/tools"), ("/mnt/cache", "/home/cache")],
)
def test_safe_mounts_pass(path: str, target: str) -> None:
    s = make(host(path, target))
    assert check_mounts(s) == s.worker_extra_mounts


# -- the real file system: symbolic links, sockets, swaps --------------------------------------


def _chain(tmp_path: Path, target: str, length: int) -> Path:
    """``tmp_path/l0 -> l1 -> … -> target`` (the last link may be relative)."""
    links = [tmp_path / f"l{i}" for i in range(length)]
    for i, link in enumerate(links):
        link.symlink_to(links[i + 1] if i + 1 < length else target)
    return links[0]


LINK_TARGETS = [
    "/",
    "/etc",
    "/proc",
    "/proc/self",
    "/sys",
    "/dev",
    "/var/run",
    "/run",
    "/usr/bin",
    "/root",
    "/home",
]


@pytest.mark.parametrize("target", LINK_TARGETS)
@pytest.mark.parametrize("length", [1, 2, 5])
def test_symlink_chains_to_refused_trees_are_refused(
    tmp_path: Path, target: str, length: int
) -> None:
    first = _chain(tmp_path, target, length)
    s = make(host(str(first)))
    assert check_mounts(s)  # the spelling alone looks harmless …
    with pytest.raises(MountRefusedError):
        resolve_mounts(s)  # … its real path is not


def test_relative_symlink_climbing_to_etc_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "up"
    link.symlink_to("../" * (len(tmp_path.parts) + 3) + "etc")
    with pytest.raises(MountRefusedError, match="/etc"):
        resolve_mounts(make(host(str(link))))


def test_symlinked_parent_directory_is_followed(tmp_path: Path) -> None:
    (tmp_path / "parent").symlink_to("/etc")
    with pytest.raises(MountRefusedError, match="/etc"):
        resolve_mounts(make(host(str(tmp_path / "parent" / "ssl"))))


@pytest.mark.skipif(not Path("/var/run/docker.sock").exists(), reason="no Docker socket here")
def test_symlink_to_the_real_docker_socket_is_refused(tmp_path: Path) -> None:
    (tmp_path / "innocent").symlink_to("/var/run/docker.sock")
    with pytest.raises(MountRefusedError):
        resolve_mounts(make(host(str(tmp_path / "innocent"))))


def test_any_unix_socket_is_refused_whatever_its_name(tmp_path: Path) -> None:
    path = tmp_path / "api"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        (tmp_path / "alias").symlink_to(path)
        for spelled in (path, tmp_path / "alias"):
            with pytest.raises(MountRefusedError, match="socket or device"):
                resolve_mounts(make(host(str(spelled))))


def test_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(MountRefusedError, match="socket or device"):
        resolve_mounts(make(host(str(tmp_path / "pipe"))))


def test_missing_host_path_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(MountRefusedError, match="cannot be resolved"):
        resolve_mounts(make(host(str(tmp_path / "absent"))))


def test_symlink_into_the_launchers_own_directory_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "data").symlink_to(state)
    s = make(host(str(tmp_path / "data")), state_dir=state)
    with pytest.raises(MountRefusedError, match="launcher's own"):
        resolve_mounts(s)


def test_own_directory_reached_through_its_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real-state"
    real.mkdir()
    (tmp_path / "state").symlink_to(real)
    s = make(host(str(real / "x")), state_dir=tmp_path / "state")
    (real / "x").mkdir()
    with pytest.raises(MountRefusedError, match="launcher's own"):
        resolve_mounts(s)


def _binds(*sources: str) -> list[dict[str, Any]]:
    return [{"Type": "bind", "Source": s, "Target": f"/mnt/{i}"} for i, s in enumerate(sources)]


def test_pin_mounts_the_resolved_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    spelled = f"/{tmp_path}//link"
    resolved = resolve_mounts(make(host(spelled)))
    pinned = resolved.pin(_binds("/opt/worker", spelled))
    assert pinned[0]["Source"] == "/opt/worker"  # not an operator mount: unchanged
    assert pinned[1]["Source"] == str(data)
    assert pinned[1]["Target"] == "/mnt/1"


def test_link_swapped_after_start_up_refuses_the_run(tmp_path: Path) -> None:
    safe, other = tmp_path / "safe", tmp_path / "other"
    safe.mkdir()
    other.mkdir()
    link = tmp_path / "link"
    link.symlink_to(safe)
    resolved = resolve_mounts(make(host(str(link))))
    link.unlink()
    link.symlink_to(other)
    with pytest.raises(MountRefusedError, match="changed since start-up") as info:
        resolved.pin(_binds(str(link)))
    assert info.value.reason == "mount_changed"


@pytest.mark.parametrize("target", ["/etc", "/var/run", "/proc/self/root", "/"])
def test_link_swapped_to_a_refused_tree_refuses_the_run(tmp_path: Path, target: str) -> None:
    safe = tmp_path / "safe"
    safe.mkdir()
    link = tmp_path / "link"
    link.symlink_to(safe)
    resolved = resolve_mounts(make(host(str(link))))
    link.unlink()
    link.symlink_to(target)
    with pytest.raises(MountRefusedError):
        resolved.pin(_binds(str(link)))


def test_directory_replaced_in_place_refuses_the_run(tmp_path: Path) -> None:
    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir()
    other.mkdir()
    resolved = resolve_mounts(make(host(str(data))))
    data.rmdir()
    other.rename(data)  # same path, another directory
    with pytest.raises(MountRefusedError, match="changed since start-up"):
        resolved.pin(_binds(str(data)))


def test_path_removed_after_start_up_refuses_the_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    resolved = resolve_mounts(make(host(str(data))))
    data.rmdir()
    with pytest.raises(MountRefusedError, match="cannot be resolved"):
        resolved.pin(_binds(str(data)))


def test_unchanged_mounts_recheck_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("x")
    resolved = resolve_mounts(
        make(host(str(data)), worker_extra_mounts_ro=(host(str(data / "f"), "/f", ro=True),))
    )
    assert [m.real_path for m in resolved.recheck()] == [str(data), str(data / "f")]
    assert resolved.recheck() == resolved.mounts


def test_hard_link_to_a_file_of_the_launcher_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "audit-key.pem").write_text("not really a key")
    data = tmp_path / "data"
    data.mkdir()
    os.link(state / "audit-key.pem", data / "k.pem")
    with pytest.raises(MountRefusedError, match="hard links"):
        resolve_mounts(make(host(str(data / "k.pem")), state_dir=state))


_BIND_PROBE = """
import sys
from pathlib import Path
from hardened_launcher.executor.errors import MountRefusedError
from hardened_launcher.executor.mounts import resolve_mounts
from hardened_launcher.settings import Mount, Settings

s = Settings(state_dir=Path("/srv/hl/s"), cache_dir=Path("/srv/hl/c"), audit_dir=Path("/srv/hl/a"),
             worker_extra_mounts=(Mount(host_path=sys.argv[1], container_path="/mnt/x"),))
try:
    resolve_mounts(s)
except MountRefusedError as exc:
    print("REFUSED", exc.message)
else:
    print("ALLOWED")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts in a private namespace need root")
@pytest.mark.parametrize(
    ("source", "probe"), [("/etc", ""), ("/etc", "ssl"), ("/proc", "self"), ("/", "")]
)
def test_refused_tree_bind_mounted_elsewhere_is_refused(
    tmp_path: Path, source: str, probe: str
) -> None:
    """A bind mount of /etc at an innocent path: neither spelling nor real path says /etc."""
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    unshare = shutil.which("unshare")
    if unshare is None:  # pragma: no cover - util-linux is in the image
        pytest.fail("unshare (util-linux) is needed for this test")
    target = tmp_path / "innocent"
    target.mkdir()
    script = tmp_path / "probe.py"
    script.write_text(_BIND_PROBE)
    path = str(target / probe) if probe else str(target)
    proc = subprocess.run(
        [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount --bind "$1" "$2" && exec "$3" "$4" "$5"',
            "sh",
            source,
            str(target),
            sys.executable,
            str(script),
            path,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("REFUSED"), proc.stdout
    assert "another name" in proc.stdout
