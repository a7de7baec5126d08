"""The values inside a structured secret file, so that each one is masked on its own.

A workspace file marked ``secret: true`` is masked as a whole and line by line by the redactor.
That misses a tool printing *one value* of it (Ansible's ``debug: var=db_password`` from a vars
file, ``terraform console`` on a ``*.tfvars`` entry). :func:`extract_values` returns every scalar
value of the file as bytes; the pipeline registers each with the run's redactor (which masks its
encoded forms too and feeds the canary scan).

Formats, by the file's name: YAML (``.yml``, ``.yaml``), JSON (``.json``), dotenv (``.env``,
``*.env``), Terraform variables and HCL-ish ``k = "v"`` (``.tfvars``, ``.hcl``, ``.tf``) and INI
(``.ini``, ``.cfg``, ``.conf``, ``.properties``). Whatever the name, the line reader for
``key = value`` / ``key: value`` / ``export KEY=value`` runs too, so a file with an unexpected
name is still covered. More values than needed are harmless (a masked word that was not secret);
the redactor itself refuses values that are too short or too common to mask (with a warning).

Bounds: the file is at most the run spec's file size; at most :data:`MAX_VALUES` distinct values
(more is refused: split the file); nesting beyond :data:`MAX_DEPTH` is not walked; YAML aliases
are never expanded (the structured reader is skipped, the line reader still runs). A file that
does not parse in its format is not an error: its lines are still read. Nothing here logs or
raises with a value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any, Final

__all__ = ["MAX_DEPTH", "MAX_VALUES", "TooManyValuesError", "extract_values", "file_format"]

MAX_VALUES: Final = 4096
MAX_DEPTH: Final = 64

_YAML: Final = frozenset({".yml", ".yaml"})
_JSON: Final = frozenset({".json"})
_DOTENV: Final = frozenset({".env"})
_HCL: Final = frozenset({".tfvars", ".hcl", ".tf"})
_INI: Final = frozenset({".ini", ".cfg", ".conf", ".properties"})

#: ``[export ]key <= or :> value``; key: shell/INI/HCL/YAML-ish names (dots, dashes, quotes).
_LINE_RE: Final = re.compile(
    r"""^\s*(?:export\s+)?["']?[A-Za-z0-9_.\-/@\[\]]+["']?\s*[:=]\s?(?P<value>.*?)\s*$"""
)
#: A double-quoted HCL/JSON string (escapes kept as written, then unescaped).
_DQ_RE: Final = re.compile(r'"((?:[^"\\\n]|\\.){1,65536})"')
_SQ_RE: Final = re.compile(r"'([^'\n]{1,65536})'")
_HEREDOC_RE: Final = re.compile(r"<<-?\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*$")
_INLINE_COMMENT_RE: Final = re.compile(r"\s+[#;].*$")


class TooManyValuesError(ValueError):
    """The file holds more than :data:`MAX_VALUES` distinct values (the message names no value)."""


def file_format(path: str) -> str:
    """``yaml``, ``json``, ``dotenv``, ``hcl``, ``ini`` or ``lines`` (by the file's name)."""
    name = PurePosixPath(path).name.lower()
    suffix = PurePosixPath(name).suffix
    if suffix in _YAML:
        return "yaml"
    if suffix in _JSON:
        return "json"
    if suffix in _DOTENV or name == ".env" or name.startswith(".env."):
        return "dotenv"
    if suffix in _HCL:
        return "hcl"
    if suffix in _INI:
        return "ini"
    return "lines"


class _Collector:
    def __init__(self) -> None:
        self.values: dict[bytes, None] = {}  # ordered, distinct

    def add(self, text: str | bytes) -> None:
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        data = data.strip()
        if not data or data in self.values:
            return
        if len(self.values) >= MAX_VALUES:
            raise TooManyValuesError(
                f"the secret file holds more than {MAX_VALUES} values; split it into smaller files"
            )
        self.values[data] = None


