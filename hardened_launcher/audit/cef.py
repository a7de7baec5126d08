"""CEF (ArcSight Common Event Format, version 0) rendering of audit records.

``CEF:0|hardened-launcher|hardened-launcher|<version>|<type>|<type> <outcome>|<severity>|<ext>``

Header escaping: ``\\`` → ``\\\\`` and ``|`` → ``\\|``; a CR or LF (never expected in a header
field) becomes a space. Extension escaping: ``\\`` → ``\\\\``, ``=`` → ``\\=``, LF → ``\\n``,
CR → ``\\r`` (``|`` is not escaped in extensions). Severity: allow/info 1, deny 6, error 8.

Extensions, in this order when present: ``rt`` (milliseconds since the epoch), ``externalId``
(seq), ``cat`` (gate), ``act`` (outcome), ``outcome``, ``reason``, ``cs1Label=runId``/``cs1``,
``cs2Label=recordHash``/``cs2``, ``cs3Label=fields``/``cs3`` (the fields in canonical JSON).
Checkpoint records are not exported as CEF events.
"""

from __future__ import annotations

from typing import Final

from hardened_launcher import __version__
from hardened_launcher.audit.canonical import canonical_json
from hardened_launcher.audit.reader import AuditRecord

VENDOR: Final = "hardened-launcher"
SEVERITY: Final = {"allow": 1, "info": 1, "deny": 6, "error": 8}


def escape_header(value: str) -> str:
    text = value.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r", " ").replace("\n", " ")


def escape_extension(value: str) -> str:
    text = value.replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def to_cef(record: AuditRecord) -> str:
    """One CEF line (without the newline) for ``record``."""
    header = [
        "CEF:0",
        escape_header(VENDOR),
        escape_header(VENDOR),
        escape_header(__version__),
        escape_header(record.type),
        escape_header(f"{record.type} {record.outcome}"),
        str(SEVERITY.get(record.outcome, 1)),
    ]
    ext: list[tuple[str, str]] = [
        ("rt", str(int(record.time.timestamp() * 1000))),
        ("externalId", str(record.seq)),
    ]
    if record.gate is not None:
        ext.append(("cat", record.gate))
    ext += [("act", record.outcome), ("outcome", record.outcome)]
    if record.reason is not None:
        ext.append(("reason", record.reason))
    if record.run_id is not None:
        ext += [("cs1Label", "runId"), ("cs1", record.run_id)]
    ext += [("cs2Label", "recordHash"), ("cs2", record.hash)]
    if record.fields:
        ext += [("cs3Label", "fields"), ("cs3", canonical_json(dict(record.fields)).decode())]
    extension = " ".join(f"{key}={escape_extension(value)}" for key, value in ext)
    return "|".join(header) + "|" + extension
