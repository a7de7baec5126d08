"""Streaming multi-pattern secret redaction for every output channel of a run.

Public API::

    from hardened_launcher.redaction import Redactor, RedactingStream, MASK

See docs/redaction.md for the variants masked, the minimum length and the engines.
"""

from __future__ import annotations

from hardened_launcher.redaction.redactor import Redactor
from hardened_launcher.redaction.stream import MASK, RedactingStream
from hardened_launcher.redaction.variants import MIN_VALUE_BYTES

__all__ = ["MASK", "MIN_VALUE_BYTES", "RedactingStream", "Redactor"]
