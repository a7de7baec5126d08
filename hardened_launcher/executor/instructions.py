"""What the launcher writes to the run container's stdin (pure encoding, no I/O).

The wire format is read by ``entrypoint/hl-worker.sh`` (documented there and in
``docs/executor.md``): one record per line, every value base64-encoded, so the worker never
evaluates anything but the run's own commands. The encoding goes into a ``bytearray`` that
the caller wipes once it is written.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Final

from hardened_launcher.executor.runspec import RunSpec
from hardened_launcher.executor.source import ArchiveSource, GitSource, clean_tar
from hardened_launcher.secrets import Secret, wipe_bytearray

__all__ = ["HEADER", "encode_instructions"]

HEADER: Final = b"HLRUN 1\n"
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _b64(data: bytes | bytearray | memoryview) -> bytes:
    return base64.b64encode(data)


def _secret_b64(value: Secret) -> bytearray:
    with value.view() as view:
        return bytearray(base64.b64encode(view))


def _source_records(spec: RunSpec, source_url: str | None) -> bytearray:
    out = bytearray()
    source = spec.source
    if isinstance(source, GitSource):
        if source_url is None:
            raise ValueError("a git source needs its resolved URL")
        if source.auth is not None and source.auth.basic is not None:
            # HTTP basic credentials for the fetch only (git gets them as an extra header
            # through its environment, never on a command line or in .git/config).
            header = bytearray(b"Authorization: Basic ")
            with source.auth.basic.view() as view:
                header += view
            out += b"H " + _b64(header) + b"\n"
            wipe_bytearray(header)
        out += b"S " + _b64(source_url.encode()) + b" " + _b64(source.ref.encode())
        out += b" " + source.commit_sha.encode() + b"\n"
    elif isinstance(source, ArchiveSource):
        # The only record that is not one line: its size, then exactly that many raw bytes,
        # which the worker copies to tar with dd (no line reading, no base64).
        tar = clean_tar(source.entries)
        out += b"A " + str(len(tar)).encode() + b"\n" + tar
    return out


def encode_instructions(
    spec: RunSpec,
    *,
    extra_env: Mapping[str, Secret] | None = None,
    source_url: str | None = None,
    plan: Secret | None = None,
) -> bytearray:
    """The whole instruction stream for ``spec``.

    ``extra_env`` holds the launcher's whitelisted variables (``SPACELIFT_WHITELIST_ENVS``),
    delivered like the run's own env; the run's own value wins on a name clash only for names
    the run declared (the launcher's are written first). ``source_url`` is where a git source
    is fetched from (its ``private://`` URL already resolved). The source comes first, before
    any variable is set; the spec's files come after it and may replace its files. ``plan``
    (an applying run) is the checked plan artifact: announced by ``L <size>``, its raw bytes
    follow ``GO``, and the worker writes them to ``$HL_PLAN_FILE`` before the first phase.
    """
    out = bytearray(HEADER)
    out += _source_records(spec, source_url)
    for name, value in (extra_env or {}).items():
        if not _NAME_RE.fullmatch(name):
            raise ValueError("a whitelisted variable name is not a shell name")
        encoded = _secret_b64(value)
        out += b"E " + name.encode() + b" " + encoded + b"\n"
        wipe_bytearray(encoded)
    for name, text in spec.env.items():
        out += b"E " + name.encode() + b" " + _b64(text.encode("utf-8")) + b"\n"
    for name, secret in spec.secret_env.items():
        encoded = _secret_b64(secret)
        out += b"E " + name.encode() + b" " + encoded + b"\n"
        wipe_bytearray(encoded)
    for item in spec.files:
        if isinstance(item.content, Secret):
            content = _secret_b64(item.content)
        else:
            content = bytearray(_b64(item.content))
        out += b"F " + _b64(item.path.encode("utf-8")) + b" " + f"{item.mode:o}".encode()
        out += b" " + content + b"\n"
        wipe_bytearray(content)
    if plan is not None:
        out += b"L " + str(len(plan)).encode() + b"\n"
    for phase in spec.phases:
        out += b"P " + phase.name.encode() + b"\n"
        for command in phase.commands:
            out += b"C " + _b64(command.encode("utf-8")) + b"\n"
    out += b"GO\n"
    if plan is not None:
        # Raw, after GO: the worker reads it with one `head -c` (a shell `read` is per byte).
        with plan.view() as view:
            out += view
    return out
