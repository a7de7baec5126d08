"""The real-tool story end to end: an Ansible playbook from a git source, through the daemon,
planned in check mode, confirmed by an operator, then applied.

Real components throughout: ``controlplane serve`` (long poll), SeaweedFS for the logs and the
sealed plan, the launcher daemon with its egress policy and a ``SPACELIFT_PRIVATEVCS_MAPPING_*``
pair, dockerd running the runner image (Debian, ansible-core, git; built once per host by
mmdebstrap), and a git repository served over smart HTTP from a network namespace of ours. The
run initialization policy reads the source and the stage from the signed manifest (it allows
only ``private://corp/``, and write runs only as a confirmed plan and its own apply: the
library's confirmed_apply.rego).

The run spec has ``confirm_after: planning``. The planning run runs ``ansible-playbook --check
--diff``: the diff of the change is in its log, nothing is changed, and the playbook writes the
plan (a vars file with a random plan id) to ``$HL_PLAN_FILE``; the run stops UNCONFIRMED. After
``controlplane run confirm`` the applying run gets those exact bytes and runs the playbook for
real with ``-e @$HL_PLAN_FILE``; the playbook writes an outputs file, returned to the control
plane and shown by ``controlplane run show``. Both halves print, with ``debug``, a secret from
the envelope (``secret_env``) and one value of a secret vars file (``files[].secret``); every
stored log, the terminal and the outputs hold ``***`` for both, the canary scans find the logs
clean, and the audit log shows the verified commit. A run that names a commit not on the ref is
refused before the playbook starts, and the same write run without ``confirm_after`` is denied
by the policy. (Discarding an UNCONFIRMED run, which applies nothing, is proven on busybox in
tests/e2e/test_demo_stories.py.)
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from hardened_launcher.cli import main
from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.controlplane.runs import submit_run
from hardened_launcher.demo.environment import Environment
from hardened_launcher.demo.real_tool import PLAYBOOK, real_tool_spec
from hardened_launcher.demo.stories import audit_trail, new_run_id
from tests.conftest import integration_required, require_tool
from tests.e2e.conftest import EnvFactory
from tests.integration.git_server import GitServer, git_server, make_repository

pytestmark = pytest.mark.integration

POLICY = """\
package spacelift

import rego.v1

