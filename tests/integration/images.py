"""A busybox-only test image, built once per machine with ``docker import`` (no registry).

The image is made by :func:`hardened_launcher.demo.image.ensure_busybox_image` (shared with
``hardened-launcher demo``); this module adds the test policy: skip locally, fail in CI, when
Docker or busybox is missing.
"""

from __future__ import annotations

from hardened_launcher.demo.image import BUSYBOX, REPOSITORY, ensure_busybox_image
from tests.conftest import require_docker

__all__ = ["BUSYBOX", "REPOSITORY", "busybox_image"]


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
