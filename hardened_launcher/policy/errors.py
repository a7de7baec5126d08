"""The policy gate's failures, each with a stable reason slug.

Whose fault each one is decides its class:

========================  ====================  ==========================================
class                     base                  reason
========================  ====================  ==========================================
PolicyCompileError        ConfigurationError    ``policy_compile_error`` (and
                                                ``policy_syntax_unknown``,
                                                ``policy_no_deny_rule``,
                                                ``policy_files_missing``,
                                                ``policy_data_invalid``)
PolicyEvaluationError     ConfigurationError    ``policy_evaluation_error``
PolicyUndefinedDenyError  PolicyEvaluationError ``policy_undefined_deny`` (and
                                                ``policy_deny_malformed``)
PolicyTimeoutError        PolicyEvaluationError ``policy_timeout``
PolicyEngineCrashError    InfrastructureError   ``policy_engine_panic`` / ``policy_engine_crashed``
PolicyInputError          UntrustedInputError   ``policy_input_invalid``
PolicyDeniedError         UntrustedInputError   ``policy_denied``
========================  ====================  ==========================================

A deny is not a malfunction: :class:`PolicyDeniedError` carries every deny message. Every other
class here also stops the run (fail closed). Messages carry ``file:line:col`` and the engine's
one-line message at most, never a Rust backtrace or an input value.
"""

from __future__ import annotations

from hardened_launcher.errors import (
    ConfigurationError,
    InfrastructureError,
    LauncherError,
    UntrustedInputError,
)


class PolicyCompileError(ConfigurationError):
    """The policy files do not load or compile."""

    default_reason = "policy_compile_error"


class PolicyEvaluationError(ConfigurationError):
    """Evaluation failed (runtime error in the policy): the run is denied."""

    default_reason = "policy_evaluation_error"


class PolicyUndefinedDenyError(PolicyEvaluationError):
    """``deny`` was undefined or not a set of strings: a broken policy denies."""

    default_reason = "policy_undefined_deny"


class PolicyTimeoutError(PolicyEvaluationError):
    """Evaluation took longer than the limit: the run is denied and the engine replaced."""

    default_reason = "policy_timeout"


class PolicyEngineCrashError(InfrastructureError):
    """The engine panicked or its worker process died: the run is denied."""

    default_reason = "policy_engine_panic"


class PolicyInputError(UntrustedInputError):
    """The run metadata cannot be turned into a policy input document."""

    default_reason = "policy_input_invalid"


class PolicyDeniedError(UntrustedInputError):
    """The policy denied the run; ``messages`` holds every deny message, sorted."""

    default_reason = "policy_denied"

    def __init__(
        self,
        messages: tuple[str, ...],
        *,
        policy_sha256: str,
        sample: bool = False,
        duration_ns: int = 0,
    ) -> None:
        shown = "; ".join(messages[:5]) + ("; …" if len(messages) > 5 else "")
        super().__init__(
            f"the run initialization policy denied the run: {shown}",
            hint="the deny messages say which rule refused it; change the run or the policy",
            reason="policy_denied",
            detail=f"policy sha256 {policy_sha256}",
        )
        self.messages = messages
        self.policy_sha256 = policy_sha256
        self.sample = sample
        self.duration_ns = duration_ns


# Errors that cross the worker-process boundary are rebuilt from their class name.
WIRE_ERRORS: dict[str, type[LauncherError]] = {
    cls.__name__: cls
    for cls in (
        PolicyCompileError,
        PolicyEvaluationError,
        PolicyUndefinedDenyError,
        PolicyTimeoutError,
        PolicyEngineCrashError,
        PolicyInputError,
    )
}