deny contains "the source must come from the corp VCS" if {
    not startswith(input.static_run_environment.source.url, "private://corp/")
}
"""

LIBRARY = Path(__file__).resolve().parents[2] / "policies"


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


def _submit(env: Environment, spec: Mapping[str, object]) -> None:
    """``run submit`` in process (the CLI's own path; a subprocess costs seconds)."""
    assert env.state is not None
    with env.store() as store:
        submit_run(
            env.state,
            store,
            pool=env.pool,
            spec=yaml.safe_dump(dict(spec)).encode(),
            now=datetime.now(UTC),
        )


def _cp(
    env: Environment,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> str:
    """``hardened-launcher controlplane ARGS`` in process (the same command code, without the
    seconds a Python start costs here); returns what it printed."""
    for name, value in env.cp_environ().items():
        if name.startswith("HL_CP_"):
            monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert main(["controlplane", *args, "--dir", str(env.cp_dir)]) == 0
    return capsys.readouterr().out


def _output(outputs: tuple[dict[str, str], bool] | None, name: str) -> str:
    assert outputs is not None
    files, truncated = outputs
    assert not truncated
    return base64.b64decode(files[name]).decode()


def test_ansible_check_mode_plan_then_confirmed_apply_masks_both_secrets(
    make_env: EnvFactory,
    served: tuple[GitServer, list[str]],
    runner_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, commits = served
    egress = tmp_path / "egress.yaml"
    egress.write_text("version: 1\nallow:\n  - host: nothing.invalid\n    ports: [443]\n")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "source.rego").write_text(POLICY)
    shutil.copy(LIBRARY / "confirmed_apply.rego", policies)
    env = make_env(
        launcher_env={
            "HL_EGRESS_POLICY": str(egress),
            "SPACELIFT_PRIVATEVCS_MAPPING_NAME_0": "corp",
            "SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_0": server.base_url,
            "SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": str(policies),
            "HL_RUN_MEMORY_BYTES": str(512 * 1024 * 1024),
            # The refused run below overlaps the planning run.
            "HL_MAX_CONCURRENT_RUNS": "2",
        }
    )
    db_password = f"envsecret-{secrets.token_hex(8)}"
    api_token = f"filesecret-{secrets.token_hex(8)}"

    def confirmed_spec(run_id: str, commit_sha: str) -> dict[str, object]:
        # The demo's spec (demo --real-tool), with the project from git instead of an archive.
        spec = real_tool_spec(
            env, run_id, image=runner_image, db_password=db_password, api_token=api_token
        )
        spec["source"] = {
            "url": "private://corp/infra.git",
            "ref": "main",
            "commit_sha": commit_sha,
        }
        return spec

    # A commit that is not on the ref: refused before the playbook, reason on the run.
    wrong = new_run_id("ansible-wrong")
    _submit(env, confirmed_spec(wrong, "1" * 40))
    # The same write run without confirm_after: denied by confirmed_apply.rego (no stage).
    unconfirmed = new_run_id("ansible-unconfirmed")
    whole = confirmed_spec(unconfirmed, commits[0])
    del whole["confirm_after"]
    _submit(env, whole)
    run_id = new_run_id("ansible")
    _submit(env, confirmed_spec(run_id, commits[0]))

    # Planning: check mode shows the diff, changes nothing, and stops UNCONFIRMED with its plan.
    run = env.wait_for_run(
        run_id, {RunState.UNCONFIRMED, RunState.FAILED, RunState.REFUSED}, timeout_seconds=180
    )
    _, log = env.logs(run_id)
    text = log.decode(errors="replace")
    assert run.state is RunState.UNCONFIRMED, f"{run.state} {run.reason}: {text}"
    assert f"::hl:: source commit {commits[0]}" in text
    assert "+release=2026.12" in text, text  # --diff
    assert '"msg": "db password is ***"' in text, text
    assert '"msg": "api token is ***"' in text, text
    assert '"msg": "running as spacelift"' in text, text
    with env.store() as store:
        plan = store.plan_of(run_id)
        planned = _output(store.outputs(run_id), "plan.yml")
    assert plan is not None
    assert plan.artifact_sha256
    assert plan.commit_sha == commits[0]
    assert planned.startswith("plan_id: ")
    shown = _cp(env, monkeypatch, capsys, "run", "show", run_id)
    for expected in ("UNCONFIRMED", "planning", plan.apply_run_id, "plan.yml", planned.strip()):
        assert expected in shown, shown

    refused = env.wait_for_run(wrong, timeout_seconds=60)
    _, wrong_log = env.logs(wrong)
    assert refused.reason == "source_commit_mismatch", f"{refused.state} {refused.reason}"
    assert b"PLAY [localhost]" not in wrong_log
    assert "source.refused" in audit_trail(env, wrong)

    denied = env.wait_for_run(unconfirmed, timeout_seconds=60)
    assert (denied.state, denied.reason) == (RunState.REFUSED, "policy_denied"), denied
    assert "confirm_after" in (denied.message or "")

    # The operator confirms; the applying run gets the exact plan and changes things for real.
    _cp(env, monkeypatch, capsys, "run", "confirm", run_id)
    applied = env.wait_for_run(plan.apply_run_id, timeout_seconds=180)
    _, apply_log = env.logs(plan.apply_run_id)
    apply_text = apply_log.decode(errors="replace")
    assert applied.state is RunState.FINISHED, f"{applied.state} {applied.reason}: {apply_text}"
    change = apply_text.index("TASK [the change]")
    assert apply_text[change:].split("TASK [", 2)[1].count("changed: [localhost]") == 1
    assert "All assertions passed" in apply_text
    with env.store() as store:
        assert [p.name for p in store.phases(applied.id)] == ["applying"]
        outputs = store.outputs(applied.id)
    assert _output(outputs, "plan.yml") == planned  # the exact bytes the planning run wrote
    result = _output(outputs, "result.yml")
    plan_id = planned.removeprefix("plan_id: ").strip()
    assert f"applied_plan: {plan_id}" in result, result
    assert "app_conf: release=2026.12" in result, result
    assert "token: ***" in result, result
    shown = _cp(env, monkeypatch, capsys, "run", "show", plan.apply_run_id)
    for expected in (
        "FINISHED",
        "applying",
        "result.yml",
        f"applied_plan: {plan_id}",
        "token: ***",
    ):
        assert expected in shown, shown

    # Both secrets masked everywhere: stored logs, the terminal (`run logs`), `run show`.
    for rid, stored in ((run_id, text), (applied.id, apply_text)):
        assert '"msg": "db password is ***"' in stored
        assert '"msg": "api token is ***"' in stored
        terminal = _cp(env, monkeypatch, capsys, "run", "logs", rid)
        assert '"msg": "api token is ***"' in terminal, terminal
        terminal += _cp(env, monkeypatch, capsys, "run", "show", rid)
        for value in (db_password, api_token):
            assert value not in stored
            assert value not in terminal
        trail = audit_trail(env, rid)
        assert "source.verified" in trail, trail
        assert trail.index("source.verified") < trail.index("run.finished")
        assert "run.log_clean" in trail, trail
        assert "run.log_leak" not in " ".join(trail)
    assert "plan.verified" in audit_trail(env, applied.id)
    assert any("git-upload-pack" in line for line in server.requests())
