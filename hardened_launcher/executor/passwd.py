"""A passwd and group entry for the run's user when the image has none (read-only files).

A stock image has no user for uid 1983, so ``whoami``, ``ssh`` (it refuses a user without a
passwd entry) and Ansible's user facts fail. The vendor's runner images add a ``spacelift``
user. For an image without an entry for the run's uid (or group for its gid), the runner mounts
read-only copies of the image's own ``/etc/passwd`` and ``/etc/group`` with one line added:

    spacelift:x:<uid>:<gid>:spacelift:/home/spacelift:/bin/sh
    spacelift:x:<gid>:

The image's files are read once per image ID (a created, never started container and Docker's
archive API) and the result is cached in memory; the generated files are content-addressed in
the runner's files directory (mode 0644: they hold no secret). An image whose ``/etc/passwd``
is larger than :data:`MAX_PASSWD_BYTES`, or is not a regular file, gets no mount (the run goes
on as before, and a warning is logged).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hardened_launcher.docker_api import DockerError, NotFoundError
from hardened_launcher.executor.container_spec import HOME_DIR, LABEL_MANAGED
from hardened_launcher.executor.ownership import LABEL_DEADLINE, LABEL_OWNER, owner_token

if TYPE_CHECKING:
    from hardened_launcher.docker_api import DockerClient

__all__ = ["MAX_PASSWD_BYTES", "USER_NAME", "PasswdFiles", "add_user_entries"]

log = logging.getLogger(__name__)

USER_NAME: Final = "spacelift"
MAX_PASSWD_BYTES: Final = 1024 * 1024


def _has_id(text: str, index: int, wanted: int) -> bool:
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) > index and fields[index].strip() == str(wanted):
            return True
    return False


def _has_name(text: str, name: str) -> bool:
    return any(line.split(":", 1)[0] == name for line in text.splitlines())


def add_user_entries(passwd: str, group: str, *, uid: int, gid: int) -> tuple[str, str] | None:
    """The image's files with the run user's entries added, or None if both are there.

    Pure. A name already taken by another id gets a suffix (``spacelift-1983``).
    """
    need_user = not _has_id(passwd, 2, uid)
    need_group = not _has_id(group, 2, gid)
    if not need_user and not need_group:
        return None
    user = USER_NAME if not _has_name(passwd, USER_NAME) else f"{USER_NAME}-{uid}"
    group_name = USER_NAME if not _has_name(group, USER_NAME) else f"{USER_NAME}-{gid}"

    def ended(text: str) -> str:
        return text if not text or text.endswith("\n") else text + "\n"

    if need_user:
        passwd = ended(passwd) + f"{user}:x:{uid}:{gid}:{USER_NAME}:{HOME_DIR}:/bin/sh\n"
    if need_group:
        group = ended(group) + f"{group_name}:x:{gid}:\n"
    return passwd, group


#: Marks the never-started container that reads an image's passwd/group (``probe=passwd``).
LABEL_PROBE: Final = "io.hardened-launcher.probe"
#: A probe lives for one archive read; after this its deadline label has passed, and the
#: leftovers clean-up (:mod:`.cleanup`) removes it even if its owner cannot be judged.
PROBE_DEADLINE_SECONDS: Final = 600


def probe_labels(*, now: float | None = None) -> dict[str, str]:
    """The labels of a passwd probe: managed, its owner (this process) and a deadline, so a
    launcher that dies between create and remove leaves nothing a restart keeps."""
    moment = time.time() if now is None else now
    return {
        LABEL_PROBE: "passwd",
        LABEL_MANAGED: "true",
        LABEL_OWNER: owner_token(),
        LABEL_DEADLINE: str(math.ceil(moment + PROBE_DEADLINE_SECONDS)),
    }


@dataclass(frozen=True, kw_only=True)
class _Files:
    passwd: Path
    group: Path


class PasswdFiles:
    """Per image: the read-only passwd/group mounts a run needs (none if the image has them)."""

    def __init__(self, api: DockerClient, *, directory: Path | None = None) -> None:
        self.api = api
        self._directory = directory
        self._cache: dict[tuple[str, int, int], _Files | None] = {}
        self._lock = threading.Lock()

    def mounts(self, image: str, *, uid: int, gid: int) -> list[dict[str, Any]]:
        """Bind mounts for ``image`` run as ``uid:gid`` (empty when it has the entries or
        cannot be read)."""
        try:
            image_id = str(self.api.inspect_image(image).get("Id", ""))
        except DockerError:
            return []  # the create call reports a missing image with its own error
        if not image_id:
            return []
        key = (image_id, uid, gid)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._generate(image, image_id, uid, gid)
            files = self._cache[key]
        if files is None:
            return []
        return [
            {
                "Type": "bind",
                "Source": str(path),
                "Target": target,
                "ReadOnly": True,
                "BindOptions": {"Propagation": "rprivate"},
            }
            for path, target in ((files.passwd, "/etc/passwd"), (files.group, "/etc/group"))
        ]

    def _generate(self, image: str, image_id: str, uid: int, gid: int) -> _Files | None:
        passwd, group = self._read(image, "/etc/passwd"), self._read(image, "/etc/group")
        if passwd is None or group is None:
            log.warning("executor.passwd_unreadable image=%s", image_id[:19])
            return None
        added = add_user_entries(passwd, group, uid=uid, gid=gid)
        if added is None:
            return None
        directory = self._dir()
        paths = []
        for text, kind in zip(added, ("passwd", "group"), strict=True):
            data = text.encode("utf-8", "surrogateescape")
            path = directory / f"{hashlib.sha256(data).hexdigest()}.{kind}"
            if not path.exists():
                fd, tmp = tempfile.mkstemp(dir=directory)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                Path(tmp).chmod(0o644)
                Path(tmp).replace(path)
            paths.append(path)
        log.info("executor.passwd_entry_added image=%s uid=%s", image_id[:19], uid)
        return _Files(passwd=paths[0], group=paths[1])

    def _dir(self) -> Path:
        if self._directory is None:
            self._directory = _process_dir()
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self._directory

    def _read(self, image: str, path: str) -> str | None:
        """The file at ``path`` in ``image`` ("" if absent), from a never-started container."""
        import tarfile  # noqa: PLC0415 - only when an image is first read (not at idle)

        container_id = ""
        try:
            container_id = self.api.create_container(
                {
                    "Image": image,
                    "Entrypoint": ["/nonexistent"],
                    "Cmd": [],
                    "NetworkDisabled": True,
                    "Labels": probe_labels(),
                }
            )
            try:
                archive = self.api.get_archive(
                    container_id, path, max_bytes=MAX_PASSWD_BYTES + 64 * 1024
                )
            except NotFoundError:
                return ""
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                member = next((m for m in tar.getmembers() if m.isfile()), None)
                if member is None:
                    return None
                handle = tar.extractfile(member)
                if handle is None:
                    return None
                return handle.read(MAX_PASSWD_BYTES).decode("utf-8", "surrogateescape")
        except (DockerError, tarfile.TarError, OSError):
            return None
        finally:
            if container_id:
                try:
                    self.api.remove_container(container_id, force=True)
                except DockerError:
                    log.warning("executor.passwd_probe_not_removed container=%s", container_id[:12])


_PROCESS_DIR: list[Path] = []
_PROCESS_DIR_LOCK = threading.Lock()


def _process_dir() -> Path:
    """One private directory (0700, made by us, so nobody else can plant a file in it) per
    process, for runners given no files directory."""
    with _PROCESS_DIR_LOCK:
        if not _PROCESS_DIR:
            _PROCESS_DIR.append(Path(tempfile.mkdtemp(prefix="hl-run-files-")))
        return _PROCESS_DIR[0]