def _walk(document: object, out: _Collector) -> None:
    """Every scalar leaf (strings, numbers), iteratively, to :data:`MAX_DEPTH`."""
    stack: list[tuple[object, int]] = [(document, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, bool) or node is None:
            continue
        if isinstance(node, str | int | float):
            out.add(str(node))
        elif isinstance(node, bytes):
            out.add(node)
        elif depth < MAX_DEPTH and isinstance(node, dict):
            stack.extend((value, depth + 1) for value in node.values())
        elif depth < MAX_DEPTH and isinstance(node, list | tuple):
            stack.extend((item, depth + 1) for item in node)


def _yaml_documents(text: str) -> Iterator[Any]:
    import yaml  # noqa: PLC0415  # PyYAML with the first YAML secret file

    # Aliases are never expanded (a few hundred bytes can expand to gigabytes): one alias and
    # the structured reader is skipped. The event scan is C (libyaml) when available.
    parser_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for event in yaml.parse(text, Loader=parser_loader):
        if isinstance(event, yaml.AliasEvent):
            return
    yield from yaml.load_all(text, Loader=parser_loader)


def _structured(kind: str, text: str, out: _Collector) -> None:
    import yaml  # noqa: PLC0415  # PyYAML with the first structured secret file

    try:
        if kind == "yaml":
            for document in _yaml_documents(text):
                _walk(document, out)
        elif kind == "json":
            _walk(json.loads(text), out)
    except (yaml.YAMLError, ValueError, RecursionError, TypeError) as exc:
        if isinstance(exc, TooManyValuesError):
            raise
        # Not this format after all: the line reader below still covers it.


def _unquote(value: str) -> list[str]:
    """A line's value as written, without a trailing comment, and without its quotes."""
    forms = [value]
    bare = _INLINE_COMMENT_RE.sub("", value)
    if bare != value:
        forms.append(bare)
    for form in list(forms):
        if len(form) >= 2 and form[0] == form[-1] and form[0] in "\"'`":
            inner = form[1:-1]
            forms.append(inner)
            if form[0] == '"':
                forms.append(_unescape(inner))
    return forms


def _unescape(text: str) -> str:
    try:
        decoded = json.loads(f'"{text}"')
    except ValueError:
        return text
    return decoded if isinstance(decoded, str) else text


def _lines(text: str, out: _Collector) -> None:
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;[" or stripped.startswith("//"):
            continue
        found = _LINE_RE.match(line)
        if found is None:
            continue
        value = found.group("value")
        if not value or value in ("{", "[", "(", "|", ">", "|-", ">-") or value.startswith("<<"):
            continue
        for form in _unquote(value):
            out.add(form)


def _hcl(text: str, out: _Collector) -> None:
    """String literals anywhere (lists and maps included) and heredoc bodies."""
    for found in _DQ_RE.finditer(text):
        out.add(_unescape(found.group(1)))
    # Heredocs (``k = <<EOT`` … ``EOT``), one pass over the lines.
    marker: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if marker is None:
            opened = _HEREDOC_RE.search(line)
            if opened is not None:
                marker, body = opened.group(1), []
            continue
        if line.strip() == marker:
            out.add("\n".join(body))
            for item in body:
                out.add(item)
            marker = None
        else:
            body.append(line)


def extract_values(path: str, data: bytes) -> tuple[bytes, ...]:
    """Every distinct scalar value of the secret file ``path`` holding ``data``.

    Raises :class:`TooManyValuesError` above :data:`MAX_VALUES` values (the caller refuses the
    spec). Never raises for content that does not parse.
    """
    text = data.decode("utf-8", "replace")
    out = _Collector()
    kind = file_format(path)
    if kind in ("yaml", "json"):
        _structured(kind, text, out)
    if kind in ("hcl", "lines"):
        _hcl(text, out)
    if kind == "lines":
        for found in _SQ_RE.finditer(text):
            out.add(found.group(1))
    _lines(text, out)
    return tuple(out.values)
