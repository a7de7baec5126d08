"""``hardened-launcher redact``: a filter that masks values on stdin and writes stdout.

    some-tool 2>&1 | hardened-launcher redact --mask-env AWS_SECRET_ACCESS_KEY,DB_PASSWORD
    hardened-launcher redact --values-file secrets.txt < build.log > build.redacted.log

Values come from the environment variables named by ``--mask-env`` (repeatable,
comma-separated; ``SPACELIFT_MASK_ENVS`` is used when no source is given) and from
``--values-file`` (one value per line, or NUL-separated with ``-z``). Input is read as it
arrives (not line by line), and only bytes that may still become part of a masked value are held
back, so interactive output streams through. Warnings and counts name variables, never values.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from pathlib import Path
from typing import Any, BinaryIO

from hardened_launcher.bounded_input import describe_path, read_bounded
from hardened_launcher.errors import UsageError
from hardened_launcher.redaction import Redactor
from hardened_launcher.terminal import for_terminal

READ_CHUNK_BYTES = 65536
# Values to mask are secrets, not corpora: a larger file is a mistake (or /dev/zero).
MAX_VALUES_FILE_BYTES = 1024 * 1024
#: While a tail is held back, how long to wait for input before asking the stream for what
#: passed its deadline.
POLL_SECONDS = 0.05


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "redact",
        help="mask secret values (and their encodings) in stdin, write stdout",
        description="Reads stdin, masks every variant of the given values with ***, writes "
        "stdout. Values: --mask-env names and/or --values-file; with neither, the names in "
        "SPACELIFT_MASK_ENVS.",
    )
    parser.add_argument(
        "--mask-env",
        action="append",
        default=[],
        metavar="NAME,...",
        help="environment variables whose values to mask (repeatable, comma-separated)",
    )
    parser.add_argument(
        "--values-file", type=Path, metavar="FILE", help="file of values, one per line"
    )
    parser.add_argument(
        "-z", "--null", action="store_true", help="values in --values-file are NUL-separated"
    )
    parser.add_argument(
        "--counts", action="store_true", help="print masks per variable name to stderr at the end"
    )
    parser.set_defaults(handler=_redact)


def _names(args: argparse.Namespace) -> list[str]:
    raw = list(args.mask_env)
    if not raw and args.values_file is None:
        raw = [os.environ.get("SPACELIFT_MASK_ENVS", "")]
    return [n.strip() for item in raw for n in item.split(",") if n.strip()]


def build_redactor(args: argparse.Namespace) -> Redactor:
    red = Redactor()
    items: list[tuple[str, bytes]] = []
    for name in _names(args):
        value = os.environb.get(name.encode()) if os.name == "posix" else None
        if value is None and os.name != "posix":  # pragma: no cover - not POSIX
            text = os.environ.get(name)
            value = None if text is None else text.encode()
        if value is None:
            red.warnings.append(f"{name}: not set in the environment; nothing to mask")
            continue
        items.append((name, value))
    if args.values_file is not None:
        data = bytes(
            read_bounded(
                args.values_file,
                max_bytes=MAX_VALUES_FILE_BYTES,
                what="values file",
                too_large=UsageError,
            )
        )
        if args.null:
            entries = data.split(b"\0")
        else:
            entries = [line.removesuffix(b"\r") for line in data.split(b"\n")]
        for n, value in enumerate(entries, start=1):
            if value:
                items.append((f"{describe_path(args.values_file.name)}:{n}", value))
    if not items:
        unset = [w.split(":", 1)[0] for w in red.warnings]
        raise UsageError(
            "no values to mask" + (f" ({', '.join(unset)} not set)" if unset else ""),
            hint="pass --mask-env NAME (set in the environment) or --values-file FILE",
        )
    red.add_many(items)
    return red


def _redact(args: argparse.Namespace) -> int:
    red = build_redactor(args)
    for warning in red.warnings:
        sys.stderr.write(f"warning: {for_terminal(warning)}\n")
    stream = red.stream("stdout")
    out = sys.stdout.buffer
    stdin = sys.stdin.buffer
    fd = _fileno(stdin)
    while True:
        if fd is not None and stream.pending_bytes and not _readable(fd, POLL_SECONDS):
            late = stream.poll()  # a tail held only for a line break past the deadline
            if late:
                out.write(late)
                out.flush()
            continue
        # os.read returns what a pipe has now, so interactive output is not held for 64 KiB.
        chunk = os.read(fd, READ_CHUNK_BYTES) if fd is not None else stdin.read(READ_CHUNK_BYTES)
        if not chunk:
            break
        ready = stream.write(chunk)
        if ready:
            out.write(ready)
            out.flush()
    out.write(stream.flush())
    out.flush()
    if args.counts:
        for name, count in sorted(red.counts().items()):
            sys.stderr.write(f"masked {count} x {for_terminal(name)}\n")
    return 0


def _readable(fd: int, timeout: float) -> bool:
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
    except (OSError, ValueError):
        return True  # not selectable (a regular file is always ready): just read
    return bool(readable)


def _fileno(stream: BinaryIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None
