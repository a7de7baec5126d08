"""The run ticket (envelope/ticket.py): signed, bounded, strict; the spec must equal its manifest.

Hostile members of each class: altered bytes, other signers, wrong bindings, malformed JSON
(duplicates, NaN, depth, size, extra and missing fields, wrong types, path-like binary names),
and specs that differ from the judged manifest in any one field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.audit.canonical import canonical_json
from hardened_launcher.envelope.ticket import (
    MAX_TICKET_BYTES,
    TICKET_DOMAIN,
    RunManifest,
    TicketError,
    check_spec_matches,
    manifest_from_spec,
    pool_sanitize_key,
    sign_ticket,
    verify_ticket,
)
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.policy.sanitize import Sanitizer

CANARY = "CANARY-ticket-93be1f"
SIGNER = ed25519.Ed25519PrivateKey.generate()
SANITIZER = Sanitizer(b"t" * 32)
ENVELOPE = b"sealed bytes"


def spec_document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "version": 1,
        "run_id": "run-1",
        "run_type": "wo",
        "image": "busybox",
        "phases": [{"name": "main", "commands": ["echo hi", "terraform apply"]}],
        "env": {"TF_IN_AUTOMATION": "1"},
        "secret_env": {"AWS_SECRET": CANARY},
        "files": [
            {"path": "vars.tfvars", "content": "a = 1\n"},
            {"path": "secret.json", "content": CANARY, "secret": True},
        ],
        "binaries": [{"name": "tf", "version": "1.9.0"}],
        "limits": {"memory_bytes": 1 << 28, "pids": 64, "cpus": 0.5},
        "metadata": {"stack_slug": "prod", "commit_sha": "a" * 40},
    }
    document.update(changes)
    return document


def manifest(**changes: Any) -> RunManifest:
    return manifest_from_spec(run_spec_from_mapping(spec_document(**changes)), SANITIZER)


def verify(encoded: bytes, signature: bytes, **expect: str) -> Any:
    bindings = {"run_id": "run-1", "pool_id": "pool-a", "worker_id": "w-1", "lease_id": "l-1"}
    bindings.update(expect)
    return verify_ticket(encoded, signature, signer_public_key=SIGNER.public_key(), **bindings)


def signed(document: object) -> tuple[bytes, bytes]:
    encoded = json.dumps(document).encode()
    return encoded, SIGNER.sign(TICKET_DOMAIN + encoded)


def good_document() -> dict[str, Any]:
    ticket = sign_ticket(
        manifest(),
        pool_id="pool-a",
        worker_id="w-1",
        lease_id="l-1",
        envelope=ENVELOPE,
        signing_key=SIGNER,
    )
    return dict(json.loads(ticket.encoded))


def test_the_manifest_holds_no_secret_byte_and_round_trips() -> None:
    m = manifest()
    assert CANARY not in m.encoded().decode()
    ticket = sign_ticket(
        m, pool_id="pool-a", worker_id="w-1", lease_id="l-1", envelope=ENVELOPE, signing_key=SIGNER
    )
    verified = verify(ticket.encoded, ticket.signature)
    assert verified.manifest.document == m.document
    assert verified.manifest.secret_env == {"AWS_SECRET": SANITIZER.sanitize(CANARY)}
    assert verified.manifest.binaries == (("tf", "1.9.0"),)
    assert len(verified.envelope_sha256) == 64
    check_spec_matches(run_spec_from_mapping(spec_document()), verified.manifest, SANITIZER)


@pytest.mark.parametrize(
    ("binding", "reason"),
    [
        ({"run_id": "run-2"}, "ticket_run_mismatch"),
        ({"pool_id": "pool-b"}, "ticket_pool_mismatch"),
        ({"worker_id": "w-2"}, "ticket_worker_mismatch"),
        ({"lease_id": "l-2"}, "ticket_lease_mismatch"),
    ],
)
def test_a_ticket_is_bound_to_its_run_pool_worker_and_lease(
    binding: dict[str, str], reason: str
) -> None:
    encoded, signature = signed(good_document())
    with pytest.raises(TicketError) as caught:
        verify(encoded, signature, **binding)
    assert caught.value.reason == reason


def test_another_signer_and_a_wrong_domain_are_refused() -> None:
    encoded, _ = signed(good_document())
    for signature in (
        ed25519.Ed25519PrivateKey.generate().sign(TICKET_DOMAIN + encoded),
        SIGNER.sign(encoded),  # no domain separation: an audit checkpoint signature, say
        b"",
        b"\x00" * 63,
        b"\x00" * 65,
    ):
        with pytest.raises(TicketError) as caught:
            verify(encoded, signature)
        assert caught.value.reason == "ticket_signature_invalid"


def _mutations() -> list[tuple[str, Any]]:
    doc = good_document()
    out: list[tuple[str, Any]] = []
    out.append(("extra field", {**doc, "extra": 1}))
    out += [(f"missing {k}", {x: v for x, v in doc.items() if x != k}) for k in doc]
    out.append(("version 2", {**doc, "version": 2}))
    out.append(("version true", {**doc, "version": True}))
    out.append(("digest not hex", {**doc, "envelope_sha256": "z" * 64}))
    out.append(("digest short", {**doc, "envelope_sha256": "a" * 63}))
    m = doc["manifest"]
    out.append(("manifest extra", {**doc, "manifest": {**m, "x": 1}}))
    out += [
        (f"manifest missing {k}", {**doc, "manifest": {x: v for x, v in m.items() if x != k}})
        for k in m
    ]
    for key, bad in (
        ("run_type", "rw"),
        ("image", 7),
        ("env", []),
        ("env", {"A": 1}),
        ("secret_env", {"A": None}),
        ("metadata", {"k": ["v"]}),
        ("limits", {"memory_bytes": True}),
        ("limits", {"swap": 1}),
        ("phases", "echo"),
        ("phases", [{"name": "main"}]),
        ("phases", [{"name": "main", "commands": "echo"}]),
        ("files", [{"path": "a"}]),
        ("binaries", [{"name": "../../etc", "version": "1"}]),
        ("binaries", [{"name": "tf", "version": "../1"}]),
        ("binaries", [{"name": "tf/x", "version": "1"}]),
        ("binaries", [{"name": "tf", "version": "1", "url": "x"}]),
        ("binaries", [{"name": "tf", "version": "1"}] * 1025),
    ):
        out.append((f"manifest {key}={str(bad)[:30]}", {**doc, "manifest": {**m, key: bad}}))
    return out


@pytest.mark.parametrize(("name", "document"), _mutations(), ids=[n for n, _ in _mutations()])
def test_malformed_tickets_are_refused_even_when_signed(name: str, document: Any) -> None:
    encoded, signature = signed(document)
    with pytest.raises(TicketError) as caught:
        verify(encoded, signature)
    assert caught.value.reason.startswith("ticket_")
    assert CANARY not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        b'{"version": 1, "version": 1}',
        b'{"version": NaN}',
        b"[1, 2]",
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50 + b"1" + b"}" * 50,
    ],
)
def test_hostile_json_is_refused_with_one_error(text: bytes) -> None:
    signature = SIGNER.sign(TICKET_DOMAIN + text)
    with pytest.raises(TicketError):
        verify(text, signature)


def test_an_oversized_ticket_is_refused_before_its_signature_is_checked() -> None:
    with pytest.raises(TicketError) as caught:
        verify(b" " * (MAX_TICKET_BYTES + 1), b"x" * 64)
    assert caught.value.reason == "ticket_too_large"
    with pytest.raises(TicketError) as caught:
        sign_ticket(
            manifest(env={f"V{i}": "x" * 1000 for i in range(120)}),
            pool_id="p",
            worker_id="w",
            lease_id="l",
            envelope=b"",
            signing_key=SIGNER,
        )
    assert caught.value.reason == "ticket_too_large"


@pytest.mark.parametrize(
    "changes",
    [
        {"image": "alpine"},
        {"run_type": "ro"},
        {"phases": [{"name": "main", "commands": ["echo hi"]}]},
        {"env": {"TF_IN_AUTOMATION": "0"}},
        {"env": {}},
        {"secret_env": {"AWS_SECRET": CANARY + "x"}},
        {"secret_env": {"OTHER": CANARY}},
        {"files": [{"path": "vars.tfvars", "content": "a = 2\n"}]},
        {"binaries": [{"name": "tf", "version": "1.9.1"}]},
        {"limits": {"memory_bytes": 1 << 29}},
        {"metadata": {"stack_slug": "dev", "commit_sha": "a" * 40}},
    ],
)
def test_a_spec_that_differs_from_the_judged_manifest_is_refused(changes: dict[str, Any]) -> None:
    judged = manifest()
    spec = run_spec_from_mapping(spec_document(**changes))
    with pytest.raises(TicketError) as caught:
        check_spec_matches(spec, judged, SANITIZER)
    assert caught.value.reason == "manifest_mismatch"
    assert CANARY not in str(caught.value)


def test_the_pool_sanitize_key_is_stable_per_pool_and_differs_between_pools() -> None:
    key_a = pool_sanitize_key(SIGNER, "pool-a")
    assert key_a == pool_sanitize_key(SIGNER, "pool-a")
    assert key_a != pool_sanitize_key(SIGNER, "pool-b")
    assert key_a != pool_sanitize_key(ed25519.Ed25519PrivateKey.generate(), "pool-a")
    assert len(key_a) == 32


@settings(max_examples=80, deadline=None)
@given(
    env=st.dictionaries(
        st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True),
        st.text(max_size=40),
        max_size=6,
    ),
    secrets=st.dictionaries(
        st.from_regex(r"S[A-Z0-9_]{0,10}", fullmatch=True), st.text(min_size=1), max_size=4
    ),
)
def test_property_manifests_round_trip_and_never_hold_secret_values(
    env: dict[str, str], secrets: dict[str, str]
) -> None:
    env = {k: v for k, v in env.items() if k not in secrets and "\x00" not in v}
    try:
        spec = run_spec_from_mapping(spec_document(env=env, secret_env=secrets, files=[]))
    except Exception:  # noqa: BLE001 - values the spec grammar refuses are out of scope here
        return
    m = manifest_from_spec(spec, SANITIZER)
    encoded = m.encoded()
    assert encoded == canonical_json(json.loads(encoded))
    plain = json.dumps(spec_document(env=env, secret_env={}, files=[]))
    for value in secrets.values():
        if len(value) >= 8 and value not in plain and value.isalnum() and value.isascii():
            assert value.encode() not in encoded
    ticket = sign_ticket(
        m, pool_id="pool-a", worker_id="w-1", lease_id="l-1", envelope=b"", signing_key=SIGNER
    )
    check_spec_matches(spec, verify(ticket.encoded, ticket.signature).manifest, SANITIZER)
