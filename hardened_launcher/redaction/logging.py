"""Redaction of the launcher's own log records and exception text.

Two layers, both backed by the run's (or the daemon's) :class:`Redactor`:

* :class:`RedactingFilter` rewrites each record before any handler formats it: the message with
  its arguments merged, string-valued structured fields (``extra=``), the exception text and the
  stack text. Attach it to **handlers** (``install``), not loggers: a logger's filters do not see
  records propagated from child loggers.
* :class:`RedactingFormatter` wraps any formatter and redacts its final output, catching what a
  formatter adds (for example a ``%(threadName)s`` a run could influence).

Both are needed because records can carry values in places the filter does not know about, and
a formatter alone would not cover handlers that do their own formatting.
"""

from __future__ import annotations

import logging

from hardened_launcher.redaction.redactor import Redactor

# Attributes every LogRecord has; anything else came from ``extra=`` and is redacted too.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Rewrites records in place so that no handler can see a masked value. Never drops one."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        red = self.redactor
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001  # a bad format string must not take the log down
            message = f"{record.msg!s} (unformattable arguments)"
        record.msg = red.redact_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = red.redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = red.redact_text(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, red.redact_text(value))
        return True


class RedactingFormatter(logging.Formatter):
    """Formats with ``inner`` and redacts the result."""

    def __init__(self, redactor: Redactor, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.redactor = redactor
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.redact_text(self.inner.format(record))


def install(redactor: Redactor, logger: logging.Logger | None = None) -> None:
    """Add the filter and wrap the formatter of every handler of ``logger`` (default: root)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(redactor))
        if not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(redactor, handler.formatter))


def installed_redactor(logger: logging.Logger | None = None) -> Redactor | None:
    """The redactor :func:`install` attached to a handler of ``logger`` (default: root)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        for item in handler.filters:
            if isinstance(item, RedactingFilter):
                return item.redactor
    return None
