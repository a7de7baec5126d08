"""Fuzz harness for bounded documents (``hardened_launcher.bounded_input``): JSON depth and the
strict YAML loader that policy data, run specs and other YAML inputs share.

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/documents.py fuzz/corpus/documents -max_total_time=300

``test_one_input`` also works without atheris; the unit tests replay the seed corpus through it.

Properties checked for every input:
- nothing but ``ValueError`` (JSON, depth) or ``yaml.YAMLError`` escapes: no ``RecursionError``,
  no ``TypeError`` from a strange node;
- what ``load_json`` accepts is exactly what ``json.loads`` accepts when the depth check passes,
  and the depth check refuses only documents deeper than the limit;
- what ``load_yaml`` returns holds no value deeper than its limit, only string keys, and (no
  aliases) no object shared between two places.
"""

from __future__ import annotations

import json
import sys

import yaml

from hardened_launcher.bounded_input import (
    DocumentTooDeepError,
    check_json_depth,
    load_json,
    load_yaml,
)

LIMIT = 8


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _check_tree(value: object, seen: set[int]) -> None:
    if isinstance(value, list | dict):
        assert id(value) not in seen, "an object appears twice (an alias got through)"
        seen.add(id(value))
        items = value.values() if isinstance(value, dict) else value
        if isinstance(value, dict):
            assert all(isinstance(k, str) for k in value), "a non-string key got through"
        for item in items:
            _check_tree(item, seen)


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        check_json_depth(text, max_depth=LIMIT)
        shallow = True
    except DocumentTooDeepError:
        shallow = False
    try:
        parsed = load_json(text, max_depth=LIMIT)
    except DocumentTooDeepError:
        assert not shallow
    except ValueError:
        pass
    else:
        assert shallow
        assert _depth(parsed) <= LIMIT
        assert parsed == json.loads(text) or parsed != parsed  # noqa: PLR0124 - NaN
    try:
        document = load_yaml(text, what="fuzz document", max_depth=LIMIT)
    except yaml.YAMLError:
        return
    assert _depth(document) <= LIMIT
    _check_tree(document, set())


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
