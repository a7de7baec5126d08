"""The create body sent to Docker: every hardening setting reaches its Engine API field, and
the body equals what the docker SDK (the launcher's client until 0.1, still a test dependency)
sent for the same container spec."""

from __future__ import annotations

from typing import Any

import docker
import pytest

from hardened_launcher.executor.container_spec import NetworkPlan, build_container_spec
from hardened_launcher.executor.create_body import create_body
from tests.unit.test_executor_container_spec import WORKER, settings, spec


def _without_false(body: dict[str, Any]) -> dict[str, Any]:
    """``False`` is every boolean field's default: an absent flag and a false one are equal
    (the SDK leaves out ``Privileged`` and ``OomKillDisable`` when false; we send them)."""
    return {
        key: _without_false(value) if isinstance(value, dict) else value
        for key, value in body.items()
        if value is not False
    }


def _sdk_body(create_args: dict[str, Any], host_config_args: dict[str, Any]) -> dict[str, Any]:
    api = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
    host_config = api.create_host_config(**host_config_args)
    config = api.create_container_config(**create_args, host_config=host_config)
    return {k: v for k, v in dict(config).items() if v is not None}


@pytest.mark.parametrize(
    "network",
    [
        None,
        NetworkPlan(
            network_mode="hl-egress-run-7",
            dns=("10.9.0.254",),
            dns_search=("internal",),
            dns_options=("ndots:1",),
            environment={"HTTP_PROXY": "http://10.9.0.1:3128"},
        ),
    ],
)
@pytest.mark.parametrize("runtime", [None, "runsc"])
def test_the_body_is_what_the_sdk_sent(network: NetworkPlan | None, runtime: str | None) -> None:
    container = build_container_spec(
        spec(),
        settings(worker_runtime=runtime),
        launcher_id="L",
        worker=WORKER,
        network=network,
    )
    ours = create_body(container.create_args, container.host_config_args)
    sdk = _sdk_body(dict(container.create_args), dict(container.host_config_args))
    assert _without_false(ours) == _without_false(sdk)
    assert ours["HostConfig"]["Privileged"] is False


def test_hardening_fields() -> None:
    container = build_container_spec(spec(), settings(), launcher_id="L", worker=WORKER)
    body = create_body(container.create_args, container.host_config_args)
    host = body["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Privileged"] is False
    assert host["Memory"] == host["MemorySwap"] > 0
    assert host["LogConfig"] == {"Type": "none", "Config": {}}
    assert {"Name": "core", "Soft": 0, "Hard": 0} in host["Ulimits"]
    assert body["OpenStdin"] is body["StdinOnce"] is body["AttachStdin"] is True
    assert body["Tty"] is False


def test_an_unknown_setting_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="cpuset"):
        create_body({"image": "x"}, {"cpuset": "0"})
    with pytest.raises(ValueError, match="volumes"):
        create_body({"image": "x", "volumes": ["/x"]}, {})
