"""A run's git source, end to end on real components: the runner image (Debian, git), a git
repository served over smart HTTP by a test host on a Docker network of ours, the run's own
egress proxy and network, and the worker fetching as uid 1983 inside the run container.

Every run goes through ``run_pipeline`` (gates, egress session, audit): the right commit is
checked out and verified; a commit that is not on the ref is refused before any command of the
run; ``private://`` resolves through the pool's mapping (which also opens the egress allowlist
for it); an unknown mapping name is refused before a container exists; a source the egress
policy does not allow cannot be fetched.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher import __version__
from hardened_launcher.audit import MemoryAuditLog, Outcome
from hardened_launcher.egress.errors import EgressDeniedError
from hardened_launcher.executor.logsink import FileLogSink
from hardened_launcher.executor.runner import RunResult, docker_client
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.pipeline import EgressStep, run_pipeline
from hardened_launcher.redaction import Redactor
from hardened_launcher.settings import PrivateVcsMapping
from tests.conftest import integration_required, require_tool
from tests.integration.executor_support import runner_for, settings_for, signed_release
from tests.integration.git_server import GitServer, git_server, make_repository

pytestmark = pytest.mark.integration


def require_test_host() -> None:
    require_tool("git")
    require_tool("ip")
    if os.geteuid() != 0:
        if integration_required():
            pytest.fail("the git source tests need root (ip netns, iptables)")
        pytest.skip("the git source tests need root (ip netns, iptables)")


@dataclass
class Project:
    server: GitServer
    commits: list[str]
    image: str


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, runner_image: str) -> Iterator[Project]:
    require_test_host()
    root = tmp_path_factory.mktemp("git") / "srv"
    root.mkdir()
    commits = make_repository(
        root,
        "project.git",
        [
            {"README": "first\n", "tool.sh": "#!/bin/sh\necho tool v1\n"},
            {"README": "second\n", "tool.sh": "#!/bin/sh\necho tool v2\n"},
        ],
    )
    with git_server(root) as server:
        yield Project(server=server, commits=commits, image=runner_image)


def run(
    project: Project,
    tmp_path: Path,
    source: dict[str, Any],
    *,
    mappings: tuple[PrivateVcsMapping, ...] = (),
    allow_server: bool = False,
    audit: MemoryAuditLog | None = None,
    secret_env: dict[str, str] | None = None,
) -> tuple[RunResult, str, MemoryAuditLog]:

    tmp_path.mkdir(parents=True, exist_ok=True)
    policy = tmp_path / "egress.yaml"
    rules = (
        f"  - cidr: {project.server.address}/32\n    ports: [8080]\n"
        if allow_server
        else "  - host: nothing.invalid\n    ports: [443]\n"
    )
    policy.write_text(f"version: 1\nallow:\n{rules}", encoding="utf-8")
    settings = settings_for(
        tmp_path,
        egress_policy=policy,
        privatevcs_mappings=mappings,
        run_memory_bytes=256 * 1024 * 1024,
    )
    spec = run_spec_from_mapping(
        {
            "version": 1,
            "run_id": f"src-git-{secrets.token_hex(4)}",
            "run_type": "wo",
            "image": project.image,
            "phases": [
                {
                    "name": "main",
                    "commands": [
                        "echo head=$(git rev-parse HEAD) user=$(id -un) readme=$(cat README)",
                        "chmod +x tool.sh && ./tool.sh",
                        "git status --porcelain | sed 's/^/status: /'",
                    ],
                }
            ],
            "source": source,
            "secret_env": secret_env or {},
            # A secret file beside the checkout: the spec's files come after the source.
            "files": [{"path": "extra/vars.yml", "content": "a: 1\n"}],
        }
    )
    audit = audit or MemoryAuditLog()
    log = tmp_path / "run.log"
    result = run_pipeline(
        spec,
        settings=settings,
        launcher_id=f"src-{secrets.token_hex(4)}",
        worker_version=__version__,
        binaries=signed_release(tmp_path).gate,
        policy=None,
        runner=runner_for(settings),
        redactor=Redactor(),
        sink=FileLogSink(log),
        audit=audit,
        egress=EgressStep(docker_client=docker_client()),
    )
    return result, log.read_text(), audit


def mapping(project: Project) -> tuple[PrivateVcsMapping, ...]:
    return (PrivateVcsMapping(name="corp", base_endpoint=project.server.base_url),)


def events(audit: MemoryAuditLog, kind: str) -> list[Any]:
    return [e for e in audit.events if e.type == kind]


def test_private_source_is_fetched_through_the_proxy_and_verified(
    project: Project, tmp_path: Path
) -> None:
    tip = project.commits[-1]
    source = {"url": "private://corp/project.git", "ref": "main", "commit_sha": tip}
    result, text, audit = run(project, tmp_path, source, mappings=mapping(project))
    assert result.succeeded, text
    assert result.source_commit == tip
    assert f"::hl:: source commit {tip}" in text
    assert f"head={tip} user=spacelift readme=second" in text
    assert "tool v2" in text
    # git works as uid 1983 in the checkout: it is clean apart from the spec's own file and
    # the mode the run changed.
    assert [line for line in text.splitlines() if line.startswith("status: ")] == [
        "status:  M tool.sh",
        "status: ?? extra/",
    ]
    (verified,) = events(audit, "source.verified")
    assert verified.outcome is Outcome.ALLOW
    assert verified.fields["commit_sha"] == tip
    # The server saw the proxy (the host side of our network), never the run's own address.
    seen = project.server.requests()
    assert any("git-upload-pack" in line for line in seen), seen
    decisions = [e.fields["host"] for e in events(audit, "egress.connection")]
    assert project.server.address in decisions


def test_an_older_commit_on_the_ref_is_checked_out(project: Project, tmp_path: Path) -> None:
    first = project.commits[0]
    source = {"url": "private://corp/project.git", "ref": "main", "commit_sha": first}
    result, text, _ = run(project, tmp_path, source, mappings=mapping(project))
    assert result.succeeded, text
    assert result.source_commit == first
    assert f"head={first} user=spacelift readme=first" in text


def test_a_commit_that_is_not_on_the_ref_is_refused_before_the_run(
    project: Project, tmp_path: Path
) -> None:
    wrong = "0" * 40
    source = {"url": "private://corp/project.git", "ref": "main", "commit_sha": wrong}
    result, text, audit = run(project, tmp_path, source, mappings=mapping(project))
    assert not result.succeeded
    assert result.reason == "source_commit_mismatch"
    assert result.source_commit is None
    assert "::hl:: source refused source_commit_mismatch" in text
    assert "::hl:: phase" not in text  # nothing of the run ran
    (refused,) = events(audit, "source.refused")
    assert (refused.outcome, refused.reason) == (Outcome.DENY, "source_commit_mismatch")
    (finished,) = events(audit, "run.finished")
    assert finished.reason == "source_commit_mismatch"


def test_a_plain_url_is_fetched_when_the_egress_policy_allows_it(
    project: Project, tmp_path: Path
) -> None:
    tip = project.commits[-1]
    url = f"{project.server.base_url}/project.git"
    result, text, _ = run(
        project, tmp_path, {"url": url, "ref": "main", "commit_sha": tip}, allow_server=True
    )
    assert result.succeeded, text
    assert result.source_commit == tip


def test_a_source_the_egress_policy_does_not_allow_is_not_fetched(
    project: Project, tmp_path: Path
) -> None:
    tip = project.commits[-1]
    url = f"{project.server.base_url}/project.git"
    result, text, audit = run(project, tmp_path, {"url": url, "ref": "main", "commit_sha": tip})
    assert result.reason == "source_fetch_failed", text
    assert "::hl:: phase" not in text
    denied = [e for e in events(audit, "egress.connection") if e.outcome is Outcome.DENY]
    assert denied, text


def test_an_unknown_private_name_is_refused_before_a_container_exists(
    project: Project, tmp_path: Path
) -> None:
    source = {"url": "private://other/project.git", "ref": "main", "commit_sha": "a" * 40}
    audit = MemoryAuditLog()
    with pytest.raises(EgressDeniedError) as caught:
        run(project, tmp_path, source, mappings=mapping(project), audit=audit)
    assert caught.value.reason == "egress_private_vcs_unknown"
    (refused,) = [e for e in audit.events if e.reason == "egress_private_vcs_unknown"]
    assert (refused.type, refused.gate) == ("run.refused", "egress")
    assert not events(audit, "run.started")


def test_a_private_server_gets_the_credentials_and_no_log_shows_them(
    runner_image: str, tmp_path: Path
) -> None:
    require_test_host()
    token = f"tok{secrets.token_hex(10)}"
    header = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    root = tmp_path / "srv"
    root.mkdir()
    commits = make_repository(
        root, "locked.git", [{"README": "locked\n", "tool.sh": "echo locked tool\n"}]
    )
    with git_server(root, authorization=header) as server:
        project = Project(server=server, commits=commits, image=runner_image)
        mappings = (PrivateVcsMapping(name="corp", base_endpoint=server.base_url),)
        source: dict[str, Any] = {
            "url": "private://corp/locked.git",
            "ref": "main",
            "commit_sha": commits[0],
        }
        refused, _, _ = run(project, tmp_path / "no-auth", source, mappings=mappings)
        source["auth"] = {"username": "x-access-token", "secret_env": "GIT_TOKEN"}
        result, text, audit = run(
            project, tmp_path / "auth", source, mappings=mappings, secret_env={"GIT_TOKEN": token}
        )
        seen = server.requests()
    assert refused.reason == "source_fetch_failed"
    assert result.succeeded, text
    assert result.source_commit == commits[0]
    assert any(" 401" in line for line in seen)
    assert any("git-upload-pack 200" in line for line in seen), seen
    assert token not in text
    assert header.split()[1] not in text
    assert token not in repr([e.to_json_dict() for e in audit.events])
