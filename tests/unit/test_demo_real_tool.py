"""``demo --real-tool`` (hardened_launcher/demo/real_tool.py): its run spec is a valid confirmed
run with an archive source, and the flag is opt-in. The story itself runs on real Docker by
hand (docs/demo.md); its flow over a git source is tests/e2e/test_ansible_story.py."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import yaml

from hardened_launcher.cli import build_parser
from hardened_launcher.demo.environment import Environment
from hardened_launcher.demo.real_tool import PLAYBOOK, project_archive, real_tool_spec
from hardened_launcher.executor.runspec import parse_run_spec, split_for_confirmation
from hardened_launcher.executor.source import ArchiveSource


def test_the_spec_is_a_confirmed_run_of_the_playbook_archive(tmp_path: Path) -> None:
    env = Environment(root=tmp_path)
    spec = real_tool_spec(
        env, "ansible-1", image="hl-runner-ansible:x", db_password="d" * 20, api_token="a" * 20
    )
    data = yaml.safe_dump(spec).encode()
    parsed = parse_run_spec(data)
    try:
        assert isinstance(parsed.source, ArchiveSource)
        assert parsed.confirm_after == "planning"
        assert parsed.run_type == "wo"
    finally:
        parsed.wipe()
    halves = split_for_confirmation(data)
    assert halves is not None
    plan, apply = (json.loads(h) for h in halves)
    assert [p["name"] for p in plan["phases"]] == ["planning"]
    assert "--check --diff" in plan["phases"][0]["commands"][0]
    assert (apply["stage"], apply["plan_of"]) == ("apply", "ansible-1")
    assert '-e @"$HL_PLAN_FILE"' in apply["phases"][0]["commands"][0]


def test_the_archive_holds_the_playbook_under_its_digest() -> None:
    source = project_archive()
    data = base64.b64decode(source["archive"])
    assert hashlib.sha256(data).hexdigest() == source["sha256"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == ["ansible.cfg", "site.yml"]
        member = tar.extractfile("site.yml")
        assert member is not None
        assert member.read().decode() == PLAYBOOK


def test_real_tool_is_opt_in() -> None:
    assert build_parser(["demo"]).parse_args(["demo"]).real_tool is False
    assert build_parser(["demo"]).parse_args(["demo", "--real-tool"]).real_tool is True
