"""Egress networks use the executor's label prefix; networks an older version made (labelled
``dev.hardened-launcher.*``) are still found and removed when their owner is dead (upgrade)."""

from __future__ import annotations

import secrets

import pytest

from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.egress.isolation import LABEL_EGRESS_OWNER, LABEL_EGRESS_RUN
from hardened_launcher.egress.leftovers import remove_leftover_egress
from hardened_launcher.egress.owner import current_owner
from hardened_launcher.executor.runner import docker_client
from tests.conftest import require_docker

pytestmark = pytest.mark.integration


def test_networks_of_an_older_version_are_cleaned_up() -> None:
    require_docker()
    import docker  # noqa: PLC0415

    client = docker.from_env()
    tag = secrets.token_hex(4)
    boot, pidns = current_owner().split("/")[:2]
    dead = f"{boot}/{pidns}/999999999/1"
    made = {
        f"hl-it-legacy-dead-{tag}": {
            "dev.hardened-launcher.managed": "true",
            "dev.hardened-launcher.egress-run": f"old-{tag}",
            "dev.hardened-launcher.egress-owner": dead,
        },
        f"hl-it-legacy-live-{tag}": {
            "dev.hardened-launcher.egress-run": f"live-{tag}",
            "dev.hardened-launcher.egress-owner": current_owner(),
        },
        f"hl-it-current-dead-{tag}": {LABEL_EGRESS_RUN: f"new-{tag}", LABEL_EGRESS_OWNER: dead},
    }
    try:
        for name, labels in made.items():
            client.networks.create(name, driver="bridge", internal=True, labels=labels)
        audit = MemoryAuditLog()
        done = remove_leftover_egress(docker_client(), audit=audit, firewall=False)
        assert f"hl-it-legacy-dead-{tag}" in done.networks
        assert f"hl-it-current-dead-{tag}" in done.networks
        assert f"hl-it-legacy-live-{tag}" not in done.networks
        assert client.networks.list(names=[f"hl-it-legacy-live-{tag}"])
        assert {e.run_id for e in audit.events} >= {f"old-{tag}", f"new-{tag}"}
    finally:
        for name in made:
            for network in client.networks.list(names=[name]):
                network.remove()
