"""A busybox-only test image, built once per machine with ``docker import`` (no registry).

The image is made by :func:`hardened_launcher.demo.image.ensure_busybox_image` (shared with
``hardened-launcher demo``); this module adds the test policy: skip locally, fail in CI, when
Docker or busybox is missing.
"""

from __future__ import annotations

from hardened_launcher.demo.image import BUSYBOX, REPOSITORY, ensure_busybox_image
from tests.conftest import require_docker

__all__ = [
    "BUSYBOX",
    "REPOSITORY",
    "busybox_image",
    "image_with_user",
    "runner_image",
    "setuid_image",
]


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
    return ensure_busybox_image()


def setuid_image() -> str:
    """The busybox image plus ``/opt/suid/id``: a setuid-root busybox (its ``id`` applet).

    Built once per Docker host from the busybox image's own root, so that a test can show that a
    setuid bit in the image gives a run nothing (``no-new-privileges``).
    """
    import hashlib  # noqa: PLC0415
    import io  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    from hardened_launcher.demo.image import _tar_of_root  # noqa: PLC0415

    base = busybox_image()
    data = BUSYBOX.read_bytes()
    tag = f"hl-test-setuid:{hashlib.sha256(data).hexdigest()[:16]}"
    probe = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    if probe.returncode == 0:
        return tag
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO(_tar_of_root(data, applets))
    with tarfile.open(fileobj=buffer, mode="a") as tar:
        for directory in ("opt", "opt/suid"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("opt/suid/id")
        info.mode = 0o4755
        info.uid = info.gid = 0
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    subprocess.run(
        ["docker", "import", "-", tag],
        input=buffer.getvalue(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    del base
    return tag


def image_with_user(name: str = "runner", uid: int = 1983) -> str:
    """The busybox image whose ``/etc/passwd`` and ``/etc/group`` already hold ``name`` (uid)."""
    import hashlib  # noqa: PLC0415
    import io  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    from hardened_launcher.demo.image import _tar_of_root  # noqa: PLC0415

    busybox_image()
    data = BUSYBOX.read_bytes()
    tag = f"hl-test-user-{name}-{uid}:{hashlib.sha256(data).hexdigest()[:16]}"
    probe = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    if probe.returncode == 0:
        return tag
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    replaced = {
        "etc/passwd": f"root:x:0:0::/root:/bin/sh\n{name}:x:{uid}:{uid}::/home/{name}:/bin/sh\n",
        "etc/group": f"root:x:0:\n{name}:x:{uid}:\n",
    }
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(_tar_of_root(data, applets))) as source,
        tarfile.open(fileobj=out, mode="w") as tar,
    ):
        for member in source.getmembers():
            if member.name in replaced:
                content = replaced[member.name].encode()
                member.size = len(content)
                tar.addfile(member, io.BytesIO(content))
            else:
                tar.addfile(member, source.extractfile(member) if member.isfile() else None)
    subprocess.run(
        ["docker", "import", "-", tag],
        input=out.getvalue(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    return tag


def runner_image() -> str:
    """The Debian + ansible-core + git runner image (built once per Docker host, by digest).

    Skips locally, fails in CI, when Docker or mmdebstrap is missing. The first call on a host
    builds it (about a minute here); later calls cost one ``docker image inspect``.
    """
    require_docker()
    from hardened_launcher.demo.runner_image import ensure_runner_image  # noqa: PLC0415

    try:
        tag, seconds = ensure_runner_image()
    except FileNotFoundError as exc:
        import pytest  # noqa: PLC0415

        from tests.conftest import integration_required  # noqa: PLC0415

        if integration_required():
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    print(f"runner image {tag} ready in {seconds:.1f} s")
    return tag
