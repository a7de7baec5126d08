"""`hardened-launcher network requirements`: the launcher's outbound allowlist, computed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from hardened_launcher.cli import main
from hardened_launcher.egress import requirements


class FakeToken:
    @classmethod
    def from_encoded(cls, encoded: object) -> SimpleNamespace:  # noqa: ARG003 - Token's API
        return SimpleNamespace(
            broker_host="broker.example.net",
            broker_port=8883,
            control_plane_url="https://cp.example.net/api",
        )


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(__import__("os").environ):
        if name.startswith(("SPACELIFT_", "HL_")) and name != "HL_REQUIRE_INTEGRATION":
            monkeypatch.delenv(name)
    policy = tmp_path / "egress.yaml"
    policy.write_text("allow:\n  - host: github.com\n  - cidr: 198.18.0.0/24\n    ports: [8080]\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SPACELIFT_TOKEN", "dG9rZW4=")
    monkeypatch.setenv("SPACELIFT_PRIVATEVCS_MAPPING_NAME_0", "corp")
    monkeypatch.setenv(
        "SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_0", "https://git.corp.example:8443"
    )
    monkeypatch.setenv("HL_EGRESS_POLICY", str(policy))
    monkeypatch.setattr(requirements, "Token", FakeToken)
    return policy


def test_json_lists_every_endpoint_with_its_source(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["network", "requirements", "--format", "json"]) == 0
    endpoints = json.loads(capsys.readouterr().out)["endpoints"]
    pairs = {(e["host"], tuple(e["ports"]), e["source"]) for e in endpoints}
    assert ("broker.example.net", (8883,), "SPACELIFT_TOKEN broker_url") in pairs
    assert ("cp.example.net", (443,), "SPACELIFT_TOKEN control_plane_url") in pairs
    assert ("git.corp.example", (8443,), "SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_0") in pairs
    assert ("registry-1.docker.io", (443,), "default registry") in pairs
    assert ("github.com", (443,), "HL_EGRESS_POLICY") in pairs
    assert ("198.18.0.0/24", (8080,), "HL_EGRESS_POLICY") in pairs


def test_text_is_one_line_per_endpoint(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["network", "requirements"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# outbound allowlist")
    assert any(line.startswith("broker.example.net:8883 ") for line in out)
    assert len(out) == 1 + 2 + 1 + 3 + 2


def test_bad_policy_file_is_a_configuration_error(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.write_text("allow: [{host: 'a.*.b'}]\n")
    assert main(["network", "requirements"]) == 78
    assert "egress policy" in capsys.readouterr().err


def test_an_acknowledged_host_address_is_named_as_the_launchers_own_host(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.write_text(
        "allow:\n  - cidr: 10.20.0.5/32\n    ports: [8443]\n    allow_host_address: true\n"
        "  - cidr: 10.20.0.0/16\n    ports: [8443]\n"
    )
    assert main(["network", "requirements", "--format", "json"]) == 0
    endpoints = json.loads(capsys.readouterr().out)["endpoints"]
    purposes = {e["host"]: e["purpose"] for e in endpoints if e["source"] == "HL_EGRESS_POLICY"}
    assert "launcher's own host" in purposes["10.20.0.5/32"]
    assert "launcher's own host" not in purposes["10.20.0.0/16"]
