"""The run's image: the spec's, else the launcher's default (``SPACELIFT_DEFAULT_RUNNER_IMAGE``).

Pure: :func:`with_default_image` returns the spec with its image filled in, or raises
:class:`~.errors.ImageUnsetError` when neither names one. The pipeline applies it first, so
the policy judges, and the audit records, the image that will run.
"""

from __future__ import annotations

import dataclasses

from hardened_launcher.executor.errors import ImageUnsetError
from hardened_launcher.executor.runspec import RunSpec
from hardened_launcher.settings import Settings

__all__ = ["run_image", "with_default_image"]


def run_image(spec: RunSpec, settings: Settings) -> str:
    """The image ``spec`` runs in."""
    if spec.image is not None:
        return spec.image
    if settings.default_runner_image is not None:
        return settings.default_runner_image
    raise ImageUnsetError(
        "the run spec names no image and SPACELIFT_DEFAULT_RUNNER_IMAGE is not set",
        hint="name an image in the run spec, or set SPACELIFT_DEFAULT_RUNNER_IMAGE on the launcher",
    )


def with_default_image(spec: RunSpec, settings: Settings) -> RunSpec:
    """``spec`` with its image filled in (the same secrets: wiping either wipes both)."""
    image = run_image(spec, settings)
    return spec if image == spec.image else dataclasses.replace(spec, image=image)
