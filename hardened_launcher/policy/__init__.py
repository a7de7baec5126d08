"""Gate 3: the run initialization policy (embedded Rego engine, input document, test runner).

See ``docs/policy.md``. The pipeline uses :func:`check_policy_path` at start-up,
:func:`build_input` and :meth:`PolicyGate.check` per run.
"""

from hardened_launcher.policy.engine import CompiledPolicy
from hardened_launcher.policy.errors import (
    PolicyCompileError,
    PolicyDeniedError,
    PolicyEngineCrashError,
    PolicyEvaluationError,
    PolicyInputError,
    PolicyTimeoutError,
    PolicyUndefinedDenyError,
)
from hardened_launcher.policy.gate import (
    DEFAULT_TIMEOUT_S,
    PolicyDecision,
    PolicyGate,
    PolicyResult,
    check_policy_path,
)
from hardened_launcher.policy.input import LauncherFacts, build_input, encode_input
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.source import Syntax

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CompiledPolicy",
    "LauncherFacts",
    "PolicyCompileError",
    "PolicyDecision",
    "PolicyDeniedError",
    "PolicyEngineCrashError",
    "PolicyEvaluationError",
    "PolicyGate",
    "PolicyInputError",
    "PolicyResult",
    "PolicyTimeoutError",
    "PolicyUndefinedDenyError",
    "Sanitizer",
    "Syntax",
    "build_input",
    "check_policy_path",
    "encode_input",
]
