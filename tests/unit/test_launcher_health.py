"""The health/metrics listener with a real HTTP client on loopback, and the metrics themselves."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from hardened_launcher.errors import ConfigurationError, InfrastructureError
from hardened_launcher.launcher.health import HealthServer, Readiness, parse_address
from hardened_launcher.launcher.metrics import LauncherMetrics


class State:
    def __init__(self) -> None:
        self.readiness = Readiness(ready=False, reason="not_registered")
        self.raise_error = False

    def __call__(self) -> Readiness:
        if self.raise_error:
            raise RuntimeError("broken check")
        return self.readiness


@pytest.fixture
def state() -> State:
    return State()


@pytest.fixture
def metrics() -> LauncherMetrics:
    return LauncherMetrics()


@pytest.fixture
def server(state: State, metrics: LauncherMetrics) -> Iterator[HealthServer]:
    with HealthServer("127.0.0.1:0", metrics=metrics, readiness=state) as running:
        yield running


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback test
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_healthz(server: HealthServer) -> None:
    assert server.is_loopback
    assert get(server.url + "/healthz")[:1] == (200,)
    assert get(server.url + "/healthz")[2] == "ok\n"


def test_readyz_transitions(server: HealthServer, state: State) -> None:
    assert get(server.url + "/readyz")[0::2] == (503, "not ready: not_registered\n")
    state.readiness = Readiness(ready=True)
    assert get(server.url + "/readyz")[0::2] == (200, "ready\n")
    state.readiness = Readiness(ready=False, reason="draining")
    assert get(server.url + "/readyz")[0::2] == (503, "not ready: draining\n")
    state.raise_error = True
    assert get(server.url + "/readyz")[0::2] == (503, "not ready: readiness_check_failed\n")
    state.raise_error = False
    state.readiness = Readiness(ready=False, reason="Bad Reason\nInjected: x")
    assert get(server.url + "/readyz")[0::2] == (503, "not ready: not_ready\n")


def test_unknown_path_and_methods(server: HealthServer) -> None:
    assert get(server.url + "/nope")[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("HEAD", "/healthz")
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b""
    conn.request("POST", "/healthz", body=b"x")
    assert conn.getresponse().status == 501
    conn.close()


def test_metrics_contents(server: HealthServer, metrics: LauncherMetrics) -> None:
    metrics.run_finished("finished", 12.5)
    metrics.run_finished("failed", 3.0)
    metrics.run_refused("policy_denied")
    metrics.run_refused("policy_denied")
    metrics.run_refused("envelope_rejected")
    metrics.policy_evaluated(0.004)
    metrics.redacted("DB_PASSWORD", 3)
    metrics.redacted("hunter2 is the value, not a name!", 1)  # never becomes a label
    metrics.broker_reconnected()
    metrics.chunk_spooled(100)
    metrics.chunk_uploaded()
    metrics.chunk_upload_failed()
    status, content_type, text = get(server.url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("hl_runs_total", (("outcome", "finished"),))] == 1
    assert samples[("hl_runs_total", (("outcome", "refused"),))] == 3
    assert samples[("hl_run_refusals_total", (("reason", "policy_denied"),))] == 2
    assert samples[("hl_run_refusals_total", (("reason", "envelope_rejected"),))] == 1
    assert samples[("hl_run_duration_seconds_count", ())] == 2
    assert samples[("hl_run_duration_seconds_sum", ())] == 15.5
    assert samples[("hl_policy_evaluation_seconds_count", ())] == 1
    assert samples[("hl_redactions_total", (("variable", "DB_PASSWORD"),))] == 3
    assert samples[("hl_redactions_total", (("variable", "other"),))] == 1
    assert samples[("hl_broker_reconnects_total", ())] == 1
    assert samples[("hl_log_spooled_bytes", ())] == 100
    assert samples[("hl_log_chunks_uploaded_total", ())] == 1
    assert samples[("hl_log_chunk_upload_failures_total", ())] == 1
    assert "hunter2" not in text


def test_registry_is_not_the_global_one(metrics: LauncherMetrics) -> None:
    assert metrics.registry is not REGISTRY
    LauncherMetrics()  # a second instance registers no duplicate (it would raise if global)
    assert REGISTRY.get_sample_value("hl_broker_reconnects_total") is None


def test_label_cardinality_is_bounded() -> None:
    metrics = LauncherMetrics()
    for n in range(400):
        metrics.run_refused(f"reason_{n}")
    text = metrics.render().decode()
    assert text.count("hl_run_refusals_total{") == 257  # 256 names + "other"


def test_stop_closes_the_port(state: State, metrics: LauncherMetrics) -> None:
    server = HealthServer("127.0.0.1:0", metrics=metrics, readiness=state).start()
    port = server.port
    server.stop()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    server.stop()  # idempotent


def test_ipv6_loopback(state: State, metrics: LauncherMetrics) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = HealthServer("[::1]:0", metrics=metrics, readiness=state).start()
    except InfrastructureError:
        pytest.skip("::1 is not configured here")
    try:
        assert server.is_loopback
        assert server.url.startswith("http://[::1]:")
        assert get(server.url + "/healthz")[0] == 200
    finally:
        server.stop()


def test_port_in_use_is_an_infrastructure_error(
    server: HealthServer, state: State, metrics: LauncherMetrics
) -> None:
    other = HealthServer(f"127.0.0.1:{server.port}", metrics=metrics, readiness=state)
    with pytest.raises(InfrastructureError) as info:
        other.start()
    assert info.value.reason == "metrics_listen_failed"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:9464", ("::1", 9464)),
        (" 0.0.0.0:80 ", ("0.0.0.0", 80)),  # noqa: S104 - parsing only
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["", "9464", ":9464", "host:", "host:65536", "::1:9464", "[nope]:1", "a b:1", "h:-1"]
)
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_address(text)
