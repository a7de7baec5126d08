"""Moving sealed plan artifacts to and from object storage through presigned URLs.

The control plane hands a planning run a PUT URL and its applying run a GET URL
(``assign.plan_url``); only sealed bytes travel (docs/envelope.md, plan artifacts). Reads are
bounded by :data:`~hardened_launcher.envelope.plan.MAX_SEALED_PLAN_BYTES` while streaming.
"""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from typing import Final

from hardened_launcher.envelope.plan import MAX_SEALED_PLAN_BYTES, PlanArtifactError
from hardened_launcher.launcher.logship import UploadError, put_presigned

__all__ = ["UploadError", "get_plan", "put_plan"]

PLAN_TIMEOUT_SECONDS: Final = 60.0


def _unavailable(what: str) -> PlanArtifactError:
    return PlanArtifactError(
        f"the plan artifact cannot be fetched: {what}",
        hint="check that object storage is reachable from the launcher, then confirm again "
        "with a new planning run",
        reason="plan_unavailable",
    )


def get_plan(url: str, *, timeout: float = PLAN_TIMEOUT_SECONDS) -> bytes:
    """GET a sealed plan (at most MAX_SEALED_PLAN_BYTES), or raise PlanArtifactError."""
    if not url.startswith(("https://", "http://")):
        raise _unavailable("the URL is not http(s)")
    request = urllib.request.Request(url, method="GET")  # noqa: S310 - scheme checked above
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            data = response.read(MAX_SEALED_PLAN_BYTES + 1)
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(OSError):
            exc.read(64 * 1024)
        raise _unavailable(f"the store answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _unavailable(f"the store is unreachable ({type(exc).__name__})") from None
    if len(data) > MAX_SEALED_PLAN_BYTES:
        raise PlanArtifactError(
            f"the stored plan is over {MAX_SEALED_PLAN_BYTES} bytes",
            hint="discard the planning run and plan again",
            reason="plan_too_large",
        )
    return bytes(data)


def put_plan(url: str, data: bytes, *, timeout: float = PLAN_TIMEOUT_SECONDS) -> None:
    """PUT a sealed plan, or raise :class:`~.logship.UploadError`."""
    put_presigned(url, data, timeout=timeout)
