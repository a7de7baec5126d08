"""The policy gate as a launcher starts it: compiled once from the settings, or refused."""

from __future__ import annotations

from hardened_launcher.policy.engine import CompiledPolicy
from hardened_launcher.policy.gate import check_policy_path
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.source import Syntax
from hardened_launcher.secrets import Secret
from hardened_launcher.settings import Settings


def sanitizer_from(settings: Settings, pool_key: Secret | None = None) -> Sanitizer:
    """The pool's sanitize key from its token (``pool_key``: the control plane sanitized the
    run's secrets under it), else ``HL_POLICY_SANITIZE_KEY``, else a random key per start."""
    if pool_key is not None:
        return Sanitizer(pool_key.reveal())
    key = settings.policy_sanitize_key
    return Sanitizer(key.reveal()) if key is not None else Sanitizer.random()


def compile_configured_policy(
    settings: Settings, sanitizer: Sanitizer, *, probe: bool = True
) -> CompiledPolicy | None:
    """Compile ``SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY``; None when none is configured.

    Raises :class:`~hardened_launcher.policy.PolicyCompileError` (a configuration error: the
    launcher exits with ``file:line:col`` and the engine's message) when it does not compile,
    or when its probe with an empty input overruns ``HL_POLICY_TIMEOUT`` or the policy worker's
    memory limit (the probe runs in a worker process, never in the launcher). ``probe=False``
    leaves the probe to the caller (:func:`~hardened_launcher.policy.worker.start_isolated`).
    """
    path = settings.launcher_run_initialization_policy
    if path is None:
        return None
    return check_policy_path(
        path,
        syntax=Syntax(settings.policy_syntax),
        sanitizer=sanitizer,
        timeout_s=settings.policy_timeout.total_seconds(),
        probe=probe,
    )
