"""The launcher's Prometheus metrics, in a registry of their own (never the global one).

Labels are machine slugs (outcomes, refusal reasons) and variable *names*; a value that does not
look like one is counted under ``other`` so that nothing a run printed can become a label. No
metric ever carries a secret value, a URL or log content.
"""

from __future__ import annotations

import re
import threading
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

__all__ = ["CONTENT_TYPE", "LauncherMetrics"]

#: The classic text format, which is what ``generate_latest`` writes.
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
OTHER: Final = "other"
#: Distinct values one label may take before further ones are counted as ``other``.
MAX_LABEL_VALUES: Final = 256

_SLUG_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_VARIABLE_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

RUN_DURATION_BUCKETS: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
POLICY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _LabelGuard:
    """Keeps a label's cardinality bounded and its values to one shape."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self._pattern = pattern
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if not isinstance(value, str) or self._pattern.fullmatch(value) is None:
            return OTHER
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= MAX_LABEL_VALUES:
                return OTHER
            self._seen.add(value)
            return value


class LauncherMetrics:
    """Every metric the launcher exports; pass one instance to the daemon, log sinks and server."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self._outcome = _LabelGuard(_SLUG_RE)
        self._reason = _LabelGuard(_SLUG_RE)
        self._variable = _LabelGuard(_VARIABLE_RE)
        self.runs = Counter("hl_runs", "Runs that ended, by outcome.", ["outcome"], registry=r)
        self.refusals = Counter(
            "hl_run_refusals", "Runs refused by a gate, by machine reason.", ["reason"], registry=r
        )
        self.run_duration = Histogram(
            "hl_run_duration_seconds",
            "Wall-clock duration of executed runs.",
            buckets=RUN_DURATION_BUCKETS,
            registry=r,
        )
        self.policy_evaluation = Histogram(
            "hl_policy_evaluation_seconds",
            "Time to evaluate the run initialization policy.",
            buckets=POLICY_BUCKETS,
            registry=r,
        )
        self.redactions = Counter(
            "hl_redactions",
            "Secret occurrences masked in run output, by variable name (never the value).",
            ["variable"],
            registry=r,
        )
        self.broker_reconnects = Counter(
            "hl_broker_reconnects", "Reconnections to the MQTT broker.", registry=r
        )
        self.log_spooled_bytes = Gauge(
            "hl_log_spooled_bytes",
            "Bytes of sealed log chunks on disk waiting for upload.",
            registry=r,
        )
        self.log_chunks_uploaded = Counter(
            "hl_log_chunks_uploaded", "Log chunks uploaded to object storage.", registry=r
        )
        self.log_lost_bytes = Counter(
            "hl_log_bytes_lost",
            "Run log bytes that will never reach object storage (spool full, final flush failed).",
            registry=r,
        )
        self.log_spool_evictions = Counter(
            "hl_log_spool_evictions",
            "Finished runs whose spooled log chunks were dropped (HL_LOG_SPOOL_MAX_BYTES).",
            registry=r,
        )
        self.log_chunk_upload_failures = Counter(
            "hl_log_chunk_upload_failures",
            "Failed log chunk upload attempts (each is retried).",
            registry=r,
        )

    # -- runs --------------------------------------------------------------------------------

    def run_finished(self, outcome: str, duration_seconds: float | None = None) -> None:
        """A run ended (``finished``, ``failed``, ``stopped``, ``timed_out``…)."""
        self.runs.labels(outcome=self._outcome(outcome)).inc()
        if duration_seconds is not None and duration_seconds >= 0:
            self.run_duration.observe(duration_seconds)

    def run_refused(self, reason: str) -> None:
        """A gate refused a run with a machine reason (``policy_denied``…)."""
        self.refusals.labels(reason=self._reason(reason)).inc()
        self.runs.labels(outcome="refused").inc()

    def policy_evaluated(self, seconds: float) -> None:
        if seconds >= 0:
            self.policy_evaluation.observe(seconds)

    def redacted(self, variable: str, count: int = 1) -> None:
        """``count`` occurrences of ``variable``'s value were masked. Pass the name only."""
        if count > 0:
            self.redactions.labels(variable=self._variable(variable)).inc(count)

    def broker_reconnected(self) -> None:
        self.broker_reconnects.inc()

    # -- log shipping (called by ChunkedLogSink) ---------------------------------------------

    def chunk_spooled(self, size: int) -> None:
        self.log_spooled_bytes.inc(size)

    def chunk_unspooled(self, size: int) -> None:
        self.log_spooled_bytes.dec(size)

    def log_bytes_lost(self, size: int) -> None:
        self.log_lost_bytes.inc(size)

    def spool_evicted(self) -> None:
        self.log_spool_evictions.inc()

    def chunk_uploaded(self) -> None:
        self.log_chunks_uploaded.inc()

    def chunk_upload_failed(self) -> None:
        self.log_chunk_upload_failures.inc()

    # -- exposition --------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
