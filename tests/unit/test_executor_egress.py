# ruff: noqa: ARG002 - fakes implement interfaces whose arguments they do not need
"""Gate 6 in the pipeline, with fakes: the egress session wraps the container's whole life.

The session opens before the container is created and closes after it is removed, whatever
happened; the container gets the session's network and proxy variables; every decision reaches
the audit sink and the run's log (redacted, on a line of its own, thread-safe).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher.audit import MemoryAuditLog, Outcome
from hardened_launcher.egress.policy import EgressPolicy, parse_policy
from hardened_launcher.egress.proxy import EgressDecision
from hardened_launcher.errors import InfrastructureError, LauncherError
from hardened_launcher.executor.container_spec import ContainerSpec
from hardened_launcher.executor.errors import ContainerRuntimeError
from hardened_launcher.executor.logsink import FileLogSink
from hardened_launcher.executor.runner import RunResult, StopReason
from hardened_launcher.executor.runspec import RunSpec
from hardened_launcher.pipeline import (
    EGRESS_LOG_PREFIX,
    EgressRunLog,
    EgressStep,
    PolicyStep,
    network_plan,
    run_pipeline,
)
from hardened_launcher.redaction import Redactor
from hardened_launcher.settings import PrivateVcsMapping, Settings
from tests.unit.test_executor_pipeline import (
    CANARY,
    FakeBinaries,
    StandInRedactor,
    _raise,
    make_spec,
    settings,
    step,
)

NETWORK = "hl-egress-run-p"
PROXY = "http://10.99.0.1:40000"
POLICY = parse_policy({"allow": [{"host": "allowed.test", "ports": [8080]}]})


def decision(
    outcome: Outcome = Outcome.DENY, host: str = "denied.test", reason: str | None = None
) -> EgressDecision:
    allowed = outcome is Outcome.ALLOW
    return EgressDecision(
        run_id="run-p",
        method="GET",
        host=host,
        port=8080,
        outcome=outcome,
        reason=None if allowed else reason or "egress_host_not_allowed",
        message="" if allowed else f"refused: {host}:8080 is not allowed",
        address="198.18.0.2" if allowed else None,
    )


class FakeSession:
    """Stands in for EgressSession; records its life in the shared ``events`` list."""

    def __init__(
        self,
        events: list[str],
        *,
        on_decision: Callable[[EgressDecision], None] | None,
        audit: Any,
        on_close: list[EgressDecision],
    ) -> None:
        self.events = events
        self.on_decision = on_decision
        self.audit = audit
        self.on_close = on_close
        self.network_name = NETWORK
        self.proxy_env: Mapping[str, str] = {"HTTP_PROXY": PROXY, "HTTPS_PROXY": PROXY}
        self.closed = 0

    def host_config_overrides(self) -> dict[str, Any]:
        return {
            "network_mode": NETWORK,
            "dns": ["10.99.0.254"],
            "dns_search": [],
            "dns_opt": ["timeout:1", "attempts:1"],
        }

    def emit(self, d: EgressDecision) -> None:
        """What the proxy does per connection: audit it, then tell the run's log."""
        self.audit.record(d.to_audit_event())
        assert self.on_decision is not None
        self.on_decision(d)

    def close(self) -> None:
        self.closed += 1
        self.events.append("session.close")
        for d in self.on_close:  # tunnels still open when the container went away
            self.emit(d)


class Opener:
    """The ``open_session`` seam: records the arguments and hands out a :class:`FakeSession`."""

    def __init__(
        self, events: list[str], *, fail: Exception | None = None, on_close: Any = ()
    ) -> None:
        self.events = events
        self.fail = fail
        self.on_close = list(on_close)
        self.calls: list[tuple[str, EgressPolicy, dict[str, Any]]] = []
        self.session: FakeSession | None = None

    def __call__(self, run_id: str, policy: EgressPolicy, **kwargs: Any) -> FakeSession:
        self.calls.append((run_id, policy, kwargs))
        self.events.append("session.open")
        if self.fail is not None:
            raise self.fail
        self.session = FakeSession(
            self.events,
            on_decision=kwargs["on_decision"],
            audit=kwargs["audit"],
            on_close=self.on_close,
        )
        return self.session


