"""``hardened-launcher demo --real-tool``: an Ansible playbook planned, confirmed, then applied.

Opt-in (the default demo stays four busybox stories): it needs the runner image (Debian,
ansible-core, git; :mod:`hardened_launcher.demo.runner_image`, built once per Docker host by
mmdebstrap, about a minute cold) and takes some tens of seconds more. The project reaches the
run as a source archive carried in the sealed run state (no git server, no network). The run
spec has ``confirm_after: planning``: the planning run runs ``ansible-playbook --check --diff``
and the playbook writes a plan (a vars file with a random plan id) to ``$HL_PLAN_FILE``; the run
stops UNCONFIRMED; the story confirms it (``run confirm``'s code); the applying run gets the
exact plan and applies it, writing an outputs file. A secret from the envelope and one value of
a secret vars file are printed by both halves and must be masked in every stored log and in the
outputs. The same flow over a git source is tests/e2e/test_ansible_story.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
import subprocess
import tarfile
import time
from typing import Any, Final

from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.demo.environment import DemoEnvironmentError, Environment
from hardened_launcher.demo.stories import (
    MASK,
    Narrator,
    StoryResult,
    _fail,
    _result,
    new_run_id,
)

#: The launcher's run timeout for this story (a planning run is ~15 s on 2 busy cores).
REAL_TOOL_RUN_TIMEOUT: Final = "5m"

PLAYBOOK: Final = """\
- hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - vars/secrets.yml
  vars:
    app_release: "2026.12"
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
      check_mode: false
    - ansible.builtin.debug:
        msg: "running as {{ who.stdout }}"
    - name: the change
      ansible.builtin.copy:
        dest: "{{ playbook_dir }}/app.conf"
        content: "release={{ app_release }}\\n"
    - name: write the plan
      when: ansible_check_mode
      check_mode: false
      vars:
        new_plan_id: >-
          {{ lookup('ansible.builtin.password', '/dev/null',
                    chars=['ascii_lowercase', 'digits'], length=24) }}
      ansible.builtin.copy:
        dest: "{{ lookup('ansible.builtin.env', 'HL_PLAN_FILE') }}"
        content: "plan_id: {{ new_plan_id }}\\n"
    - name: apply only a plan
      when: not ansible_check_mode
      ansible.builtin.assert:
        that: plan_id is defined
    - name: the outputs
      when: not ansible_check_mode
      ansible.builtin.copy:
        dest: "{{ lookup('ansible.builtin.env', 'HL_OUTPUTS') }}/result.yml"
        content: |
          applied_plan: {{ plan_id }}
          app_conf: {{ lookup('ansible.builtin.file', playbook_dir ~ '/app.conf') }}
          token: {{ api_token }}
