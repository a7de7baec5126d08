"""A busybox-only image, built once per Docker host with ``docker import`` (no registry).

The root file system holds ``/bin/busybox`` (Debian's ``busybox-static``) with one symbolic link
per applet, and empty ``/tmp`` and ``/workspace``: no Python, no package manager, nothing else.
The tag carries a digest of busybox, so a changed busybox makes a new image. Shared by the demo
and ``tests/integration/images.py``.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path
from typing import Final

BUSYBOX: Final = Path("/bin/busybox")
REPOSITORY: Final = "hl-test-busybox"


def _tar_of_root(busybox: bytes, applets: list[str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for directory, mode in (
            ("bin", 0o755),
            ("tmp", 0o1777),
            ("workspace", 0o755),
            ("etc", 0o755),
        ):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.mode = 0o755
        info.size = len(busybox)
        tar.addfile(info, io.BytesIO(busybox))
        for applet in applets:
            if applet == "busybox" or "/" in applet:
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for name, text in (
            ("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
            ("etc/group", "root:x:0:\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def busybox_tag(busybox: Path = BUSYBOX) -> str:
    return f"{REPOSITORY}:{hashlib.sha256(busybox.read_bytes()).hexdigest()[:16]}"


def ensure_busybox_image(busybox: Path = BUSYBOX, docker: str = "docker") -> str:
    """The image's tag, importing it first if this Docker host lacks it.

    Raises ``FileNotFoundError`` when ``busybox`` is missing and ``CalledProcessError`` when
    Docker refuses.
    """
    if not busybox.is_file():
        raise FileNotFoundError(f"{busybox} is missing; install the Debian package busybox-static")
    tag = busybox_tag(busybox)
    probe = subprocess.run([docker, "image", "inspect", tag], capture_output=True, check=False)
    if probe.returncode == 0:
        return tag
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    subprocess.run(
        [docker, "import", "-", tag],
        input=_tar_of_root(busybox.read_bytes(), applets),
        capture_output=True,
        check=True,
        timeout=120,
    )
    return tag
