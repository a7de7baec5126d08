"""``audit show --run ID``: the story of one run, gate by gate, from the verified log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.audit.export import Selection, iter_selected
from hardened_launcher.audit.reader import AuditRecord
from hardened_launcher.errors import UsageError
from hardened_launcher.terminal import for_terminal

MAX_DETAIL_CHARS: Final = 60
COLUMNS: Final = ("seq", "time", "gate", "event", "outcome", "reason", "details")


def run_records(
    directory: Path, public_key: ed25519.Ed25519PublicKey, run_id: str
) -> list[AuditRecord]:
    """The verified records of ``run_id`` in log order; :class:`UsageError` if there are none."""
    records, _ = iter_selected(directory, public_key, Selection(run_id=run_id))
    if not records:
        raise UsageError(
            f"no audit records for run {run_id!r}",
            hint="check the run id, or the audit directory (PATH)",
            reason="audit_run_not_found",
        )
    return records


def _details(record: AuditRecord) -> str:
    parts = []
    for key, value in sorted(record.fields.items()):
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key}={text}")
    joined = " ".join(parts)
    return joined if len(joined) <= MAX_DETAIL_CHARS else joined[: MAX_DETAIL_CHARS - 1] + "…"


def _clean(text: str) -> str:
    # Records are verified, but their text came partly from outside: no terminal control codes.
    return for_terminal(text)


def render_table(records: list[AuditRecord]) -> str:
    raw = [
        (
            str(r.seq),
            r.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            r.gate or "-",
            r.type,
            r.outcome,
            r.reason or "-",
            _details(r),
        )
        for r in records
    ]
    rows = [tuple(_clean(cell) for cell in row) for row in raw]
    widths = [max(len(col), *(len(row[i]) for row in rows)) for i, col in enumerate(COLUMNS)]
    lines = ["  ".join(col.upper().ljust(widths[i]) for i, col in enumerate(COLUMNS)).rstrip()]
    lines += [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    return "\n".join(lines) + "\n"


def render_json(records: list[AuditRecord]) -> str:
    return json.dumps([dict(r.data) for r in records], sort_keys=True, indent=2) + "\n"