"""

PLAYBOOK_RUN: Final = "ansible-playbook -i localhost, site.yml"


def project_archive() -> dict[str, str]:
    """The playbook project as a run spec ``source`` archive (``{archive, sha256}``)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in (("site.yml", PLAYBOOK), ("ansible.cfg", "[defaults]\nnocows = 1\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    return {"archive": base64.b64encode(data).decode(), "sha256": hashlib.sha256(data).hexdigest()}


def real_tool_spec(
    env: Environment, run_id: str, *, image: str, db_password: str, api_token: str
) -> dict[str, Any]:
    """A confirmed run (``confirm_after: planning``) of the playbook: check mode, then apply."""
    spec = env.spec(
        run_id, [], secret_env={"DB_PASSWORD": db_password}, env={"ANSIBLE_NOCOLOR": "1"}
    )
    spec.update(
        image=image,
        run_type="wo",
        source=project_archive(),
        files=[
            {"path": "vars/secrets.yml", "content": f"api_token: {api_token}\n", "secret": True}
        ],
        phases=[
            {
                "name": "planning",
                "commands": [
                    f"{PLAYBOOK_RUN} --check --diff",
                    "test ! -e app.conf",
                    'cp "$HL_PLAN_FILE" "$HL_OUTPUTS/plan.yml"',
                ],
            },
            {
                "name": "applying",
                "commands": [
                    f'{PLAYBOOK_RUN} -e @"$HL_PLAN_FILE"',
                    'cp "$HL_PLAN_FILE" "$HL_OUTPUTS/plan.yml"',
                ],
            },
        ],
        confirm_after="planning",
    )
    return spec


def _outputs(env: Environment, run_id: str) -> dict[str, str]:
    with env.store() as store:
        stored = store.outputs(run_id)
    if stored is None:
        return {}
    return {
        name: base64.b64decode(text).decode(errors="replace") for name, text in stored[0].items()
    }


def _ensure_image(say: Narrator) -> str:
    from hardened_launcher.demo.runner_image import ensure_runner_image  # noqa: PLC0415

    say.say("the runner image (Debian, ansible-core, git): built once per Docker host")
    try:
        tag, seconds = ensure_runner_image()
    except FileNotFoundError as exc:
        raise DemoEnvironmentError(f"the runner image cannot be built: {exc}") from None
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"")[-600:].decode(errors="replace")
        raise DemoEnvironmentError(f"building the runner image failed: {tail}") from None
    say.say(f"runner image {tag} ready in {seconds:.1f} s")
    return tag


def real_tool(env: Environment, say: Narrator) -> StoryResult:
    """An Ansible playbook: planned in check mode, confirmed, applied with the exact plan."""
    from hardened_launcher.controlplane.runs import confirm_run  # noqa: PLC0415

    name = "real tool (Ansible)"
    started = time.monotonic()
    image = _ensure_image(say)
    db_password = "demo-db-" + secrets.token_hex(10)
    api_token = "demo-api-" + secrets.token_hex(10)
    run_id = new_run_id("ansible")
    say.say(f"submitting {run_id}: confirm_after planning; DB_PASSWORD is a secret, and so is")
    say.say("the secret vars file vars/secrets.yml (api_token); both halves print both")
    env.submit(
        real_tool_spec(env, run_id, image=image, db_password=db_password, api_token=api_token)
    )
    stopped = {RunState.UNCONFIRMED, RunState.FAILED, RunState.REFUSED, RunState.CRASHED}
    run = env.wait_for_run(run_id, stopped, timeout_seconds=300)
    result = _result(name, run_id, env, started)
    _, log = env.logs(run_id)
    text = log.decode(errors="replace")
    if run.state is not RunState.UNCONFIRMED:
        return _fail(
            result,
            f"expected UNCONFIRMED after planning, got {run.state.value} "
            f"({run.reason}): {text[-800:]}",
        )
    for line in text.splitlines():
        if "msg" in line or line.startswith("+release"):
            say.say(f"  plan log: {line.strip()}")
    planned = _outputs(env, run_id).get("plan.yml", "")
    say.say(f"{run_id} is UNCONFIRMED with its plan ({planned.strip()}); confirming it")
    if "+release=2026.12" not in text:
        return _fail(result, "the check mode's diff (+release=2026.12) is not in the plan log")
    with env.store() as store:
        _, apply_run_id = confirm_run(store, run_id, now=time.time())
    applied = env.wait_for_run(apply_run_id, timeout_seconds=300)
    _, apply_log = env.logs(applied.id)
    apply_text = apply_log.decode(errors="replace")
    result.run_id, result.state = applied.id, applied.state.value
    result.reason = applied.reason or "-"
    result.seconds = time.monotonic() - started
    if applied.state is not RunState.FINISHED:
        return _fail(
            result,
            f"expected the applying run FINISHED, got {applied.state.value} "
            f"({applied.reason}): {apply_text[-800:]}",
        )
    outputs = _outputs(env, applied.id)
    for line in outputs.get("result.yml", "").splitlines():
        say.say(f"  output result.yml: {line}")
    if not planned or outputs.get("plan.yml") != planned:
        return _fail(result, "the applying run did not get the exact plan the planning run wrote")
    result.evidence.append("apply got the exact plan bytes")
    plan_id = planned.removeprefix("plan_id: ").strip()
    if f"applied_plan: {plan_id}" not in outputs.get("result.yml", ""):
        return _fail(result, "the outputs do not name the applied plan")
    for value in (db_password, api_token):
        if any(value in t for t in (text, apply_text, *outputs.values())):
            return _fail(result, "a secret is in a stored log or in the outputs")
    if text.count(f"is {MASK}") < 2 or apply_text.count(f"is {MASK}") < 2:
        return _fail(result, f"expected both secrets printed as {MASK!r} in both logs")
    if f"token: {MASK}" not in outputs.get("result.yml", ""):
        return _fail(result, f"expected the outputs' token as {MASK!r}")
    result.evidence.append(f"both secrets {MASK!r} in both logs and the outputs")
    return result
