"""A busybox-only test image, built once per machine with ``docker import`` (no registry).

The root file system holds ``/bin/busybox`` (Debian's ``busybox-static``) with one symbolic link
per applet, and empty ``/tmp`` and ``/workspace``: no Python, no package manager, nothing else.
The image's tag carries a digest of busybox, so a changed busybox makes a new image.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

from tests.conftest import require_docker

BUSYBOX = Path("/bin/busybox")
REPOSITORY = "hl-test-busybox"


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


def busybox_image() -> str:
    """The tag of the test image, importing it first if this Docker host lacks it."""
    require_docker()
    if not BUSYBOX.is_file():
        import pytest  # noqa: PLC0415

        from tests.conftest import integration_required  # noqa: PLC0415

        message = "/bin/busybox is missing; install the Debian package busybox-static"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)
    data = BUSYBOX.read_bytes()
    tag = f"{REPOSITORY}:{hashlib.sha256(data).hexdigest()[:16]}"
    probe = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    if probe.returncode == 0:
        return tag
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    subprocess.run(
        ["docker", "import", "-", tag],
        input=_tar_of_root(data, applets),
        capture_output=True,
        check=True,
        timeout=120,
    )
    return tag