class RecordingSink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = 0

    def write(self, channel: str, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.data += data

    def close(self) -> None:
        self.closed += 1


class EgressRunner:
    """A runner that writes output, lets the proxy decide mid-run, then 'removes' the container."""

    def __init__(
        self,
        events: list[str],
        opener: Opener,
        *,
        decisions: tuple[EgressDecision, ...] = (),
        fail: Exception | None = None,
    ) -> None:
        self.events = events
        self.opener = opener
        self.decisions = decisions
        self.fail = fail
        self.containers: list[ContainerSpec] = []

    def run(self, container: ContainerSpec, instructions: bytearray, **kwargs: Any) -> RunResult:
        self.events.append("container.create")
        self.containers.append(container)
        sink = kwargs["sink"]
        try:
            sink.write("stdout", b"::hl:: phase main start\npartial line")
            session = self.opener.session
            assert session is not None
            for d in self.decisions:
                # Decisions arrive on the proxy's own thread.
                thread = threading.Thread(target=session.emit, args=(d,))
                thread.start()
                thread.join()
            sink.write("stdout", b" continues\n")
            if self.fail is not None:
                raise self.fail
            return RunResult(
                run_id=container.run_id,
                container_id="c1",
                exit_code=0,
                stopped_by=StopReason.EXITED,
                duration_seconds=0.1,
                output_bytes=1,
            )
        finally:
            self.events.append("container.remove")
            sink.close()


def go(
    *,
    s: Settings | None = None,
    egress: EgressStep | None = None,
    opener: Opener | None = None,
    runner: EgressRunner | None = None,
    policy: PolicyStep | None = None,
    redactor: Any = None,
    sink: Any = None,
    spec: RunSpec | None = None,
    events: list[str] | None = None,
) -> tuple[RunResult | LauncherError, MemoryAuditLog, Any]:
    events = events if events is not None else []
    opener = opener or Opener(events)
    runner = runner or EgressRunner(events, opener)
    sink = sink or RecordingSink()
    audit = MemoryAuditLog()
    step_ = egress or EgressStep(docker_client=object(), policy=POLICY, open_session=opener)
    outcome: RunResult | LauncherError
    try:
        outcome = run_pipeline(
            spec or make_spec(),
            settings=s or settings(),
            launcher_id="L",
            worker_version="0.1.0",
            binaries=FakeBinaries(),  # type: ignore[arg-type]
            policy=policy,
            runner=runner,
            redactor=redactor or StandInRedactor(),
            sink=sink,
            audit=audit,
            egress=step_,
        )
    except LauncherError as exc:
        outcome = exc
    return outcome, audit, sink


def egress_lines(data: bytes) -> list[str]:
    return [
        line for line in data.decode().splitlines() if line.startswith(f"{EGRESS_LOG_PREFIX}egress")
    ]


def test_session_wraps_the_container_and_decisions_reach_log_and_audit() -> None:
    events: list[str] = []
    opener = Opener(events, on_close=[decision(Outcome.ALLOW, host="allowed.test")])
    runner = EgressRunner(
        events,
        opener,
        decisions=(decision(Outcome.ALLOW, host="allowed.test"), decision()),
    )
    outcome, audit, sink = go(opener=opener, runner=runner, events=events)
    assert isinstance(outcome, RunResult)
    assert events == ["session.open", "container.create", "container.remove", "session.close"]
    assert opener.session is not None
    assert opener.session.closed == 1
    assert sink.closed == 1
    # The session got the run's policy, the launcher id and the Docker client of the step.
    ((run_id, policy, kwargs),) = opener.calls
    assert run_id == "run-p"
    assert policy.allow_hosts == POLICY.allow_hosts
    assert kwargs["launcher_id"] == "L"
    # The container: the session's network and DNS, the proxy in its environment.
    ((container),) = runner.containers
    h, env = container.host_config_args, container.create_args["environment"]
    assert h["network_mode"] == NETWORK
    assert h["dns"] == ["10.99.0.254"]
    assert h["dns_opt"] == ["timeout:1", "attempts:1"]
    assert env["HTTP_PROXY"] == env["HTTPS_PROXY"] == PROXY
    assert CANARY not in repr(dict(container.create_args))
    # The run's log: each decision on a line of its own, marked like the phase markers, after
    # the run's line it arrived in; the tunnel still open at close time is logged too (the
    # sink closes after the session).
    text = sink.data.decode()
    assert (
        "partial line continues\n::hl:: egress: allowed GET allowed.test:8080 via 198.18.0.2"
    ) in text
    lines = egress_lines(sink.data)
    assert len(lines) == 3
    assert lines[1] == (
        "::hl:: egress: refused GET denied.test:8080: egress_host_not_allowed: "
        "refused: denied.test:8080 is not allowed"
    )
    # The audit record: the decisions, then the session's totals, then the run's end.
    types = [e.type for e in audit.events]
    assert types == [
        "binaries.passed",
        "identity.skipped",
        "policy.skipped",
        "envelope.skipped",
        "run.started",
        "egress.connection",
        "egress.connection",
        "egress.connection",
        "egress.session",
        "run.finished",
    ]
    (summary,) = [e for e in audit.events if e.type == "egress.session"]
    assert summary.outcome is Outcome.INFO
    assert summary.fields == {"network": NETWORK, "allowed": 2, "denied": 1, "errors": 0}


@pytest.mark.parametrize(
    "failure",
    [ContainerRuntimeError("Docker refused"), RuntimeError("runner bug"), KeyboardInterrupt()],
)
def test_session_is_closed_after_the_container_even_when_the_runner_fails(
    failure: BaseException,
) -> None:
    events: list[str] = []
    opener = Opener(events)
    runner = EgressRunner(events, opener, decisions=(decision(),), fail=failure)  # type: ignore[arg-type]
    spec = make_spec()
    if isinstance(failure, LauncherError):
        outcome, audit, sink = go(opener=opener, runner=runner, events=events, spec=spec)
        assert outcome is failure
        assert [e.type for e in audit.events][-2:] == ["run.failed", "egress.session"]
        assert sink.closed == 1
        assert len(egress_lines(sink.data)) == 1
    else:  # go() lets anything else through
        with pytest.raises(type(failure)):
            go(opener=opener, runner=runner, events=events, spec=spec)
    assert events == ["session.open", "container.create", "container.remove", "session.close"]
    assert opener.session is not None
    assert opener.session.closed == 1
    assert spec.secret_env["TOKEN"].wiped


def test_failure_to_open_the_session_refuses_the_run_before_any_container() -> None:
    events: list[str] = []
    opener = Opener(events, fail=RuntimeError("iptables exploded"))
    outcome, audit, sink = go(opener=opener, events=events)
    assert isinstance(outcome, InfrastructureError)
    assert outcome.reason == "egress_isolation_failed"
    assert events == ["session.open"]
    assert sink.closed == 1
    (failed,) = [e for e in audit.events if e.type == "egress.failed"]
    assert failed.reason == "egress_isolation_failed"
    assert all(e.type != "run.started" for e in audit.events)


def test_a_refused_run_never_opens_a_session() -> None:
    events: list[str] = []
    outcome, _, sink = go(policy=step(_raise(ContainerRuntimeError("no"))), events=events)
    assert isinstance(outcome, LauncherError)
    assert events == []
    assert sink.closed == 1


def test_a_configured_policy_without_an_egress_step_refuses_the_run(tmp_path: Path) -> None:
    policy_file = tmp_path / "egress.yaml"
    policy_file.write_text("version: 1\nallow: []\n")
    events: list[str] = []
    runner = EgressRunner(events, Opener(events))
    audit = MemoryAuditLog()
    sink = RecordingSink()
    with pytest.raises(LauncherError) as info:
        run_pipeline(
            make_spec(),
            settings=settings(egress_policy=policy_file),
            launcher_id="L",
            worker_version="0.1.0",
            binaries=FakeBinaries(),  # type: ignore[arg-type]
            policy=None,
            runner=runner,
            redactor=StandInRedactor(),
            sink=sink,
            audit=audit,
        )
    assert info.value.reason == "egress_isolation_failed"
    assert events == []
    assert sink.closed == 1
    types = [e.type for e in audit.events]
    assert types[-2:] == ["egress.failed", "run.refused"]
    assert "run.started" not in types


def test_the_pool_policy_is_loaded_per_run_with_the_private_vcs_endpoints(tmp_path: Path) -> None:
    policy_file = tmp_path / "egress.yaml"
    policy_file.write_text("version: 1\nallow:\n  - host: allowed.test\n    ports: [8080]\n")
    s = settings(
        egress_policy=policy_file,
        privatevcs_mappings=(
            PrivateVcsMapping(name="corp", base_endpoint="https://vcs.corp.internal:8443"),
        ),
    )
    events: list[str] = []
    opener = Opener(events)
    step_ = EgressStep(docker_client=object(), open_session=opener)
    outcome, _, _ = go(s=s, egress=step_, opener=opener, events=events)
    assert isinstance(outcome, RunResult)
    ((_, policy, _),) = opener.calls
    rules = {(str(r.pattern), tuple(sorted(r.ports or ())), r.private) for r in policy.allow_hosts}
    assert rules == {("allowed.test", (8080,), False), ("vcs.corp.internal", (8443,), True)}
    # A broken file refuses the run before its container exists (start-up parses it first).
    policy_file.write_text("version: 1\nallow: nope\n")
    events.clear()
    outcome, audit, _ = go(s=s, egress=step_, opener=opener, events=events)
    assert isinstance(outcome, LauncherError)
    assert outcome.reason == "egress_policy_invalid"
    assert events == []
    types = [e.type for e in audit.events]
    assert types[-2:] == ["egress.failed", "run.refused"]
    assert "run.started" not in types


def test_without_an_egress_policy_the_run_keeps_the_worker_network() -> None:
    events: list[str] = []
    opener = Opener(events)

    class PlainRunner(EgressRunner):
        def run(self, container: ContainerSpec, instructions: bytearray, **kw: Any) -> RunResult:
            self.containers.append(container)
            kw["sink"].close()
            return RunResult(
                run_id=container.run_id,
                container_id="c1",
                exit_code=0,
                stopped_by=StopReason.EXITED,
                duration_seconds=0.1,
                output_bytes=0,
            )

    runner = PlainRunner(events, opener)
    sink = RecordingSink()
    outcome, audit, _ = go(
        s=settings(worker_network="runs"),
        egress=EgressStep(docker_client=object(), open_session=opener),
        runner=runner,
        sink=sink,
        events=events,
    )
    assert isinstance(outcome, RunResult)
    assert events == []
    ((container),) = runner.containers
    assert container.host_config_args["network_mode"] == "runs"
    assert "dns" not in container.host_config_args
    assert "HTTP_PROXY" not in container.create_args["environment"]
    assert all(not e.type.startswith("egress.") for e in audit.events)
    assert sink.closed == 1


def test_secrets_in_host_names_are_masked_in_the_log_and_the_audit(tmp_path: Path) -> None:
    """A run can name a host after a secret (DNS-style exfiltration through the log)."""
    events: list[str] = []
    opener = Opener(events)
    secret_host = f"{CANARY}.exfil.test"
    runner = EgressRunner(
        events,
        opener,
        decisions=(decision(host=secret_host), decision(host="ctl\nfake\x1b[2Jhost")),
    )
    log = tmp_path / "run.log"
    outcome, audit, _ = go(
        opener=opener, runner=runner, events=events, redactor=Redactor(), sink=FileLogSink(log)
    )
    assert isinstance(outcome, RunResult)  # the canary scan of the stored log passed
    text = log.read_text()
    assert CANARY not in text
    lines = egress_lines(text.encode())
    assert lines[0].startswith("::hl:: egress: refused GET ***.exfil.test:8080:")
    # Control characters cannot forge a line of their own or drive the terminal.
    assert "\\nfake\\x1b[2Jhost" in lines[1]
    assert "\x1b" not in text
    assert not any(line.startswith("fake") for line in text.splitlines())
    records = repr([e.to_json_dict() for e in audit.events])
    assert CANARY not in records
    assert "***.exfil.test" in records
    assert [e.type for e in audit.events][-1] == "run.log_clean"


def test_run_log_is_thread_safe_and_keeps_every_line_whole() -> None:
    sink = RecordingSink()
    run_log = EgressRunLog(sink, StandInRedactor())
    chunk = b"x" * 50 + b"\n" + b"y" * 30  # output lines cut at arbitrary places

    def proxy() -> None:
        for i in range(300):
            run_log.decision(decision(host=f"h{i}.test"))

    threads = [threading.Thread(target=proxy) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(1000):
        run_log.write("stdout", chunk)
    for t in threads:
        t.join()
    run_log.close()  # the runner's close leaves the inner sink open for late decisions
    assert sink.closed == 0
    run_log.decision(decision(Outcome.ERROR, reason="egress_dns_failed"))
    run_log.finish()
    run_log.finish()
    assert sink.closed == 1
    run_log.decision(decision())  # after the end: counted, not written
    lines = sink.data.decode().splitlines()
    egress = [line for line in lines if "egress" in line]
    assert len(egress) == 1201
    assert all(line.startswith("::hl:: egress: refused GET ") for line in egress)
    assert all(set(line) <= {"x", "y"} for line in lines if "egress" not in line)
    assert (run_log.denied, run_log.errors, run_log.unlogged) == (1201, 1, 1)


def refused_line(host: str) -> str:
    return (
        f"{EGRESS_LOG_PREFIX}egress: refused GET {host}:8080: egress_host_not_allowed: "
        f"refused: {host}:8080 is not allowed"
    )


def test_decisions_wait_for_the_end_of_the_runs_line_but_not_for_ever() -> None:
    now = [0.0]
    sink = RecordingSink()
    run_log = EgressRunLog(sink, StandInRedactor(), max_defer_seconds=2.0, clock=lambda: now[0])
    run_log.write("stdout", b"half a li")
    run_log.decision(decision(host="a.test"))
    assert sink.data == b"half a li"  # waits for the line's end
    run_log.write("stdout", b"ne\nnext")
    assert sink.data.decode().splitlines() == ["half a line", refused_line("a.test"), "next"]
    # A line that never ends does not hold decisions back longer than the bound.
    run_log.decision(decision(host="b.test"))
    now[0] = 2.5
    run_log.write("stdout", b" still going")
    assert sink.data.decode().splitlines()[-3:] == [
        "next",
        refused_line("b.test"),
        " still going",
    ]
    # Once the output is complete, decisions are written at once, on a line of their own.
    run_log.close()
    run_log.decision(decision(host="c.test"))
    assert sink.data.decode().endswith(f" still going\n{refused_line('c.test')}\n")
    run_log.finish()
    assert sink.closed == 1


def test_network_plan_refuses_an_override_it_does_not_know() -> None:
    session = FakeSession([], on_decision=None, audit=None, on_close=[])
    assert network_plan(session).network_mode == NETWORK
    session.host_config_overrides = lambda: {"network_mode": NETWORK, "cap_add": ["ALL"]}  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="cap_add"):
        network_plan(session)
