"""Values inside structured secret files are found one by one (YAML, JSON, dotenv, tfvars/HCL,
INI, unknown names); hostile files (aliases, depth, garbage, too many values) stay bounded."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.executor.errors import RunSpecError
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.executor.secret_files import (
    MAX_VALUES,
    TooManyValuesError,
    extract_values,
    file_format,
)
from hardened_launcher.redaction import Redactor

KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
#: Printable values without surrounding space (the extractors strip), no line breaks.
VALUES = (
    st.text(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(bool)
)
TOKENS = st.from_regex(r"[A-Za-z0-9_@%+=:,./-]{1,40}", fullmatch=True)


def leaves(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for item in node.values() for v in leaves(item)]
    if isinstance(node, list):
        return [v for item in node for v in leaves(item)]
    return [node] if isinstance(node, str) else []


TREES = st.recursive(
    st.dictionaries(KEYS, VALUES, min_size=1, max_size=4),
    lambda children: (
        st.dictionaries(KEYS, children | st.lists(VALUES, max_size=4), max_size=4)
        | st.lists(children, max_size=3)
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(TREES)
def test_every_json_and_yaml_value_is_found(tree: Any) -> None:
    for path, text in (
        ("vars.json", json.dumps(tree)),
        ("vars.json", json.dumps(tree, indent=2, ensure_ascii=False)),
        ("group_vars/all.yml", yaml.safe_dump(tree, allow_unicode=True)),
        ("vars.yaml", yaml.safe_dump(tree, default_flow_style=True)),
    ):
        found = set(extract_values(path, text.encode()))
        for value in leaves(tree):
            assert value.encode() in found, (path, value)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(KEYS.map(str.upper), TOKENS, min_size=1, max_size=20))
def test_every_dotenv_value_is_found_quoted_or_not(pairs: dict[str, str]) -> None:
    texts = [
        "".join(f"{k}={v}\n" for k, v in pairs.items()),
        "".join(f'export {k}="{v}"\n' for k, v in pairs.items()),
        "# comment\n" + "".join(f"{k}='{v}'  # note\n" for k, v in pairs.items()),
    ]
    for text in texts:
        found = set(extract_values(".env", text.encode()))
        for value in pairs.values():
            assert value.encode() in found


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(KEYS, VALUES, min_size=1, max_size=20), st.lists(VALUES, max_size=5))
def test_every_tfvars_value_is_found(pairs: dict[str, str], items: list[str]) -> None:
    body = "".join(f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in pairs.items())
    body += "list_var = [" + ", ".join(json.dumps(v) for v in items) + "]\n"
    body += "map_var = {\n" + "".join(f"  {k} = {json.dumps(v)}\n" for k, v in pairs.items())
    body += "}\n"
    found = set(extract_values("prod.auto.tfvars", body.encode()))
    for value in [*pairs.values(), *items]:
        assert value.encode() in found


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(KEYS, TOKENS, min_size=1, max_size=20), st.sampled_from(["=", ":", " = "]))
def test_every_ini_value_is_found(pairs: dict[str, str], separator: str) -> None:
    text = "[default]\n; comment\n" + "".join(f"{k}{separator}{v}\n" for k, v in pairs.items())
    for path in ("creds.ini", "app.conf", "settings.properties", "no-extension"):
        found = set(extract_values(path, text.encode()))
        for value in pairs.values():
            assert value.encode() in found, path


def test_heredocs_and_escapes_in_hcl() -> None:
    text = (
        'token = "p\\"q\\\\r-s3cr3t"\n'
        "cert = <<EOT\n-----BEGIN X-----\nline-one-of-cert-body\nEOT\n"
        'nested = { inner = { deep = "deep-value-1" } }\n'
    )
    found = set(extract_values("x.tfvars", text.encode()))
    assert b'p"q\\r-s3cr3t' in found
    assert b"line-one-of-cert-body" in found
    assert b"-----BEGIN X-----\nline-one-of-cert-body" in found
    assert b"deep-value-1" in found


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("a/b.yml", "yaml"),
        ("B.YAML", "yaml"),
        ("x.json", "json"),
        (".env", "dotenv"),
        (".env.production", "dotenv"),
        ("prod.env", "dotenv"),
        ("terraform.tfvars", "hcl"),
        ("a.auto.tfvars", "hcl"),
        ("c.ini", "ini"),
        ("secret.txt", "lines"),
        ("id_rsa", "lines"),
    ],
)
def test_format_by_name(path: str, kind: str) -> None:
    assert file_format(path) == kind


ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}] \n" for i in range(8))
    + "password: alias-file-secret\n"
)


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("bomb.yml", ALIAS_BOMB.encode()),
        ("deep.json", b"[" * 200_000 + b'"deep-secret"' + b"]" * 200_000),
        ("deep.yml", b"[" * 100_000 + b"deep-secret" + b"]" * 100_000),
        ("deep.yml", b"a:\n" + b"".join(b" " * i + b"a:\n" for i in range(1, 3000))),
        ("bad.json", b'{"k": "unterminated'),
        ("bad.yml", b"key: [unclosed\n\t- tab: x"),
        ("bin.env", bytes(range(256)) * 64),
        ("huge-line.ini", b"k = " + b"v" * 1_000_000),
        ("many-heredocs.tfvars", b"x = <<EOT\n" * 50_000),
        ("quotes.tfvars", b'"' * 200_000),
        ("empty.yml", b""),
    ],
)
def test_hostile_files_never_raise_and_stay_bounded(path: str, data: bytes) -> None:
    values = extract_values(path, data)
    assert len(values) <= MAX_VALUES
    assert all(isinstance(v, bytes) and v for v in values)
    if path == "bomb.yml":
        # The aliases were never expanded; the line reader still found the plain value.
        assert b"alias-file-secret" in values


def test_too_many_values_are_refused_without_quoting_any() -> None:
    text = "".join(f"k{i} = value-number-{i}\n" for i in range(MAX_VALUES + 1))
    with pytest.raises(TooManyValuesError) as info:
        extract_values("big.ini", text.encode())
    assert "value-number" not in str(info.value)
    with pytest.raises(RunSpecError, match=r"files\[0\]\.content .*more than 4096 values") as err:
        run_spec_from_mapping(spec_with(("big.ini", text)))
    assert "value-number" not in str(err.value)


def spec_with(*files: tuple[str, str]) -> dict[str, Any]:
    return {
        "version": 1,
        "run_id": "r1",
        "run_type": "ro",
        "image": "busybox:1",
        "phases": [{"name": "main", "commands": ["true"]}],
        "files": [{"path": p, "content": c, "secret": True} for p, c in files],
    }


def test_the_spec_names_each_value_and_the_redactor_masks_one_printed_alone() -> None:
    document = spec_with(
        ("vars.yml", "db:\n  password: Yaml-Pa55-value\n  port: 5432\n"),
        (".env", 'API_KEY="env-api-key-0042"\n'),
    )
    document["files"].append({"path": "plain.yml", "content": "visible: plain-value-123\n"})
    spec = run_spec_from_mapping(document)
    names = [name for name, _ in spec.secrets()]
    assert names[0] == "file:vars.yml"
    assert "file:vars.yml#1" in names
    assert "file:.env" in names
    assert not any(name.startswith("file:plain.yml") for name in names)
    redactor = Redactor()
    for name, value in spec.secrets():
        redactor.add(name, value)
    out = redactor.redact_text(
        "debug: Yaml-Pa55-value and env-api-key-0042 port 5432 plain-value-123"
    )
    assert "plain-value-123" in out
    assert "Yaml-Pa55-value" not in out
    assert "env-api-key-0042" not in out
    assert "5432" in out  # too short to mask (the redactor's own rule, with a warning)
    spec.wipe()
    assert all(value.wiped for _, value in spec.secrets())
