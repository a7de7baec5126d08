"""The launcher's Docker client against the real dockerd: typed answers, typed refusals, the
body bound and the archive read (the executor's tests run whole containers through it)."""

from __future__ import annotations

import io
import secrets
import tarfile

import pytest

from hardened_launcher.docker_api import (
    DockerClient,
    DockerProtocolError,
    DockerStatusError,
    ImageNotFoundError,
    NotFoundError,
)
from hardened_launcher.executor.errors import ContainerRuntimeError
from hardened_launcher.executor.runner import translate_docker_error
from tests.integration.images import busybox_image

pytestmark = pytest.mark.integration


@pytest.fixture
def client() -> DockerClient:
    busybox_image()  # requires Docker (skip locally, fail in CI)
    return DockerClient.from_env(timeout_seconds=30)


def test_the_daemon_speaks_the_pinned_version(client: DockerClient) -> None:
    assert client.ping() is True
    version = client.version()
    assert tuple(int(p) for p in version.get("ApiVersion", "0.0").split(".")) >= (1, 41)
    assert client.info().get("ServerVersion")


def test_refusals_are_typed(client: DockerClient) -> None:
    missing = f"hl-dockapi-missing-{secrets.token_hex(4)}"
    with pytest.raises(NotFoundError):
        client.inspect_container(missing)
    with pytest.raises(NotFoundError):
        client.remove_container(missing)
    with pytest.raises(ImageNotFoundError):
        client.inspect_image(f"{missing}:1")
    with pytest.raises(ImageNotFoundError):
        client.create_container({"Image": f"{missing}:1"})
    with pytest.raises(DockerStatusError) as caught:
        client.create_container(
            {"Image": busybox_image(), "HostConfig": {"Runtime": "hl-dockapi-no-such-runtime"}}
        )
    assert caught.value.status >= 400
    assert type(translate_docker_error(caught.value, doing="create")) is ContainerRuntimeError


def test_archive_read_and_its_bound(client: DockerClient) -> None:
    name = f"hl-dockapi-{secrets.token_hex(4)}"
    container_id = client.create_container(
        {"Image": busybox_image(), "Cmd": ["true"], "NetworkDisabled": True}, name=name
    )
    try:
        archive = client.get_archive(container_id, "/bin/busybox", max_bytes=64 * 1024 * 1024)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            assert tar.getmembers()[0].size > 100_000
        with pytest.raises(DockerProtocolError, match="limit"):
            client.get_archive(container_id, "/bin/busybox", max_bytes=4096)
        with pytest.raises(NotFoundError):
            client.get_archive(container_id, "/no/such/file", max_bytes=4096)
        assert client.inspect_container(container_id).get("Id") == container_id
    finally:
        client.remove_container(container_id)


def test_networks(client: DockerClient) -> None:
    name = f"hl-dockapi-{secrets.token_hex(4)}"
    key = "io.hardened-launcher.test-dockapi"
    label = f"{key}={name}"
    network_id = client.create_network(
        name, driver="bridge", internal=True, labels={key: name}, options={}
    )
    try:
        assert client.inspect_network(network_id).get("Name") == name
        assert [n.get("Id") for n in client.networks(labels=[label])] == [network_id]
        with pytest.raises(DockerStatusError):
            client.create_network(name, driver="bridge", internal=True, labels={}, options={})
    finally:
        client.remove_network(network_id)
    with pytest.raises(NotFoundError):
        client.remove_network(network_id)
