"""Operator extra mounts: canonical form, the deny-lists, and symlink resolution (twice).

An operator mount (``SPACELIFT_WORKER_EXTRA_MOUNTS`` and its ``RO_``/``WO_`` forms) is judged in
three steps:

1. :func:`check_mounts` (pure, no I/O): each host path in canonical form (runs of ``/``
   collapsed, ``.`` and ``..`` folded, so ``//etc`` is ``/etc``) must not be, lie under, or be a
   parent of a refused host tree (system trees, every container-runtime socket and state
   directory, the launcher's own directories and files); each container target must not cover a
   system path of the run's container or the worker's own mount points.
2. :func:`resolve_mounts` (start-up): every host path is resolved to its real path (symbolic
   links followed, it must exist), both forms are judged again, sockets and device nodes are
   refused whatever their name, so is a regular file with more than one hard link, and so is a
   path whose device and inode (or an ancestor's) are those of a refused tree (a bind mount of
   ``/etc`` elsewhere is still ``/etc``); the real path's identity (device, inode, type) is kept
   in a :class:`ResolvedMounts`.
3. :meth:`ResolvedMounts.pin` (immediately before the container is created): every host path is
   resolved again; if it now leads elsewhere (a link was swapped, the file replaced) the run is
   refused; otherwise the container mounts the *resolved* path, never the configured spelling.

No setting relaxes these lists: a deployment that needs a runtime socket or a system tree in its
runs needs a different product (such a mount is root on the host).
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Final

from hardened_launcher.executor.errors import MountRefusedError
from hardened_launcher.settings import Mount, Settings

__all__ = [
    "MOUNT_VARIABLES",
    "REFUSED_CONTAINER_TREES",
    "REFUSED_HOST_TREES",
    "RUNTIME_SOCKET_NAMES",
    "ResolvedMount",
    "ResolvedMounts",
    "canonical_path",
    "check_mounts",
    "launcher_owned_paths",
    "resolve_mounts",
]

#: The settings that hold operator mounts, with the field of :class:`Settings` each fills.
MOUNT_VARIABLES: Final = (
    ("SPACELIFT_WORKER_EXTRA_MOUNTS", "worker_extra_mounts"),
    ("SPACELIFT_WORKER_RO_EXTRA_MOUNTS", "worker_extra_mounts_ro"),
    ("SPACELIFT_WORKER_WO_EXTRA_MOUNTS", "worker_extra_mounts_wo"),
)

#: Host trees never mounted: neither they, anything under them, nor any parent of them.
REFUSED_HOST_TREES: Final = (
    # Kernel interfaces and devices.
    "/proc",
    "/sys",
    "/dev",
    # Host configuration, boot, people's homes.
    "/etc",
    "/boot",
    "/root",
    "/home",
    # Runtime state: every runtime socket lives here (docker, containerd, cri-o, podman,
    # rootless Docker under /run/user/<uid>, kubelet, systemd, dbus).
    "/run",
    "/var/run",
    "/var/lock",
    # Container runtimes' and orchestrators' state (images, volumes, other containers' files).
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/containers",
    "/var/lib/cri-o",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/lib/rancher",
    "/var/lib/lxc",
    "/var/lib/lxd",
    "/var/lib/libvirt",
    "/var/lib/docker-engine",
    "/var/snap",
    "/snap",
    "/etc/docker",
    "/opt/containerd",
    "/opt/cni",
    # Host logs (may hold other tenants' or the launcher's secrets) and the host's programs.
    "/var/log",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/lost+found",
)

#: File names of container-runtime API sockets, refused wherever they sit on the host.
RUNTIME_SOCKET_NAMES: Final = frozenset(
    {
        "docker.sock",
        "dockershim.sock",
        "cri-dockerd.sock",
        "containerd.sock",
        "containerd.sock.ttrpc",
        "containerd-debug.sock",
        "crio.sock",
        "podman.sock",
        "buildkitd.sock",
        "kubelet.sock",
        "runsc.sock",
    }
)
_SOCKET_NAME_RE: Final = re.compile(r"(docker|containerd|crio|cri-o|podman|buildkit|kubelet)")

#: Container paths an operator mount may not cover, shadow or sit inside: the image's system
#: trees, the kernel interfaces, and the worker's own mount points (its program, workspace, tmp).
REFUSED_CONTAINER_TREES: Final = (
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/boot",
    "/run",
    "/var/run",
    "/opt/hl",
    "/workspace",
    "/tmp",  # noqa: S108 - the container's own /tmp, a private tmpfs
    "/home/spacelift",  # the run's HOME tmpfs (container_spec.HOME_DIR)
)

_SLASHES: Final = re.compile(r"/{2,}")


def canonical_path(path: str) -> str:
    """``path`` with runs of ``/`` collapsed and ``.``/``..`` folded (lexically; no I/O).

    Unlike :func:`posixpath.normpath`, a leading ``//`` becomes ``/``.
    """
    return posixpath.normpath(_SLASHES.sub("/", path)) if path else path


def _within(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def _overlaps(path: str, tree: str) -> bool:
    """``path`` is ``tree``, lies under it, or is one of its parents."""
    return _within(path, tree) or _within(tree, path)


def launcher_owned_paths(settings: Settings) -> tuple[str, ...]:
    """The launcher's own directories and files, in canonical form (never mounted, nor their
    parents): state, cache, audit, releases, keyring, policies, config and Docker credentials."""
    paths = (
        settings.state_dir,
        settings.cache_dir,
        settings.audit_dir,
        settings.release_dir,
        settings.release_keyring,
        settings.launcher_run_initialization_policy,
        settings.egress_policy,
        settings.config_file,
        settings.docker_config_dir,
    )
    return tuple(dict.fromkeys(canonical_path(str(p)) for p in paths if p is not None))


def _refusal(mount: Mount, variable: str, why: str) -> MountRefusedError:
    return MountRefusedError(
        f"{variable} mount {mount} is refused: {why}",
        hint=f"remove it from {variable}; mounts must not expose the host's system, a container "
        "runtime or the launcher's own files to runs, nor cover the container's system paths",
    )


def _judge_host(mount: Mount, variable: str, host: str, own: Sequence[str]) -> None:
    if host == "/":
        raise _refusal(mount, variable, "it mounts the host's root file system")
    name = PurePosixPath(host).name
    if name in RUNTIME_SOCKET_NAMES or (
        name.endswith((".sock", ".socket")) and _SOCKET_NAME_RE.search(name)
    ):
        raise _refusal(mount, variable, f"{host} is a container runtime's API socket")
    for tree in REFUSED_HOST_TREES:
        if _overlaps(host, tree):
            raise _refusal(mount, variable, f"it exposes the host's {tree}")
    for tree in own:
        if _overlaps(host, tree):
            raise _refusal(mount, variable, f"it exposes the launcher's own {tree}")


def _judge_target(mount: Mount, variable: str) -> None:
    target = canonical_path(mount.container_path)
    if target == "/":
        raise _refusal(mount, variable, "it covers the container's root")
    for tree in REFUSED_CONTAINER_TREES:
        if _overlaps(target, tree):
            raise _refusal(mount, variable, f"it covers the container's {tree}")


def _configured(settings: Settings) -> Iterable[tuple[str, Mount]]:
    for variable, field_name in MOUNT_VARIABLES:
        mounts: tuple[Mount, ...] = getattr(settings, field_name)
        for mount in mounts:
            yield variable, mount


def check_mounts(
    settings: Settings, *, resolved: Mapping[str, str] | None = None
) -> tuple[Mount, ...]:
    """Judge every operator mount without touching the file system; return them all.

    ``resolved`` optionally maps a configured host path to its real path; both forms are judged.
    Raises :class:`MountRefusedError` naming the variable, the mount and why.
    """
    own = launcher_owned_paths(settings)
    checked: list[Mount] = []
    for variable, mount in _configured(settings):
        forms = {canonical_path(mount.host_path)}
        if resolved and mount.host_path in resolved:
            forms.add(canonical_path(resolved[mount.host_path]))
        for host in sorted(forms):
            _judge_host(mount, variable, host, own)
        _judge_target(mount, variable)
        checked.append(mount)
    return tuple(checked)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedMount:
    """One operator mount with the real path and identity its host path had at start-up."""

    variable: str
    mount: Mount
    real_path: str
    device: int
    inode: int
    file_type: int


_Identity = tuple[int, int]


def _identity(path: str) -> _Identity | None:
    try:
        info = Path(path).stat()
    except (OSError, ValueError):
        return None
    return (info.st_dev, info.st_ino)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Identities:
    """Device and inode of every refused tree (and of each of its parents), so that a tree
    reached under another name — a bind mount, say ``mount --bind /etc /srv/etc`` — is
    recognised by what it is, not by how it is spelled."""

    trees: Mapping[_Identity, str]
    parents: Mapping[_Identity, str]

    @classmethod
    def of(cls, own: Sequence[str]) -> _Identities:
        trees: dict[_Identity, str] = {}
        parents: dict[_Identity, str] = {}
        for tree in (*REFUSED_HOST_TREES, *own):
            found = _identity(tree)
            if found is not None:
                trees.setdefault(found, tree)
            for parent in PurePosixPath(tree).parents:
                found = _identity(str(parent))
                if found is not None:
                    parents.setdefault(found, str(parent))
        return cls(trees=trees, parents=parents)

    def judge(self, mount: Mount, variable: str, real: str, itself: _Identity) -> None:
        if itself in self.parents and itself not in self.trees:
            what = self.parents[itself]
            raise _refusal(mount, variable, f"{real} is the host's {what} under another name")
        for path in (PurePosixPath(real), *PurePosixPath(real).parents):
            found = itself if str(path) == real else _identity(str(path))
            if found is not None and found in self.trees:
                tree = self.trees[found]
                raise _refusal(
                    mount,
                    variable,
                    f"{real} is or lies in {tree} (reached under another name: a bind mount)",
                )


def _resolve_one(
    variable: str, mount: Mount, own: Sequence[str], identities: _Identities
) -> ResolvedMount:
    spelled = canonical_path(mount.host_path)
    try:
        real = os.path.realpath(spelled, strict=True)
        info = Path(real).stat()
    except OSError as exc:
        raise MountRefusedError(
            f"{variable} mount {mount} is refused: {spelled} cannot be resolved "
            f"({exc.strerror or type(exc).__name__})",
            hint=f"create {spelled} (a directory or regular file) or remove it from {variable}",
        ) from None
    except ValueError:
        raise _refusal(mount, variable, "its host path holds a NUL byte") from None
    real = canonical_path(real)
    _judge_host(mount, variable, real, own)
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        raise _refusal(
            mount, variable, f"{real} is not a directory or regular file (a socket or device)"
        )
    if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        raise _refusal(
            mount,
            variable,
            f"{real} has {info.st_nlink} hard links, so it may be a protected file under "
            "another name; mount a copy or its directory",
        )
    identities.judge(mount, variable, real, (info.st_dev, info.st_ino))
    return ResolvedMount(
        variable=variable,
        mount=mount,
        real_path=real,
        device=info.st_dev,
        inode=info.st_ino,
        file_type=stat.S_IFMT(info.st_mode),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedMounts:
    """Every operator mount, judged and resolved at start-up (built by :func:`resolve_mounts`)."""

    mounts: tuple[ResolvedMount, ...]
    #: The launcher's own paths the mounts were judged against (re-used by :meth:`pin`).
    own_paths: tuple[str, ...]
    identities: _Identities

    def __post_init__(self) -> None:
        object.__setattr__(self, "mounts", tuple(self.mounts))

    @property
    def by_host_path(self) -> Mapping[str, ResolvedMount]:
        return MappingProxyType({m.mount.host_path: m for m in self.mounts})

    def recheck(self) -> tuple[ResolvedMount, ...]:
        """Resolve every mount again; refuse if any now leads to another file (or a refused one)."""
        fresh: list[ResolvedMount] = []
        for before in self.mounts:
            now = _resolve_one(before.variable, before.mount, self.own_paths, self.identities)
            if (now.real_path, now.device, now.inode, now.file_type) != (
                before.real_path,
                before.device,
                before.inode,
                before.file_type,
            ):
                raise MountRefusedError(
                    f"{before.variable} mount {before.mount} is refused: its host path changed "
                    f"since start-up (was {before.real_path}, now {now.real_path})",
                    hint="something replaced the path or a link on the way; check who can "
                    "write there, then restart the launcher",
                    reason="mount_changed",
                )
            fresh.append(now)
        return tuple(fresh)

    def pin(self, host_config_mounts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Docker's ``mounts`` with every operator bind's source replaced by its real path,
        re-resolved now (call immediately before the container is created).

        Binds whose source is not an operator host path (the verified binaries) pass unchanged.
        Raises :class:`MountRefusedError` when a path changed since start-up.
        """
        current = {m.mount.host_path: m.real_path for m in self.recheck()}
        pinned: list[dict[str, Any]] = []
        for bind in host_config_mounts:
            copy = dict(bind)
            source = copy.get("Source")
            if isinstance(source, str) and source in current:
                copy["Source"] = current[source]
            pinned.append(copy)
        return pinned


def resolve_mounts(settings: Settings) -> ResolvedMounts:
    """Judge every operator mount (spelled and resolved) and keep the real paths (start-up)."""
    check_mounts(settings)
    spelled = launcher_owned_paths(settings)
    # The launcher's own paths as the kernel sees them too (a state dir may be a link).
    real = (canonical_path(os.path.realpath(p)) for p in spelled)
    own = tuple(dict.fromkeys((*spelled, *real)))
    identities = _Identities.of(own)
    resolved = [
        _resolve_one(variable, mount, own, identities) for variable, mount in _configured(settings)
    ]
    return ResolvedMounts(mounts=tuple(resolved), own_paths=own, identities=identities)
