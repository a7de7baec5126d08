"""The reset grace of the long-poll server: a reset pool's old certificate may finish its runs
for a bounded time and can never take a lease."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.controlplane.errors import ControlPlaneConfigurationError
from hardened_launcher.controlplane.settings import (
    DEFAULT_RESET_GRACE_SECONDS,
    load_controlplane_config,
)
from hardened_launcher.transport import messages as m
from hardened_launcher.transport.poll_server import (
    CURRENT,
    RETIRING,
    CertificateRefused,
    PoolCertificates,
    retiring_may_deliver,
)

OLD, NEW = 0xA1, 0xB2


class Clock:
    def __init__(self) -> None:
        self.wall = 1_000_000.0

    def now(self) -> float:
        return self.wall


def _certificates(clock: Clock, grace: float, revoked_at: float) -> PoolCertificates:
    return PoolCertificates(
        lambda: {"pool-a": NEW},
        load_retired=lambda since: {("pool-a", OLD): revoked_at} if revoked_at >= since else {},
        grace_seconds=grace,
        refresh_seconds=0.0,
        clock=clock.now,
        wall=clock.now,
    )


def test_the_old_serial_is_retiring_for_the_grace_then_refused() -> None:
    clock = Clock()
    certs = _certificates(clock, 120.0, revoked_at=clock.wall)
    assert certs.check("pool-a", NEW) == CURRENT
    assert certs.check("pool-a", OLD) == RETIRING
    clock.wall += 119.0
    assert certs.check("pool-a", OLD) == RETIRING
    clock.wall += 1.0
    with pytest.raises(CertificateRefused, match="certificate_not_current"):
        certs.check("pool-a", OLD)


def test_without_a_grace_the_old_serial_is_refused_at_once() -> None:
    clock = Clock()
    certs = _certificates(clock, 0.0, revoked_at=clock.wall)
    with pytest.raises(CertificateRefused):
        certs.check("pool-a", OLD)


def test_another_serial_or_pool_gets_no_grace() -> None:
    clock = Clock()
    certs = _certificates(clock, 120.0, revoked_at=clock.wall)
    with pytest.raises(CertificateRefused, match="certificate_not_current"):
        certs.check("pool-a", 0xC3)
    with pytest.raises(CertificateRefused, match="unknown_pool"):
        certs.check("pool-b", OLD)


@pytest.mark.parametrize("elapsed", [0.0, 0.5, 1.999])
def test_a_new_session_is_judged_on_the_pools_as_they_are_now(elapsed: float) -> None:
    """Inside the refresh window the cached view still holds the old serial; a fresh check
    (what opening a session asks for) sees the reset at once and refuses it."""
    clock = Clock()
    pools = {"pool-a": OLD}
    certs = PoolCertificates(
        lambda: dict(pools), refresh_seconds=2.0, clock=clock.now, wall=clock.now
    )
    assert certs.check("pool-a", OLD) == CURRENT
    pools["pool-a"] = NEW  # the reset
    clock.wall += elapsed
    assert certs.check("pool-a", OLD) == CURRENT  # the cached view, for open sessions
    with pytest.raises(CertificateRefused, match="certificate_not_current"):
        certs.check("pool-a", OLD, fresh=True)
    with pytest.raises(CertificateRefused, match="certificate_not_current"):
        certs.check("pool-a", OLD)  # and the fresh read is the view from then on
    assert certs.check("pool-a", NEW, fresh=True) == CURRENT


def _payload(body: m.Body) -> bytes:
    return m.MessageStream(clock=lambda: datetime(2030, 1, 1, tzinfo=UTC)).next(body).to_json()


FINISHING = [
    m.Status(run_id="r1", state="FINISHED", exit_code=0),
    m.Bye(reason="cycled"),
    m.Ack(of="0" * 32),
    m.LogUrlsRequest(run_id="r1", from_chunk=2),
    m.Refuse(run_id="r1", lease_id="l1", reason="worker_busy", message="busy"),
    m.Heartbeat(state="DRAINED", running=("r1",)),
    m.Heartbeat(state="BUSY", running=("r1",)),
]
LEASING = [
    m.Accept(run_id="r1", lease_id="l1"),
    m.Register(worker_id="w1", pool_id="pool-a", version="1"),
    m.Heartbeat(state="IDLE", running=()),
]


@pytest.mark.parametrize("body", FINISHING, ids=lambda b: type(b).TYPE)
def test_what_finishes_work_is_delivered(body: m.Body) -> None:
    assert retiring_may_deliver(_payload(body))


@pytest.mark.parametrize("body", LEASING, ids=lambda b: type(b).TYPE)
def test_what_could_take_a_lease_is_not(body: m.Body) -> None:
    assert not retiring_may_deliver(_payload(body))


@given(st.binary(max_size=200))
@settings(max_examples=100, deadline=None)
def test_any_bytes_are_judged_without_error(data: bytes) -> None:
    retiring_may_deliver(data)


def test_the_grace_setting_is_typed_and_bounded() -> None:
    assert load_controlplane_config({}).reset_grace_seconds == DEFAULT_RESET_GRACE_SECONDS
    assert load_controlplane_config({"HL_CP_RESET_GRACE_SECONDS": "0"}).reset_grace_seconds == 0
    for bad in ("-1", "3601", "2m", "1.5"):
        with pytest.raises(ControlPlaneConfigurationError, match="HL_CP_RESET_GRACE_SECONDS"):
            load_controlplane_config({"HL_CP_RESET_GRACE_SECONDS": bad})
