"""The demo's four stories, each checked against what really happened.

Shared by ``hardened-launcher demo`` and ``tests/e2e``: every story submits through the
documented commands, waits for the control plane's record of the run, and checks the evidence
(the log read back from object storage, Docker's events, the refusal reason). A story returns a
:class:`StoryResult`; ``passed`` is False with a message saying what was expected and seen.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from hardened_launcher.audit.reader import (
    AuditFormatError,
    list_segments,
    parse_record,
    read_segment,
    split_lines,
)
from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.demo.environment import DemoEnvironmentError, Environment
from hardened_launcher.redaction import MASK as MASK_BYTES

MASK: Final = MASK_BYTES.decode()

#: The mission's order, as the launchers' audit logs must show it for a run that executed.
GATE_TRAIL: Final = (
    "binaries.passed",
    "identity.passed",
    "policy",
    "envelope.opened",
    "run.started",
)

#: The demo launchers' run timeout (the timeout story's run sleeps far longer).
DEMO_RUN_TIMEOUT: Final = "15s"


class Narrator(Protocol):
    def say(self, text: str) -> None: ...


@dataclass(kw_only=True)
class StoryResult:
    name: str
    passed: bool
    run_id: str = "-"
    state: str = "-"
    reason: str = "-"
    seconds: float = 0.0
    evidence: list[str] = field(default_factory=list)
    problem: str = ""


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _result(name: str, run_id: str, env: Environment, started: float) -> StoryResult:
    run = env.run(run_id)
    return StoryResult(
        name=name,
        passed=True,
        run_id=run_id,
        state=run.state.value,
        reason=run.reason or "-",
        seconds=time.monotonic() - started,
    )


def audit_trail(env: Environment, run_id: str) -> list[str]:
    """The record types the launchers' audit logs hold for ``run_id``, in log order."""
    types: list[str] = []
    for launcher in env.workers:
        directory = launcher.audit_dir
        if not directory.is_dir():
            continue
        for _, segment in list_segments(directory):
            for number, raw in enumerate(split_lines(read_segment(directory, segment)), 1):
                try:
                    record = parse_record(raw, segment=segment, line=number)
                except AuditFormatError:  # a line still being written
                    continue
                if record.data.get("run_id") == run_id:
                    types.append(str(record.data.get("type")))
    return types


def _in_mission_order(trail: list[str]) -> bool:
    positions = []
    for step in GATE_TRAIL:
        found = [i for i, t in enumerate(trail) if t == step or t.startswith(step + ".")]
        if not found:
            return False
        positions.append(found[0])
    return positions == sorted(positions)


def _fail(result: StoryResult, problem: str) -> StoryResult:
    result.passed = False
    result.problem = problem
    return result


def masked_secret(env: Environment, say: Narrator) -> StoryResult:
    """A run prints a secret raw and base64-encoded; the stored log shows it masked."""
    name = "masked secret"
    started = time.monotonic()
    secret = "demo-" + secrets.token_hex(12)
    encoded = base64.b64encode(secret.encode()).decode()
    run_id = new_run_id("secret")
    spec = env.spec(
        run_id,
        [
            'echo "the token is $DEMO_TOKEN"',
            'echo "base64: $(printf %s "$DEMO_TOKEN" | base64)"',
            "echo done",
        ],
        secret_env={"DEMO_TOKEN": secret},
    )
    say.say(f"submitting {run_id}: it prints the secret DEMO_TOKEN raw and base64-encoded")
    env.submit(spec)
    run = env.wait_for_run(run_id)
    result = _result(name, run_id, env, started)
    say.say(f"{run_id} ended {run.state.value}; reading its log back from object storage")
    chunks, log = env.logs(run_id)
    text = log.decode(errors="replace")
    result.evidence.append(f"{len(chunks)} log chunk(s), {len(log)} bytes")
    for line in text.splitlines():
        if "token is" in line or "base64:" in line:
            say.say(f"  log: {line}")
    if run.state is not RunState.FINISHED:
        return _fail(result, f"expected FINISHED, got {run.state.value} ({run.reason})")
    if not chunks:
        return _fail(
            result,
            "the run finished but object storage holds no log chunk for it (blocked on: the "
            "launcher's log shipping to S3 through the presigned URLs)",
        )
    if secret in text or encoded in text or encoded.rstrip("=") in text:
        return _fail(result, "the secret (raw or base64) is in the stored log")
    if text.count(MASK) < 2 or "the token is" not in text:
        return _fail(result, f"expected both lines with the secret replaced by {MASK!r}")
    result.evidence.append(f"raw and base64 forms replaced by {MASK!r}")
    trail = audit_trail(env, run_id)
    say.say(f"audit trail of {run_id}: {' → '.join(t for t in trail if t != 'binary.verified')}")
    if not _in_mission_order(trail):
        return _fail(result, f"the audit log does not show {' → '.join(GATE_TRAIL)}: {trail}")
    result.evidence.append("audit: binaries → identity → policy → envelope → execute")
    return result


