"""A run that prints one value of a structured secret file sees it masked (raw and encoded), in
every format, and the canary scan of the stored log covers those values (real Docker)."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from hardened_launcher.audit import MemoryAuditLog
from tests.integration.executor_support import Release, settings_for, signed_release
from tests.integration.images import busybox_image
from tests.integration.test_executor_docker import execute, spec_of

pytestmark = pytest.mark.integration


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return signed_release(tmp_path)


def canary(label: str) -> str:
    return f"{label}-{secrets.token_hex(8)}"


def test_one_value_printed_from_each_secret_file_format_is_masked(
    release: Release, tmp_path: Path
) -> None:
    values = {name: canary(name) for name in ("yaml", "json", "dotenv", "tfvars", "ini")}
    files = [
        ("group_vars/all.yml", f"db:\n  user: app\n  password: {values['yaml']}\n"),
        ("creds.json", f'{{"service": {{"api_key": "{values["json"]}"}}}}'),
        (".env", f'export API_TOKEN="{values["dotenv"]}"\nDEBUG=1\n'),
        ("prod.auto.tfvars", f'region = "eu-west-1"\ndb_password = "{values["tfvars"]}"\n'),
        ("boto.ini", f"[default]\naws_secret_access_key = {values['ini']}\n"),
    ]
    # Each command prints one value alone, as a tool's debug output would, raw and base64.
    commands = [
        "sed -n 's/^  password: //p' group_vars/all.yml",
        'sed -n \'s/.*"api_key": "\\([^"]*\\)".*/\\1/p\' creds.json',
        '. ./.env && echo "token is $API_TOKEN"',
        "sed -n 's/^db_password = \"\\(.*\\)\"/\\1/p' prod.auto.tfvars | tr -d '\\n' | base64",
        "cut -d= -f2 boto.ini | tr -d ' ' | grep -v default",
    ]
    document = spec_of(
        busybox_image(),
        ("main", commands),
        files=[{"path": p, "content": c, "secret": True, "mode": "0600"} for p, c in files],
    )
    log = tmp_path / "run.log"
    audit = MemoryAuditLog()
    result = execute(document, settings_for(tmp_path), release, log, audit=audit)
    text = log.read_text()
    assert result.succeeded, text
    for value in values.values():
        assert value not in text
        assert base64.b64encode(value.encode()).decode()[:12] not in text
    assert text.count("***") >= len(values)
    assert "token is ***" in text
    assert [e.type for e in audit.events if e.type.startswith("run.log")] == ["run.log_clean"]
    # Each value was counted under its own name (file path and index), never its content.
    (finished,) = [e for e in audit.events if e.type == "run.finished"]
    redactions = finished.fields["redactions"]
    assert isinstance(redactions, tuple)
    counted = {str(item).split("=", 1)[0] for item in redactions}
    assert any(name.startswith("file:prod.auto.tfvars#") for name in counted)
    assert any(name.startswith("file:group_vars/all.yml#") for name in counted)


def test_outputs_are_collected_redacted_and_kept_out_of_the_log(
    release: Release, tmp_path: Path
) -> None:
    token = canary("output-token")
    commands = [
        'printf "plan: 3 to add\\ntoken=%s\\n" "$TOKEN" > "$HL_OUTPUTS/plan.txt"',
        "printf '\\000\\001binary' > \"$HL_OUTPUTS/blob.bin\"",
        'head -c 2000000 /dev/zero > "$HL_OUTPUTS/too-big.bin"',  # over 1 MiB: not sent
        'ln -s /etc/passwd "$HL_OUTPUTS/link"',  # not a regular file: not sent
        'mkdir "$HL_OUTPUTS/sub" && echo x > "$HL_OUTPUTS/sub/nested.txt"',  # top level only
        "echo run-output-done",
    ]
    document = spec_of(busybox_image(), ("main", commands), secret_env={"TOKEN": token})
    log = tmp_path / "run.log"
    audit = MemoryAuditLog()
    result = execute(document, settings_for(tmp_path), release, log, audit=audit)
    text = log.read_text()
    assert result.succeeded, text
    assert set(result.outputs) == {"plan.txt", "blob.bin"}
    assert result.outputs["plan.txt"] == b"plan: 3 to add\ntoken=***\n"
    assert result.outputs["blob.bin"] == b"\x00\x01binary"
    assert "::hl:: output" not in text
    assert "run-output-done" in text
    assert token not in text
    assert text.rstrip().endswith("::hl:: run end status=0")
    assert [e.type for e in audit.events if e.type.startswith("run.log")] == ["run.log_clean"]
