"""Fuzz harness for the policy input builder (``hardened_launcher.policy.input``).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/policy_input.py fuzz/corpus/policy_input -max_total_time=300

``test_one_input`` also works without atheris; tests/unit/test_policy_fuzz.py replays the seed
corpus through it.

The bytes are read as JSON run metadata (non-JSON inputs are skipped). Every string value that
appears in ``environment_variables`` is also passed as a secret variable name list and as a
``Secret``. Properties checked:
- a refusal is a ``PolicyInputError`` with reason ``policy_input_invalid``, a hint, and a message
  shorter than 400 characters that never contains a secret value;
- an accepted document encodes to canonical JSON no larger than ``MAX_INPUT_BYTES``, holds the
  launcher section we gave it, and contains no secret value anywhere.
"""

from __future__ import annotations

import json
import sys

from hardened_launcher.policy.errors import PolicyInputError
from hardened_launcher.policy.input import (
    MAX_INPUT_BYTES,
    LauncherFacts,
    build_input,
    encode_input,
)
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.secrets import Secret

FACTS = LauncherFacts(pool_id="pool", worker_id="worker", version="0")
SANITIZER = Sanitizer(b"fuzz-key-0123456789abcdef")
CANARY = "CANARY-c0ffee-secret"


def _secrets_into(metadata: object) -> tuple[object, list[str]]:
    """Mark every env var as secret: half by name, half by wrapping the value in ``Secret``."""
    if not isinstance(metadata, dict):
        return metadata, []
    sre = metadata.get("static_run_environment")
    env = sre.get("environment_variables") if isinstance(sre, dict) else None
    if not isinstance(env, dict):
        return metadata, []
    by_name: list[str] = []
    for index, (name, value) in enumerate(sorted(env.items())):
        if not isinstance(value, str) or len(value) < 4:
            continue
        if index % 2:
            env[name] = Secret(value)
        else:
            by_name.append(name)
    env["HL_FUZZ_CANARY"] = Secret(CANARY)
    return metadata, by_name


def test_one_input(data: bytes) -> None:
    try:
        metadata = json.loads(data)
    except (ValueError, RecursionError):
        return
    secret_values = []
    if isinstance(metadata, dict):
        sre = metadata.get("static_run_environment")
        env = sre.get("environment_variables") if isinstance(sre, dict) else None
        if isinstance(env, dict):
            secret_values = [v for v in env.values() if isinstance(v, str) and len(v) >= 4]
    metadata, names = _secrets_into(metadata)
    try:
        doc = build_input(
            metadata,  # type: ignore[arg-type]  # the fuzzer sends any JSON
            launcher=FACTS,
            sanitizer=SANITIZER,
            secret_variables=names,
        )
    except PolicyInputError as exc:
        _check_refusal(exc)
        return
    text = encode_input(doc)
    assert len(text) <= MAX_INPUT_BYTES
    assert CANARY not in text
    reparsed = json.loads(text)
    sre_out = reparsed.get("static_run_environment")
    env_out = sre_out.get("environment_variables") if isinstance(sre_out, dict) else None
    if isinstance(env_out, dict):
        for value in secret_values:
            assert value not in env_out.values()
    assert reparsed["launcher"]["pool_id"] == "pool"


def _check_refusal(exc: PolicyInputError) -> None:
    assert exc.reason == "policy_input_invalid", exc.reason
    assert exc.hint
    assert len(exc.message) < 400
    assert CANARY not in exc.message


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