def policy_denied(env: Environment, say: Narrator) -> StoryResult:
    """A run on stack prod-db is denied by the sample policy; no container is ever created."""
    name = "denied by policy"
    started = time.monotonic()
    since = time.time() - 1
    run_id = new_run_id("denied")
    spec = env.spec(run_id, ["echo this must never run"], metadata={"stack_slug": "prod-db"})
    say.say(f"submitting {run_id} for stack prod-db, which the sample policy forbids")
    env.submit(spec)
    run = env.wait_for_run(run_id)
    result = _result(name, run_id, env, started)
    events = env.container_events(run_id, since=since)
    say.say(f"{run_id} ended {run.state.value} ({run.reason}): {run.message or '-'}")
    say.say(f"Docker events for containers of {run_id}: {events or 'none'}")
    result.evidence.append(f"docker events: {events or 'none'}")
    if run.state is not RunState.REFUSED or run.reason != "policy_denied":
        return _fail(result, f"expected REFUSED policy_denied, got {run.state.value} {run.reason}")
    if events:
        return _fail(result, f"a container was created for the denied run: {events}")
    trail = audit_trail(env, run_id)
    say.say(f"audit trail of {run_id}: {' → '.join(trail)}")
    if "envelope.opened" in trail or "run.started" in trail or "run.refused" not in trail:
        return _fail(result, f"the denied run's state was decrypted or not refused: {trail}")
    result.evidence.append("audit: refused at the policy, never decrypted")
    return result


def tampered_envelope(env: Environment, say: Narrator) -> StoryResult:
    """A sealed envelope with one byte flipped in the store is refused by the launcher."""
    name = "tampered envelope"
    started = time.monotonic()
    since = time.time() - 1
    run_id = new_run_id("tampered")
    spec = env.spec(run_id, ["echo this must never run"])
    say.say(f"submitting {run_id}, flipping one byte of its sealed envelope in the store")
    env.submit_tampered(spec)
    run = env.wait_for_run(run_id)
    result = _result(name, run_id, env, started)
    events = env.container_events(run_id, since=since)
    say.say(f"{run_id} ended {run.state.value} ({run.reason}): {run.message or '-'}")
    result.evidence.append(f"docker events: {events or 'none'}")
    if run.state is not RunState.REFUSED or not run.reason.startswith("envelope"):
        return _fail(
            result, f"expected REFUSED envelope_rejected, got {run.state.value} {run.reason}"
        )
    if events:
        return _fail(result, f"a container was created for the tampered run: {events}")
    trail = audit_trail(env, run_id)
    if "envelope.rejected" not in trail:
        return _fail(result, f"the envelope's refusal does not name its run: {trail}")
    result.evidence.append("audit: envelope.rejected names the run")
    return result


def timed_out(env: Environment, say: Narrator) -> StoryResult:
    """A run that sleeps past the launcher's run timeout is stopped."""
    name = "stopped by timeout"
    started = time.monotonic()
    run_id = new_run_id("timeout")
    spec = env.spec(run_id, ["echo sleeping for 10 minutes", "sleep 600"])
    say.say(f"submitting {run_id}: it sleeps 10 minutes; the run timeout is {env.run_timeout}")
    env.submit(spec)
    run = env.wait_for_run(run_id, timeout_seconds=180)
    result = _result(name, run_id, env, started)
    say.say(f"{run_id} ended {run.state.value} ({run.reason}) after {result.seconds:.0f} s")
    leftovers = env.containers_of(run_id)
    result.evidence.append(f"containers left: {len(leftovers)}")
    if run.state not in (RunState.STOPPED, RunState.FAILED) or run.reason != "run_timeout":
        return _fail(result, f"expected STOPPED run_timeout, got {run.state.value} {run.reason}")
    if leftovers:
        return _fail(result, f"the container is still there: {leftovers}")
    if result.seconds > 170:
        return _fail(result, "the run was not stopped near its timeout")
    return result


STORIES: Final[tuple[tuple[str, Callable[[Environment, Narrator], StoryResult]], ...]] = (
    ("A run prints a masked secret, raw and base64", masked_secret),
    ("A run denied by the sample policy", policy_denied),
    ("A tampered envelope", tampered_envelope),
    ("A run stopped by its timeout", timed_out),
)


def run_story(
    story: Callable[[Environment, Narrator], StoryResult], env: Environment, say: Narrator
) -> StoryResult:
    """Run one story; an environment failure becomes a failed result naming the missing piece."""
    started = time.monotonic()
    try:
        return story(env, say)
    except DemoEnvironmentError as exc:
        name = (story.__doc__ or story.__name__).split(".")[0]
        return StoryResult(
            name=name, passed=False, seconds=time.monotonic() - started, problem=str(exc)
        )
