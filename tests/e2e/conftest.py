"""End-to-end fixtures: :class:`hardened_launcher.demo.Environment` on real components.

dockerd, the long-poll endpoint of ``serve`` (default) or mosquitto with the generated TLS
configuration (``protocol="mqtt"``), SeaweedFS S3, ``controlplane serve``
and ``hardened-launcher start`` as child processes. A missing component skips locally and
fails in CI (tests/conftest.py); a missing piece of the product (serve, the daemon) is never
skipped: the test fails with a message naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hardened_launcher.demo.environment import Environment, MissingComponentsError
from tests.conftest import integration_required

EnvFactory = Callable[..., Environment]


def _start(env: Environment) -> Environment:
    try:
        env.start()
    except MissingComponentsError as exc:
        if integration_required():
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    return env


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[EnvFactory]:
    """Start an Environment in the test's tmp_path; every one is stopped at teardown."""
    started: list[Environment] = []

    def factory(**kwargs: object) -> Environment:
        root = tmp_path / f"env{len(started)}"
        env = Environment(root=root, keep=True, **kwargs)  # type: ignore[arg-type]
        started.append(env)
        return _start(env)

    yield factory
    for env in reversed(started):
        env.stop()


@pytest.fixture(scope="module", params=["poll", "mqtt"])
def demo_env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Environment]:
    """One launcher with the sample policy and the demo's 15 s run timeout, over each
    transport (poll, the default, starts no broker), shared by the stories of a module as
    ``hardened-launcher demo`` shares one environment between its stories (each story uses its
    own run ids, so one story cannot satisfy another's checks)."""
    from hardened_launcher.demo.stories import DEMO_RUN_TIMEOUT  # noqa: PLC0415

    root = tmp_path_factory.mktemp(f"demo-{request.param}") / "env"
    env = Environment(root=root, keep=True, run_timeout=DEMO_RUN_TIMEOUT, protocol=request.param)
    try:
        yield _start(env)
    finally:
        env.stop()
