"""One Docker label prefix: egress networks are labelled like run containers
(``io.hardened-launcher.``); the leftovers clean-up also reads the labels older versions used."""

from __future__ import annotations

from typing import Any, cast

from hardened_launcher.docker_api import DockerClient
from hardened_launcher.egress import isolation
from hardened_launcher.egress.leftovers import remove_leftover_egress
from hardened_launcher.egress.owner import current_owner
from hardened_launcher.executor.container_spec import LABEL_LAUNCHER_ID, LABEL_MANAGED


def test_egress_labels_use_the_executors_prefix() -> None:
    prefix = LABEL_MANAGED.removesuffix("managed")
    assert prefix == "io.hardened-launcher."
    assert LABEL_LAUNCHER_ID.startswith(prefix)
    for label in (
        isolation.LABEL_EGRESS_RUN,
        isolation.LABEL_EGRESS_OWNER,
        isolation.LABEL_EGRESS_LAUNCHER,
        isolation.LABEL_MANAGED,
    ):
        assert label.startswith(prefix)
    assert isolation.LABEL_MANAGED == LABEL_MANAGED


class _Network:
    def __init__(self, network_id: str, labels: dict[str, str]) -> None:
        self.id = network_id
        self.name = f"net-{network_id}"
        self.labels = labels
        self.removed = False


class _Client:
    """The network calls of :class:`~hardened_launcher.docker_api.DockerClient` the clean-up
    makes."""

    def __init__(self, networks: list[_Network]) -> None:
        self.by_id = {n.id: n for n in networks}

    def networks(self, *, labels: list[str]) -> list[dict[str, Any]]:
        (key,) = labels
        return [
            {"Id": n.id, "Name": n.name, "Labels": n.labels}
            for n in self.by_id.values()
            if key in n.labels
        ]

    def inspect_network(self, network: str) -> dict[str, Any]:
        return {"Id": network, "Containers": {}}

    def remove_network(self, network: str) -> None:
        self.by_id[network].removed = True


def _dead() -> str:
    boot, pidns = current_owner().split("/")[:2]
    return f"{boot}/{pidns}/999999999/1"


def test_leftovers_cleanup_reads_old_and_new_labels() -> None:
    old_dead = _Network(
        "a",
        {
            "dev.hardened-launcher.egress-run": "run-old",
            "dev.hardened-launcher.egress-owner": _dead(),
        },
    )
    old_live = _Network(
        "b",
        {
            "dev.hardened-launcher.egress-run": "run-live",
            "dev.hardened-launcher.egress-owner": current_owner(),
        },
    )
    new_dead = _Network(
        "c", {isolation.LABEL_EGRESS_RUN: "run-new", isolation.LABEL_EGRESS_OWNER: _dead()}
    )
    # Both spellings on one network (never made, but must be handled once; current wins).
    both = _Network(
        "d",
        {
            isolation.LABEL_EGRESS_RUN: "run-both",
            isolation.LABEL_EGRESS_OWNER: current_owner(),
            "dev.hardened-launcher.egress-run": "run-both",
            "dev.hardened-launcher.egress-owner": _dead(),
        },
    )
    client = _Client([old_dead, old_live, new_dead, both])
    done = remove_leftover_egress(cast("DockerClient", client), firewall=False)
    assert sorted(done.networks) == ["net-a", "net-c"]
    assert old_dead.removed
    assert new_dead.removed
    assert not old_live.removed
    assert not both.removed
