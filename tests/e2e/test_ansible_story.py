"""The real-tool story end to end: an Ansible playbook from a git source, through the daemon.

Real components throughout: ``controlplane serve`` (long poll), SeaweedFS for the logs, the
launcher daemon with its egress policy and a ``SPACELIFT_PRIVATEVCS_MAPPING_*`` pair, dockerd
running the runner image (Debian, ansible-core, git; built once per host by mmdebstrap), and a
git repository served over smart HTTP from a network namespace of ours. The run initialization
policy reads the source from the signed manifest (it allows only ``private://corp/``).

The playbook prints, with ``debug``, a secret from the envelope (``secret_env``) and one value
of a secret vars file (``files[].secret``); the stored log holds ``***`` for both, the canary
scan finds it clean, and the audit log shows the verified commit. A second run names a commit
that is not on the ref: it is refused before the playbook starts.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.demo.stories import audit_trail, new_run_id
from tests.conftest import integration_required, require_tool
from tests.e2e.conftest import EnvFactory
from tests.integration.git_server import GitServer, git_server, make_repository

pytestmark = pytest.mark.integration

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - vars/secrets.yml
  tasks:
    - name: the envelope's secret
      ansible.builtin.debug:
        msg: "db password is {{ lookup('ansible.builtin.env', 'DB_PASSWORD') }}"
    - name: a value of the secret vars file
      ansible.builtin.debug:
        msg: "api token is {{ api_token }}"
    - name: who runs this
      ansible.builtin.command: id -un
      register: who
      changed_when: false
    - ansible.builtin.debug:
        msg: "running as {{ who.stdout }}"
"""

POLICY = """\
package spacelift

import rego.v1

deny contains "the source must come from the corp VCS" if {
    not startswith(input.static_run_environment.source.url, "private://corp/")
}
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[GitServer, list[str]]]:
    require_tool("git")
    require_tool("ip")
    if os.geteuid() != 0:
        if integration_required():
            pytest.fail("the Ansible story needs root (ip netns, iptables)")
        pytest.skip("the Ansible story needs root (ip netns, iptables)")
    root = tmp_path / "srv"
    root.mkdir()
    commits = make_repository(
        root,
        "infra.git",
        [{"site.yml": PLAYBOOK, "ansible.cfg": "[defaults]\nnocows = 1\n"}],
    )
    with git_server(root) as server:
        yield server, commits


def test_ansible_playbook_from_git_masks_both_secrets(
    make_env: EnvFactory, served: tuple[GitServer, list[str]], runner_image: str, tmp_path: Path
) -> None:
    server, commits = served
    egress = tmp_path / "egress.yaml"
    egress.write_text("version: 1\nallow:\n  - host: nothing.invalid\n    ports: [443]\n")
    policy = tmp_path / "source.rego"
    policy.write_text(POLICY)
    env = make_env(
        launcher_env={
            "HL_EGRESS_POLICY": str(egress),
            "SPACELIFT_PRIVATEVCS_MAPPING_NAME_0": "corp",
            "SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_0": server.base_url,
            "SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": str(policy),
            "HL_RUN_MEMORY_BYTES": str(512 * 1024 * 1024),
        }
    )
    db_password = f"envsecret-{secrets.token_hex(8)}"
    api_token = f"filesecret-{secrets.token_hex(8)}"
    run_id = new_run_id("ansible")
    spec = env.spec(
        run_id,
        ["ansible-playbook -i localhost, site.yml"],
        secret_env={"DB_PASSWORD": db_password},
        env={"ANSIBLE_NOCOLOR": "1"},
    )
    spec["image"] = runner_image
    spec["source"] = {"url": "private://corp/infra.git", "ref": "main", "commit_sha": commits[0]}
    spec["files"] = [
        {
            "path": "vars/secrets.yml",
            "content": f"api_token: {api_token}\nregion: eu-west-1\n",
            "secret": True,
        }
    ]
    env.submit(spec)
    run = env.wait_for_run(run_id, timeout_seconds=180)
    _, log = env.logs(run_id)
    text = log.decode(errors="replace")
    assert run.state is RunState.FINISHED, f"{run.state} {run.reason}: {text}"
    assert f"::hl:: source commit {commits[0]}" in text
    assert '"msg": "db password is ***"' in text, text
    assert '"msg": "api token is ***"' in text, text
    assert '"msg": "running as spacelift"' in text, text
    assert db_password not in text
    assert api_token not in text
    # What an operator sees in a terminal: `controlplane run logs`.
    shown = env.cp("run", "logs", run_id).stdout
    assert '"msg": "api token is ***"' in shown
    assert db_password not in shown
    assert api_token not in shown
    trail = audit_trail(env, run_id)
    assert "source.verified" in trail, trail
    assert trail.index("source.verified") < trail.index("run.finished")
    assert "run.log_clean" in trail, trail
    assert "run.log_leak" not in " ".join(trail)
    assert any("git-upload-pack" in line for line in server.requests())

    # A commit that is not on the ref: refused before the playbook, reason on the run.
    wrong = new_run_id("ansible-wrong")
    spec["run_id"] = wrong
    spec["source"] = {"url": "private://corp/infra.git", "ref": "main", "commit_sha": "1" * 40}
    env.submit(spec)
    run = env.wait_for_run(wrong, timeout_seconds=120)
    _, log = env.logs(wrong)
    assert run.reason == "source_commit_mismatch", f"{run.state} {run.reason}"
    assert b"PLAY [localhost]" not in log
    assert "source.refused" in audit_trail(env, wrong)
