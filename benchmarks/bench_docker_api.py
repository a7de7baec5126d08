"""Docker calls through the launcher's own client (``hardened_launcher.docker_api``) against the
docker SDK (the launcher's client before), in the same run, on the same dockerd and image.

For each round, alternating which goes first: create a busybox container (``hl-dockapi-*``),
start it, remove it (forced), once through each client; plus ``ping`` and ``info``. Prints the
median of each call and the ratio ours / SDK, and what importing each client costs (wall time
and modules, in a fresh interpreter, against a bare ``python -c pass``).

Run: ``.venv/bin/python -m benchmarks.bench_docker_api [rounds]`` (default 30).
"""

from __future__ import annotations

import json
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import docker

from hardened_launcher.demo.image import ensure_busybox_image
from hardened_launcher.docker_api import DockerClient

PREFIX = "hl-dockapi-"


def _timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def _ours(client: DockerClient, image: str, times: dict[str, list[float]]) -> None:
    name = f"{PREFIX}{secrets.token_hex(4)}"
    found: list[str] = []
    body = {"Image": image, "Cmd": ["sleep", "30"], "HostConfig": {"NetworkMode": "none"}}
    times["create"].append(_timed(lambda: found.append(client.create_container(body, name=name))))
    times["start"].append(_timed(lambda: client.start(found[0])))
    times["remove"].append(_timed(lambda: client.remove_container(found[0], force=True)))
    times["ping"].append(_timed(client.ping))
    times["info"].append(_timed(client.info))


def _sdk(api: docker.APIClient, image: str, times: dict[str, list[float]]) -> None:
    name = f"{PREFIX}{secrets.token_hex(4)}"
    found: list[str] = []
    host_config = api.create_host_config(network_mode="none")
    times["create"].append(
        _timed(
            lambda: found.append(
                api.create_container(image, ["sleep", "30"], name=name, host_config=host_config)[
                    "Id"
                ]
            )
        )
    )
    times["start"].append(_timed(lambda: api.start(found[0])))
    times["remove"].append(_timed(lambda: api.remove_container(found[0], force=True)))
    times["ping"].append(_timed(api.ping))
    times["info"].append(_timed(api.info))


def _import_cost(statement: str) -> tuple[float, int]:
    code = (
        "import json, sys, time\n"
        "t = time.perf_counter()\n"
        f"{statement}\n"
        "print(json.dumps([time.perf_counter() - t, len(sys.modules)]))\n"
    )
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(7)
    ]
    return statistics.median(r[0] for r in runs), int(runs[0][1])


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    image = ensure_busybox_image()
    ours_client = DockerClient.from_env()
    sdk = docker.from_env(version="1.41").api
    ours: dict[str, list[float]] = {k: [] for k in ("create", "start", "remove", "ping", "info")}
    theirs: dict[str, list[float]] = {k: [] for k in ours}
    try:
        for index in range(rounds):
            if index % 2:
                _ours(ours_client, image, ours)
                _sdk(sdk, image, theirs)
            else:
                _sdk(sdk, image, theirs)
                _ours(ours_client, image, ours)
    finally:
        for leftover in sdk.containers(all=True, filters={"name": PREFIX}):
            sdk.remove_container(leftover["Id"], force=True)
    print(f"{rounds} rounds, image {image}, medians in ms (ours / SDK):")
    for call, samples in ours.items():
        a, b = statistics.median(samples) * 1e3, statistics.median(theirs[call]) * 1e3
        print(f"  {call:<7} ours {a:7.2f}  SDK {b:7.2f}  ratio {a / b:.2f}")
    bare = _import_cost("pass")
    for label, statement in (
        ("ours", "import hardened_launcher.docker_api"),
        ("SDK", "import docker"),
    ):
        seconds, modules = _import_cost(statement)
        print(
            f"  import {label:<4} {seconds * 1e3:6.1f} ms, {modules - bare[1]:+d} modules over "
            f"a bare interpreter ({bare[1]})"
        )


if __name__ == "__main__":
    main()
