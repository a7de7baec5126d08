"""Gate 3 (policy): run metadata → :class:`PolicyDecision`, or the run stops.

Start-up: :func:`check_policy_path` loads and compiles the policy (file or directory) and returns
a :class:`~hardened_launcher.policy.engine.CompiledPolicy`, or raises
:class:`~hardened_launcher.policy.errors.PolicyCompileError` (``file:line:col: message``).
:meth:`PolicyGate.start` then starts the engine worker.

Per run: :meth:`PolicyGate.check` evaluates the (already sanitized) input document and returns a
:class:`PolicyDecision` proof when ``deny`` is empty; otherwise it raises
:class:`~hardened_launcher.policy.errors.PolicyDeniedError` with every deny message. Evaluation
errors, an undefined ``deny``, timeouts and engine panics raise their own errors: fail closed.
Every outcome is written to the audit sink with the SHA-256 of the policy sources.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Self

from hardened_launcher.audit import AuditEvent, AuditSink, Outcome
from hardened_launcher.errors import LauncherError
from hardened_launcher.policy.engine import CompiledPolicy, compile_policy
from hardened_launcher.policy.errors import PolicyDeniedError
from hardened_launcher.policy.input import JSONValue, encode_input
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.source import Syntax, load_policy_path
from hardened_launcher.policy.worker import (
    InlineBackend,
    PolicyBackend,
    SubprocessBackend,
    probe_isolated,
)

log = logging.getLogger(__name__)

GATE = "policy"
DEFAULT_TIMEOUT_S = 1.0


def check_policy_path(
    path: Path,
    *,
    syntax: Syntax = Syntax.AUTO,
    sanitizer: Sanitizer | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    probe: bool = True,
) -> CompiledPolicy:
    """Load and compile the policy at ``path`` (a ``.rego`` file or a directory); for start-up
    and ``doctor``. ``_test.rego`` files are left out. Raises ``PolicyCompileError``.

    The probe with an empty input (which can run any policy code) runs in a worker process
    under ``timeout_s`` and the worker's memory limit; ``probe=False`` leaves it to the
    :class:`PolicyGate` the caller starts next (its worker probes before the first run).
    """
    bundle = load_policy_path(path, include_tests=False)
    chosen = sanitizer or Sanitizer.random()
    _, compiled = compile_policy(bundle, sanitizer=chosen, syntax=syntax, probe=False)
    if probe:
        probe_isolated(compiled, sanitizer=chosen, timeout_s=timeout_s)
    return compiled


@dataclass(frozen=True, kw_only=True)
class PolicyResult:
    """One evaluation, allow or deny (``policy eval`` prints this)."""

    deny: tuple[str, ...]
    sample: bool
    policy_sha256: str
    input_sha256: str
    duration_ns: int

    @property
    def allowed(self) -> bool:
        return not self.deny

    def to_json_dict(self) -> dict[str, object]:
        return {
            "decision": "allow" if self.allowed else "deny",
            "deny": list(self.deny),
            "sample": self.sample,
            "policy_sha256": self.policy_sha256,
            "input_sha256": self.input_sha256,
            "duration_us": round(self.duration_ns / 1000, 1),
        }


@dataclass(frozen=True, kw_only=True)
class PolicyDecision:
    """Proof that the run initialization policy allowed this run."""

    run_id: str | None
    policy_sha256: str
    input_sha256: str
    sample: bool
    duration_ns: int
    # The sanitized input, kept only when the policy marked the evaluation with ``sample``.
    sampled_input: Mapping[str, JSONValue] | None = None

    def __post_init__(self) -> None:
        if len(self.policy_sha256) != 64 or len(self.input_sha256) != 64:
            raise ValueError("PolicyDecision digests must be SHA-256 hex")
        if self.sampled_input is not None:
            object.__setattr__(self, "sampled_input", MappingProxyType(dict(self.sampled_input)))


class PolicyGate:
    """Evaluates one compiled policy; thread-safe (evaluations are serialised per gate)."""

    def __init__(
        self,
        compiled: CompiledPolicy,
        *,
        backend: PolicyBackend,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        audit: AuditSink | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("the policy timeout must be positive")
        self.compiled = compiled
        self._backend = backend
        self._timeout_s = timeout_s
        self._audit = audit

    @classmethod
    def start(
        cls,
        compiled: CompiledPolicy,
        *,
        sanitizer: Sanitizer,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        audit: AuditSink | None = None,
        isolated: bool = True,
    ) -> Self:
        """A gate whose engine runs in a worker process (``isolated``) or in this thread."""
        backend: PolicyBackend
        if isolated:
            subprocess_backend = SubprocessBackend(
                compiled, sanitizer=sanitizer, probe_timeout_s=timeout_s
            )
            subprocess_backend.start()
            backend = subprocess_backend
        else:
            backend = InlineBackend(compiled, sanitizer=sanitizer)
        return cls(compiled, backend=backend, timeout_s=timeout_s, audit=audit)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def evaluate(
        self, document: Mapping[str, JSONValue], *, run_id: str | None = None
    ) -> PolicyResult:
        """Evaluate and audit; deny is a result here. Failures raise (and are audited)."""
        text = encode_input(document)
        input_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        fields: dict[str, str | int | bool | tuple[str, ...]] = {
            "policy_sha256": self.compiled.sha256,
            "input_sha256": input_sha256,
        }
        try:
            raw = self._backend.evaluate(text, timeout_s=self._timeout_s)
        except LauncherError as exc:
            self._record("policy.failed", Outcome.ERROR, run_id, exc.reason, fields)
            log.warning("policy.failed", extra={"reason": exc.reason, "run_id": run_id})
            raise
        result = PolicyResult(
            deny=raw.deny,
            sample=raw.sample,
            policy_sha256=self.compiled.sha256,
            input_sha256=input_sha256,
            duration_ns=raw.duration_ns,
        )
        fields.update(
            {"deny": raw.deny, "sample": raw.sample, "duration_us": raw.duration_ns // 1000}
        )
        if result.allowed:
            self._record("policy.allowed", Outcome.ALLOW, run_id, None, fields)
        else:
            self._record("policy.denied", Outcome.DENY, run_id, "policy_denied", fields)
        if raw.sample:
            sample_fields = dict(fields)
            if len(text) <= 4096:
                sample_fields["input_json"] = text
            self._record("policy.sampled", Outcome.INFO, run_id, None, sample_fields)
        return result

    def check(
        self, document: Mapping[str, JSONValue], *, run_id: str | None = None
    ) -> PolicyDecision:
        """The gate: a :class:`PolicyDecision` for allow; :class:`PolicyDeniedError` for deny."""
        result = self.evaluate(document, run_id=run_id)
        if not result.allowed:
            raise PolicyDeniedError(
                result.deny,
                policy_sha256=result.policy_sha256,
                sample=result.sample,
                duration_ns=result.duration_ns,
            )
        return PolicyDecision(
            run_id=run_id,
            policy_sha256=result.policy_sha256,
            input_sha256=result.input_sha256,
            sample=result.sample,
            duration_ns=result.duration_ns,
            sampled_input=document if result.sample else None,
        )

    def _record(
        self,
        event_type: str,
        outcome: Outcome,
        run_id: str | None,
        reason: str | None,
        fields: Mapping[str, str | int | bool | tuple[str, ...]],
    ) -> None:
        if self._audit is None:
            return
        self._audit.record(
            AuditEvent(
                type=event_type,
                outcome=outcome,
                gate=GATE,
                run_id=run_id,
                reason=reason,
                fields=dict(fields),
            )
        )
