"""A real runner image: Debian with ``ansible-core`` and ``git``, built here without a registry.

``mmdebstrap`` makes the root file system from this machine's configured apt sources (apt checks
the archive's signatures), adds the vendor runner images' ``spacelift`` user (uid 1983), and
``docker import`` turns it into an image. The tag is the SHA-256 of the recipe's inputs (the
recipe below, the apt sources, the suite and mmdebstrap's version), so the image is built once
per Docker host and reused while the inputs stay the same; package updates published under an
unchanged apt source do not rebuild it (delete the tag to refresh). A cold build takes about a
minute here (measured: 62 s, 245 MB tar, on 2 shared cores); a cached one is one
``docker image inspect``. Shared by the integration tests (``tests/integration/images.py``).
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

__all__ = ["PACKAGES", "REPOSITORY", "apt_sources", "ensure_runner_image", "runner_image_tag"]

REPOSITORY: Final = "hl-runner-ansible"
PACKAGES: Final = ("ansible-core", "git", "ca-certificates")
RUN_UID: Final = 1983
#: Every step of the build; its text is part of the tag, so a change here makes a new image.
RECIPE: Final = (
    "--variant=essential",
    "--include=" + ",".join(PACKAGES),
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    '--customize-hook=rm -rf "$1/var/cache/apt" "$1/var/lib/apt/lists"',
    (
        f"--customize-hook=echo 'spacelift:x:{RUN_UID}:{RUN_UID}:spacelift:/home/spacelift:"
        '/bin/sh\' >>"$1/etc/passwd"'
    ),
    f"--customize-hook=echo 'spacelift:x:{RUN_UID}:' >>\"$1/etc/group\"",
    '--customize-hook=mkdir -p "$1/workspace" "$1/home/spacelift"',
)
_LOCK: Final = Path(tempfile.gettempdir()) / "hl-runner-image.lock"


def apt_sources() -> Path:
    """This machine's configured Debian source (deb822 first, else the one-line list)."""
    for candidate in (
        Path("/etc/apt/sources.list.d/debian.sources"),
        Path("/etc/apt/sources.list"),
    ):
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    raise FileNotFoundError("no apt sources found (/etc/apt/sources.list.d/debian.sources)")


def _suite() -> str:
    for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"'):
            return value.strip('"')
    raise FileNotFoundError("/etc/os-release names no VERSION_CODENAME")


def runner_image_tag(sources: Path, suite: str, mmdebstrap: str = "mmdebstrap") -> str:
    """``hl-runner-ansible:<20 hex>``: the digest of everything the build reads."""
    version = subprocess.run(
        [mmdebstrap, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    digest = hashlib.sha256()
    for part in (suite, version, *RECIPE):
        digest.update(part.encode() + b"\0")
    digest.update(sources.read_bytes())
    return f"{REPOSITORY}:{digest.hexdigest()[:20]}"


def ensure_runner_image(
    *, docker: str = "docker", sources: Path | None = None, suite: str | None = None
) -> tuple[str, float]:
    """The image's tag and the seconds spent (building it first if this Docker host lacks it).

    Raises ``FileNotFoundError`` when mmdebstrap or the apt sources are missing and
    ``CalledProcessError`` (with mmdebstrap's last lines) when the build fails.
    """
    started = time.monotonic()
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise FileNotFoundError("mmdebstrap is missing (apt-get install mmdebstrap)")
    sources = sources or apt_sources()
    tag = runner_image_tag(sources, suite or _suite(), mmdebstrap)
    # One build at a time on this machine (parallel test sessions wait for the first).
    with _LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        probe = subprocess.run([docker, "image", "inspect", tag], capture_output=True, check=False)
        if probe.returncode == 0:
            return tag, time.monotonic() - started
        with tempfile.TemporaryDirectory(prefix="hl-runner-image-") as work:
            rootfs = Path(work) / "rootfs.tar"
            subprocess.run(
                [mmdebstrap, *RECIPE, suite or _suite(), str(rootfs), str(sources)],
                capture_output=True,
                check=True,
                timeout=1800,
            )
            subprocess.run(
                [docker, "import", "--message", f"runner image {tag}", str(rootfs), tag],
                capture_output=True,
                check=True,
                timeout=600,
            )
    return tag, time.monotonic() - started
