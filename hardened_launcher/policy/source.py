"""Loading policy files: a file, or a directory searched recursively, into a :class:`PolicyBundle`.

A bundle is the exact text of every ``.rego`` file (sorted by relative path) plus the merged data
of every ``.json`` / ``.yaml`` / ``.yml`` data file; its ``sha256`` covers all of them, so every
decision can name the policy it came from. Hidden files and directories are skipped. Data files
are merged at the root of ``data`` (each must hold an object; a key defined twice is refused).
``_test.rego`` files are tests: the gate leaves them out, ``policy test`` loads them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from hardened_launcher.bounded_input import (
    DocumentTooDeepError,
    describe_path,
    load_json,
    load_yaml,
    read_bounded,
)
from hardened_launcher.errors import InputFileError, UntrustedInputError
from hardened_launcher.policy.errors import PolicyCompileError

MAX_POLICY_FILE_BYTES = 1024 * 1024
MAX_DATA_DEPTH = 64
MAX_POLICY_TOTAL_BYTES = 16 * 1024 * 1024
MAX_POLICY_FILES = 1000
DATA_SUFFIXES = (".json", ".yaml", ".yml")


class Syntax(StrEnum):
    """Which Rego dialect a file is read as; ``AUTO`` detects per file."""

    AUTO = "auto"
    V0 = "v0"
    V1 = "v1"


@dataclass(frozen=True, kw_only=True)
class PolicyFile:
    path: str  # as shown in messages: relative to the policy root, or the file name
    text: str


@dataclass(frozen=True, kw_only=True)
class PolicyBundle:
    root: Path
    files: tuple[PolicyFile, ...]
    data: Mapping[str, object]
    sha256: str


def is_test_file(name: str) -> bool:
    return name.endswith("_test.rego")


def _compile_error(message: str, *, hint: str, reason: str) -> PolicyCompileError:
    return PolicyCompileError(message, hint=hint, reason=reason)


def _read_text(path: Path, shown: str, *, named: bool = False) -> str:
    """The UTF-8 text of one policy or data file; ``named`` when it is the path the operator gave
    (then a missing or unreadable file is an :class:`InputFileError`, exit 66 on the CLI)."""
    try:
        raw = read_bounded(
            path,
            max_bytes=MAX_POLICY_FILE_BYTES,
            what="policy file",
            unreadable=None if named else _compile_error,
            reason="policy_file_unreadable",
        )
    except UntrustedInputError:
        raise PolicyCompileError(
            f"the policy file {shown} is larger than {MAX_POLICY_FILE_BYTES} bytes",
            hint="split it or move large lists into a data file",
            reason="policy_file_too_large",
        ) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyCompileError(
            f"the policy file {shown} is not UTF-8 (byte {exc.start})",
            hint="save it as UTF-8",
            reason="policy_file_unreadable",
        ) from None


def _walk_error(exc: OSError) -> None:
    raise PolicyCompileError(
        f"cannot list the policy directory {describe_path(exc.filename or '')}: "
        f"{exc.strerror or 'failed'}",
        hint="every directory under the policy path must be readable by the launcher's user",
        reason="policy_file_unreadable",
    )


def _shown_name(found: Path, base: Path) -> str:
    """The name a file is shown and hashed under (relative to the policy root): UTF-8 only."""
    relative = found.relative_to(base).as_posix() if found != base else found.name
    try:
        os.fsencode(relative).decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyCompileError(
            f"the policy file name {describe_path(relative)} is not UTF-8",
            hint="rename it: policy and data file names must be UTF-8",
            reason="policy_file_unreadable",
        ) from None
    return relative


def _discover(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InputFileError(
            f"the policy path {describe_path(root)} is neither a file nor a directory",
            hint="point it at a .rego file or a directory of .rego files",
            reason="policy_files_missing",
        )
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_walk_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            Path(dirpath, name)
            for name in sorted(filenames)
            if not name.startswith(".") and name.endswith((".rego", *DATA_SUFFIXES))
        )
    return sorted(found)


def _check_numbers(doc: object, shown: str) -> None:
    """Refuse numbers the engine cannot hold as OPA does: integers beyond 64 bits (rounded) and
    floats written ``1.0`` or with an exponent (OPA keeps that text for json.marshal/sprintf)."""
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            if not -(2**63) <= value < 2**64:
                raise PolicyCompileError(
                    f"the data file {shown} holds an integer beyond 64 bits",
                    hint="the engine would round it where OPA keeps it exact; use a string",
                    reason="policy_data_invalid",
                )
        elif isinstance(value, float) and (
            not math.isfinite(value) or value.is_integer() or "e" in repr(value)
        ):
            raise PolicyCompileError(
                f"the data file {shown} holds a number written like 1.0 or 1e-05 ({value!r})",
                hint="OPA keeps such a number's text (json.marshal, sprintf), the engine does "
                "not: write it as an integer, or as a plain decimal",
                reason="policy_data_invalid",
            )


def _merge_data(target: dict[str, object], doc: object, shown: str) -> None:
    _check_numbers(doc, shown)
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise PolicyCompileError(
            f"the data file {shown} does not hold an object with string keys",
            hint="a data file holds one JSON/YAML object; its keys become data.<key>",
            reason="policy_data_invalid",
        )
    for key, value in doc.items():
        if key in target:
            raise PolicyCompileError(
                f"the data file {shown} defines data.{key}, which another data file defines",
                hint="give each data file its own top-level keys",
                reason="policy_data_invalid",
            )
        target[key] = value


def _load_data(path: Path, shown: str, *, named: bool = False) -> object:
    import yaml  # noqa: PLC0415  # PyYAML with the first policy data file

    text = _read_text(path, shown, named=named)
    try:
        if path.suffix == ".json":
            return load_json(text, max_depth=MAX_DATA_DEPTH)
        return load_yaml(text, what="policy data file", max_depth=MAX_DATA_DEPTH)
    except DocumentTooDeepError as exc:
        raise PolicyCompileError(
            f"{shown}:{exc.line}:{exc.column}: the data file nests deeper than "
            f"{MAX_DATA_DEPTH} levels",
            hint="flatten the data",
            reason="policy_data_invalid",
        ) from None
    except (ValueError, yaml.YAMLError) as exc:
        where = ""
        own = ""
        mark = getattr(exc, "problem_mark", None)
        if isinstance(exc, json.JSONDecodeError):
            where = f":{exc.lineno}:{exc.colno}"
        elif mark is not None:
            where = f":{mark.line + 1}:{mark.column + 1}"
        elif type(exc) is yaml.YAMLError:
            own = f" ({exc})"  # one of the loader's own rules: no document text in it
        raise PolicyCompileError(
            f"{shown}{where}: the data file is not valid {path.suffix[1:].upper()}{own}",
            hint="fix the data file (YAML anchors and aliases are not allowed)",
            reason="policy_data_invalid",
        ) from None


def load_policy_path(path: Path, *, include_tests: bool = False) -> PolicyBundle:
    """Read every policy and data file under ``path``. No files at all is refused."""
    paths = _discover(path)
    if len(paths) > MAX_POLICY_FILES:
        raise PolicyCompileError(
            f"{describe_path(path)} holds more than {MAX_POLICY_FILES} policy and data files",
            hint="point the launcher at the directory of the policy itself",
            reason="policy_files_missing",
        )
    base = path if path.is_dir() else path.parent
    files: list[PolicyFile] = []
    data: dict[str, object] = {}
    digest = hashlib.sha256()
    total_bytes = 0
    for found in paths:
        shown = _shown_name(found, base)
        named = found == path
        if found.suffix == ".rego":
            if is_test_file(found.name) and not include_tests:
                continue
            text = _read_text(found, shown, named=named)
            files.append(PolicyFile(path=shown, text=text))
            raw = text.encode("utf-8")
        else:
            doc = _load_data(found, shown, named=named)
            _merge_data(data, doc, shown)
            try:
                raw = json.dumps(doc, sort_keys=True, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError):
                raise PolicyCompileError(
                    f"the data file {shown} holds a value JSON cannot represent (a date, "
                    "binary data or NaN)",
                    hint="quote dates and use plain strings and numbers in data files",
                    reason="policy_data_invalid",
                ) from None
        total_bytes += len(raw)
        if total_bytes > MAX_POLICY_TOTAL_BYTES:
            raise PolicyCompileError(
                f"the policy files under {describe_path(path)} hold more than "
                f"{MAX_POLICY_TOTAL_BYTES} bytes",
                hint="point the launcher at the directory of the policy itself",
                reason="policy_file_too_large",
            )
        digest.update(f"{shown}\0{len(raw)}\0".encode())
        digest.update(raw)
    if not files:
        raise PolicyCompileError(
            f"no .rego policy files were found at {describe_path(path)}",
            hint="an empty policy would allow everything, so it is refused; add a .rego file",
            reason="policy_files_missing",
        )
    return PolicyBundle(root=path, files=tuple(files), data=data, sha256=digest.hexdigest())
