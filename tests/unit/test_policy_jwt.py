"""``io.jwt.decode_verify`` / ``io.jwt.decode``: the launcher's JWT builtins for Rego."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardened_launcher.policy import PolicyEvaluationError, PolicyGate, Sanitizer
from hardened_launcher.policy.gate import check_policy_path
from hardened_launcher.policy.jwt import (
    MAX_TOKEN_CHARS,
    SUPPORTED_ALGS,
    decode,
    decode_verify,
    parse_constraints,
)
from hardened_launcher.policy.testing import run_tests
from tests.signed_run_tokens import PrivateKey, b64url, mint, public_pem, segment, sign

NOW = 1_704_067_200  # 2024-01-01T00:00:00Z, seconds
NOW_NS = NOW * 10**9
CLAIMS = {"iss": "ci", "aud": "launcher", "sub": "run", "nbf": NOW - 10, "exp": NOW + 600}
LIBRARY = Path(__file__).resolve().parents[2] / "policies"

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_WEAK = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - refused
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
P256 = ec.generate_private_key(ec.SECP256R1())
P256_OTHER = ec.generate_private_key(ec.SECP256R1())
P384 = ec.generate_private_key(ec.SECP384R1())
P521 = ec.generate_private_key(ec.SECP521R1())
ED25519 = ed25519.Ed25519PrivateKey.generate()
ED448 = ed448.Ed448PrivateKey.generate()
SECRET = b"a shared secret of enough length!"

ASYMMETRIC: list[tuple[str, PrivateKey]] = [
    ("RS256", RSA),
    ("RS384", RSA),
    ("RS512", RSA),
    ("PS256", RSA),
    ("PS384", RSA),
    ("PS512", RSA),
    ("ES256", P256),
    ("ES384", P384),
    ("ES512", P521),
    ("EdDSA", ED25519),
    ("EdDSA", ED448),
]


def cert_constraints(key: PrivateKey, **extra: object) -> dict[str, object]:
    return {"cert": public_pem(key), "time": NOW_NS, **extra}


def secret_constraints(**extra: object) -> dict[str, object]:
    return {"secret": SECRET.decode(), "time": NOW_NS, **extra}


MALFORMED = r"^io\.jwt\.decode_verify: the token is malformed$"


def verified(token: object, constraints: dict[str, object]) -> bool:
    """False when not verified; a malformed token raises (as in OPA: the run is denied)."""
    try:
        valid, header, payload = decode_verify(token, constraints)
    except ValueError as exc:
        if not re.match(MALFORMED, str(exc)):
            raise
        return False
    if not valid:
        assert header == {}
        assert payload == {}
    return valid


def self_signed_certificate(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# -- valid tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "key"), ASYMMETRIC, ids=[f"{a}-{type(k).__name__}" for a, k in ASYMMETRIC]
)
def test_asymmetric_algorithms_verify(alg: str, key: PrivateKey) -> None:
    token = mint(key, CLAIMS, alg=alg)
    valid, header, payload = decode_verify(token, cert_constraints(key, iss="ci", aud="launcher"))
    assert valid is True
    assert header == {"alg": alg, "typ": "JWT"}
    assert payload == CLAIMS


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_algorithms_verify(alg: str) -> None:
    assert verified(mint(SECRET, CLAIMS, alg=alg), secret_constraints(aud="launcher"))


def test_certificate_as_cert_constraint() -> None:
    token = mint(RSA, CLAIMS, alg="RS256")
    assert verified(
        token, {"cert": self_signed_certificate(RSA), "time": NOW_NS, "aud": "launcher"}
    )


@pytest.mark.parametrize(
    "keys",
    [
        public_pem(RSA_OTHER) + public_pem(P256),
        public_pem(P256) + public_pem(RSA_OTHER),
        public_pem(P256) + public_pem(P256),
        self_signed_certificate(RSA) + public_pem(P256),
    ],
)
def test_several_pem_blocks_are_an_error_as_in_opa(keys: str) -> None:
    # OPA: "extra data after a PEM certificate block". Accepting any block would let a token
    # signed by the second key through where OPA denies.
    with pytest.raises(ValueError, match="more than one PEM block"):
        parse_constraints({"cert": keys, "time": NOW_NS, "aud": "launcher"})


def test_pem_with_crlf_and_surrounding_text() -> None:
    pem = "issued by ops\r\n" + public_pem(P256).replace("\n", "\r\n") + "trailing note\r\n"
    assert verified(
        mint(P256, CLAIMS, alg="ES256"), {"cert": pem, "time": NOW_NS, "aud": "launcher"}
    )


def test_pem_scan_is_linear() -> None:
    start = time.perf_counter()
    with pytest.raises(ValueError, match="holds no PEM block"):
        parse_constraints({"cert": "-----BEGIN A-----\n" * 3500})
    assert time.perf_counter() - start < 0.5


def test_alg_constraint_pins_the_algorithm() -> None:
    constraints = {"cert": public_pem(RSA), "time": NOW_NS, "aud": "launcher"}
    assert verified(mint(RSA, CLAIMS, alg="RS256"), {**constraints, "alg": "RS256"})
    assert not verified(mint(RSA, CLAIMS, alg="PS256"), {**constraints, "alg": "RS256"})
    ec_constraints = {"cert": public_pem(P256), "time": NOW_NS, "aud": "launcher"}
    assert verified(mint(P256, CLAIMS, alg="ES256"), ec_constraints)
    with pytest.raises(ValueError, match="alg"):
        verified(mint(P256, CLAIMS, alg="ES256"), {**ec_constraints, "alg": "RS256"})


def test_empty_string_constraints_are_unset_like_opa() -> None:
    token = mint(SECRET, {"exp": NOW + 1}, alg="HS256")
    assert verified(token, secret_constraints(iss="", aud="", alg=""))


def test_default_time_is_now() -> None:
    now = int(time.time())
    fresh = mint(SECRET, {"exp": now + 600}, alg="HS256")
    stale = mint(SECRET, {"exp": now - 600}, alg="HS256")
    assert verified(fresh, {"secret": SECRET.decode()})
    assert not verified(stale, {"secret": SECRET.decode()})


# -- signatures that must fail -------------------------------------------------------------------


def test_tampered_payload_header_or_signature() -> None:
    token = mint(P256, CLAIMS, alg="ES256")
    head, body, sig = token.split(".")
    constraints = cert_constraints(P256, aud="launcher")
    assert not verified(f"{head}.{segment({**CLAIMS, 'sub': 'root'})}.{sig}", constraints)
    assert not verified(f"{segment({'alg': 'ES256'})}.{body}.{sig}", constraints)
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[0] ^= 1
    assert not verified(f"{head}.{body}.{b64url(bytes(raw))}", constraints)


@pytest.mark.parametrize(
    ("alg", "key", "other"), [("RS256", RSA, RSA_OTHER), ("ES256", P256, P256_OTHER)]
)
def test_wrong_key(alg: str, key: PrivateKey, other: PrivateKey) -> None:
    assert not verified(mint(key, CLAIMS, alg=alg), cert_constraints(other, aud="launcher"))


def test_wrong_secret() -> None:
    token = mint(b"another secret", CLAIMS, alg="HS256")
    assert not verified(token, secret_constraints(aud="launcher"))


def test_hmac_signature_must_match_in_full() -> None:
    token = mint(SECRET, CLAIMS, alg="HS256")
    head, body, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "=")
    constraints = secret_constraints(aud="launcher")
    assert verified(token, constraints)
    assert not verified(f"{head}.{body}.{b64url(raw[:-1] + bytes([raw[-1] ^ 1]))}", constraints)
    assert not verified(f"{head}.{body}.{b64url(raw[:16])}", constraints)
    assert not verified(f"{head}.{body}.{b64url(raw + b'x')}", constraints)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_is_refused(alg: str) -> None:
    token = f"{segment({'alg': alg})}.{segment(CLAIMS)}."
    assert not verified(token, cert_constraints(RSA, aud="launcher"))
    assert not verified(token, secret_constraints(aud="launcher"))
    signed = f"{segment({'alg': alg})}.{segment(CLAIMS)}.{b64url(b'x' * 32)}"
    assert not verified(signed, secret_constraints(aud="launcher"))


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_rsa_public_key_as_hmac_secret_is_refused(alg: str) -> None:
    """The key-confusion attack: an HS* token keyed with the verifier's public key PEM."""
    pem = public_pem(RSA)
    token = mint(pem.encode(), CLAIMS, alg=alg)
    assert not verified(token, {"cert": pem, "time": NOW_NS, "aud": "launcher"})
    # ... and the same token does verify when someone configures that text as a secret.
    assert verified(token, {"secret": pem, "time": NOW_NS, "aud": "launcher"})


def test_secret_never_verifies_asymmetric_algorithms() -> None:
    token = mint(RSA, CLAIMS, alg="RS256")
    assert not verified(token, {"secret": public_pem(RSA), "time": NOW_NS, "aud": "launcher"})


def test_key_type_must_match_alg() -> None:
    data = f"{segment({'alg': 'RS256'})}.{segment(CLAIMS)}"
    es_sig_in_rs_header = f"{data}.{b64url(sign('ES256', P256, data.encode()))}"
    assert not verified(es_sig_in_rs_header, cert_constraints(P256, aud="launcher"))
    # ES256 needs a P-256 key: a P-384 key never verifies it, nor ES384 a P-256 key.
    assert not verified(mint(P256, CLAIMS, alg="ES256"), cert_constraints(P384, aud="launcher"))
    ed = f"{segment({'alg': 'EdDSA'})}.{segment(CLAIMS)}"
    assert not verified(
        f"{ed}.{b64url(sign('EdDSA', ED25519, ed.encode()))}", cert_constraints(RSA, aud="launcher")
    )


def test_ecdsa_signature_must_be_raw_r_s_of_curve_size() -> None:
    data = f"{segment({'alg': 'ES256'})}.{segment(CLAIMS)}"
    raw = sign("ES256", P256, data.encode())
    constraints = cert_constraints(P256, aud="launcher")
    assert verified(f"{data}.{b64url(raw)}", constraints)
    assert not verified(f"{data}.{b64url(raw[:-1])}", constraints)
    assert not verified(f"{data}.{b64url(bytes(1) + raw)}", constraints)
    # A zero byte before s keeps both integers; only the exact length check refuses it.
    assert not verified(f"{data}.{b64url(raw[:32] + bytes(1) + raw[32:])}", constraints)
    der = P256.sign(data.encode(), ec.ECDSA(hashes.SHA256()))
    assert not verified(f"{data}.{b64url(der)}", constraints)
    assert not verified(f"{data}.{b64url(bytes(64))}", constraints)  # r = s = 0


def test_crit_and_nested_tokens_are_refused() -> None:
    constraints = secret_constraints(aud="launcher")
    assert not verified(mint(SECRET, CLAIMS, alg="HS256", header={"crit": ["exp"]}), constraints)
    assert not verified(mint(SECRET, CLAIMS, alg="HS256", header={"cty": "jwt"}), constraints)


# -- claims --------------------------------------------------------------------------------------


def test_expiry_is_exclusive_and_not_before_inclusive() -> None:
    token = mint(SECRET, {"nbf": NOW, "exp": NOW + 10}, alg="HS256")

    def at(time_ns: int) -> dict[str, object]:
        return {"secret": SECRET.decode(), "time": time_ns}

    assert verified(token, at(NOW * 10**9))
    assert verified(token, at((NOW + 10) * 10**9 - 1))
    assert not verified(token, at((NOW + 10) * 10**9))  # expired
    assert not verified(token, at(NOW * 10**9 - 1))  # not yet valid


def test_fractional_exp_compared_exactly() -> None:
    token = mint(SECRET, {"exp": NOW + 0.5}, alg="HS256")
    assert verified(token, {"secret": SECRET.decode(), "time": NOW_NS + 499_999_999})
    assert not verified(token, {"secret": SECRET.decode(), "time": NOW_NS + 500_000_000})


@pytest.mark.parametrize("claim", ["exp", "nbf"])
@pytest.mark.parametrize("value", ["1", True, None, [1], {"a": 1}])
def test_non_numeric_time_claims_fail(claim: str, value: object) -> None:
    token = mint(SECRET, {claim: value}, alg="HS256")
    assert not verified(token, secret_constraints())


def test_expired_and_not_yet_valid_asymmetric() -> None:
    expired = mint(ED25519, {**CLAIMS, "exp": NOW - 1}, alg="EdDSA")
    early = mint(ED25519, {**CLAIMS, "nbf": NOW + 1}, alg="EdDSA")
    assert not verified(expired, cert_constraints(ED25519, aud="launcher"))
    assert not verified(early, cert_constraints(ED25519, aud="launcher"))


def test_issuer() -> None:
    token = mint(SECRET, CLAIMS, alg="HS256")
    assert verified(token, secret_constraints(iss="ci", aud="launcher"))
    assert not verified(token, secret_constraints(iss="evil", aud="launcher"))
    no_iss = mint(SECRET, {"exp": NOW + 1}, alg="HS256")
    assert not verified(no_iss, secret_constraints(iss="ci"))
    odd_iss = mint(SECRET, {"iss": ["ci"]}, alg="HS256")
    assert not verified(odd_iss, secret_constraints(iss="ci"))


def test_audience_rules_follow_opa() -> None:
    plain = mint(SECRET, {"aud": "launcher"}, alg="HS256")
    listed = mint(SECRET, {"aud": ["other", "launcher"]}, alg="HS256")
    none = mint(SECRET, {"sub": "x"}, alg="HS256")
    assert verified(plain, secret_constraints(aud="launcher"))
    assert verified(listed, secret_constraints(aud="launcher"))
    assert not verified(plain, secret_constraints(aud="other-service"))
    assert not verified(plain, secret_constraints())  # aud claim, no aud constraint
    assert not verified(none, secret_constraints(aud="launcher"))  # constraint, no claim
    assert verified(none, secret_constraints())
    assert not verified(mint(SECRET, {"aud": 7}, alg="HS256"), secret_constraints(aud="7"))


# -- malformed tokens ----------------------------------------------------------------------------

GOOD_HS = mint(SECRET, {"exp": NOW + 60}, alg="HS256")
HEAD, BODY, SIG = GOOD_HS.split(".")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c.d",
        f"{HEAD}.{BODY}",
        f"{HEAD}.{BODY}.{SIG}.",
        f"{HEAD}.{BODY}.{SIG}=",  # padding
        f"{HEAD}=.{BODY}.{SIG}",
        f"{HEAD}.{BODY}!.{SIG}",  # not base64url
        f"{HEAD}.{BODY}.{SIG[:-1]}+",  # standard, not url-safe, alphabet
        f"{HEAD}.{BODY}.{SIG}AB",  # length 1 mod 4
        f"{HEAD}.{BODY}.é{SIG}",
        f" {GOOD_HS}",
        f"{GOOD_HS}\n",
        "...",
        f"{b64url(b'not json')}.{BODY}.{SIG}",
        f"{segment(['alg', 'HS256'])}.{BODY}.{SIG}",
    ],
)
def test_malformed_tokens_are_not_verified(token: str) -> None:
    assert verified(GOOD_HS, secret_constraints())
    with pytest.raises(ValueError, match=MALFORMED):
        decode_verify(token, secret_constraints())
    with pytest.raises(ValueError, match=r"^io\.jwt\.decode: the token is malformed$"):
        decode(token)


def test_non_canonical_base64_is_refused() -> None:
    # The last character of a 43-char segment carries 2 spare bits; setting them keeps the bytes.
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = last.index(SIG[-1])
    assert index % 4 == 0
    twin = SIG[:-1] + last[index + 1]
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(SIG + "=")
    assert not verified(f"{HEAD}.{BODY}.{twin}", secret_constraints())


@pytest.mark.parametrize(
    "payload",
    [
        b'{"exp": 1, "exp": 99999999999}',  # duplicate key
        b'{"n": NaN}',
        b'{"n": Infinity}',
        b'{"n": 1e400}',
        b'{"n": 100000000000000000000000}',  # beyond 64 bits: the engine cannot hold it
        b"[1]",
        b'"text"',
        b"\xff\xfe",
        b"[" * 40 + b"]" * 40,
        ('{"a":' * 40 + "1" + "}" * 40).encode(),
    ],
)
def test_payloads_the_engine_cannot_hold_are_not_verified(payload: bytes) -> None:
    data = f"{HEAD}.{b64url(payload)}"
    token = f"{data}.{b64url(sign('HS256', SECRET, data.encode()))}"
    assert not verified(token, secret_constraints())


def test_deep_but_bounded_claims_are_fine() -> None:
    claims = {"x": json.loads('{"a":' * 30 + "1" + "}" * 30), "big": 2**64 - 1, "neg": -(2**63)}
    assert verified(mint(SECRET, claims, alg="HS256"), secret_constraints())


@pytest.mark.parametrize("token", [None, 1, 1.5, True, ["a", "b", "c"], {"a": 1}, b"a.b.c"])
def test_non_string_tokens_are_not_verified(token: object) -> None:
    assert not verified(token, secret_constraints())


def test_oversized_tokens_are_refused_even_when_validly_signed() -> None:
    small = mint(SECRET, {"pad": "x" * 100}, alg="HS256")
    huge = mint(SECRET, {"pad": "x" * MAX_TOKEN_CHARS}, alg="HS256")
    assert verified(small, secret_constraints())
    assert len(huge) > MAX_TOKEN_CHARS
    assert not verified(huge, secret_constraints())
    start = time.perf_counter()
    assert not verified("A" * (16 * 1024 * 1024), secret_constraints())
    assert time.perf_counter() - start < 1.0


# -- constraints ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("constraints", "message"),
    [
        ("not an object", "constraints must be an object"),
        ({}, "cert or secret is required"),
        ({"secret": ""}, "cert or secret is required"),
        ({"secret": "s", "cert": public_pem(RSA)}, "not both"),
        ({"secret": "s", "typ": "JWT"}, "unknown token validation constraint 'typ'"),
        ({"secret": 7}, "constraint secret must be a string"),
        ({"cert": "not a pem"}, "holds no PEM block"),
        ({"cert": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}, "not a public"),
        ({"cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}, "not a public"),
        ({"cert": public_pem(RSA_WEAK)}, "under 2048 bits"),
        ({"cert": public_pem(RSA) * 17}, "more than 16 PEM blocks"),
        ({"cert": "x" * 70_000}, "longer than"),
        ({"secret": "s", "alg": "none"}, "constraint alg must be one of"),
        ({"secret": "s", "alg": "RS256"}, "does not fit"),
        ({"cert": public_pem(RSA), "alg": "HS256"}, "does not fit"),
        ({"cert": public_pem(P256), "alg": "ES384"}, "does not fit"),
        ({"secret": "s", "time": "now"}, "constraint time must be a number"),
        ({"secret": "s", "time": True}, "constraint time must be a number"),
        ({"secret": "s", "iss": 1}, "constraint iss must be a string"),
        ({"secret": "s", "aud": ["a"]}, "constraint aud must be a string"),
    ],
)
def test_bad_constraints_raise_without_values(constraints: object, message: str) -> None:
    with pytest.raises(ValueError, match=r"^io\.jwt\.decode_verify: ") as caught:
        decode_verify(GOOD_HS, constraints)
    assert message in str(caught.value)
    assert GOOD_HS not in str(caught.value)
    assert "AAAA" not in str(caught.value)


def test_constraint_errors_come_before_token_checks() -> None:
    with pytest.raises(ValueError, match="cert or secret"):
        decode_verify("garbage", {})


def test_supported_algorithms() -> None:
    assert {"RS256", "PS256", "ES256", "ES384", "EdDSA", "HS256"} <= SUPPORTED_ALGS
    assert "none" not in SUPPORTED_ALGS
    assert parse_constraints({"secret": "s"}, now_ns=lambda: 5).time_ns == 5


# -- io.jwt.decode -------------------------------------------------------------------------------


def test_decode_returns_header_payload_and_signature_hex_without_verifying() -> None:
    token = mint(b"whatever", CLAIMS, alg="HS256")
    header, payload, signature = decode(token)
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert payload == CLAIMS
    assert bytes.fromhex(signature) == base64.urlsafe_b64decode(token.split(".")[2] + "=")


# -- fuzz ----------------------------------------------------------------------------------------

B64URL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), B64URL, st.binary().map(lambda b: b.decode("latin-1"))))
def test_arbitrary_strings_never_verify(token: str) -> None:
    assert not verified(token, secret_constraints())
    assert not verified(token, cert_constraints(P256))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(header=JSON, payload=JSON, signature=st.binary(max_size=80), sign_it=st.booleans())
def test_structured_tokens_never_raise(
    header: object, payload: object, signature: bytes, sign_it: bool
) -> None:
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(payload).encode())
    if sign_it:
        signature = sign("HS256", SECRET, f"{head}.{body}".encode())
    token = f"{head}.{body}.{b64url(signature)}"
    if not isinstance(header, dict):
        with pytest.raises(ValueError, match=MALFORMED):
            decode_verify(token, secret_constraints())
        return
    try:
        valid, _, claims = decode_verify(token, secret_constraints())
    except ValueError as exc:
        # a header the engine cannot hold (an integer beyond 64 bits): malformed
        assert re.match(MALFORMED, str(exc))  # noqa: PT017 - depends on the generated header
        return
    if valid:
        assert isinstance(header, dict)
        assert header.get("alg") == "HS256"
        assert claims == payload


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(["cert", "secret", "alg", "iss", "aud", "time", "x"]), JSON))
def test_arbitrary_constraints_raise_only_value_error(constraints: dict[str, object]) -> None:
    message = ""
    try:
        result = decode_verify(GOOD_HS, constraints)
    except ValueError as exc:
        message = str(exc)
    else:
        assert result[0] in (True, False)
    assert not message or message.startswith("io.jwt.decode_verify: ")


# -- in the engine -------------------------------------------------------------------------------

POLICY = """package spacelift
import rego.v1
constraints := {"secret": data.cfg.secret, "time": input.now}
deny contains "unsigned" if {
	[valid, _, _] := io.jwt.decode_verify(input.token, constraints)
	not valid
}
deny contains sprintf("sub %s", [payload.sub]) if {
	[true, _, payload] := io.jwt.decode_verify(input.token, constraints)
}
deny contains sprintf("alg %s", [io.jwt.decode(input.token)[0].alg]) if input.decode
"""


@pytest.mark.parametrize("isolated", [False, True], ids=["inline", "worker-process"])
def test_builtins_in_the_gate(tmp_path: Path, isolated: bool) -> None:
    (tmp_path / "policy.rego").write_text(POLICY)
    (tmp_path / "cfg.json").write_text(json.dumps({"cfg": {"secret": SECRET.decode()}}))
    sanitizer = Sanitizer.random()
    compiled = check_policy_path(tmp_path, sanitizer=sanitizer)
    token = mint(SECRET, {"sub": "ops", "exp": NOW + 5}, alg="HS256")
    with PolicyGate.start(compiled, sanitizer=sanitizer, isolated=isolated) as gate:
        assert gate.evaluate({"token": token, "now": NOW_NS}).deny == ("sub ops",)
        assert gate.evaluate({"token": token, "now": NOW_NS + 5 * 10**9}).deny == ("unsigned",)
        with pytest.raises(PolicyEvaluationError):  # malformed: an error in OPA too
            gate.evaluate({"token": "x.y.z", "now": NOW_NS})
        both = gate.evaluate({"token": token, "now": NOW_NS, "decode": True}).deny
        assert both == ("alg HS256", "sub ops")
        with pytest.raises(PolicyEvaluationError) as caught:
            gate.evaluate({"token": "secret-looking.token.text", "now": NOW_NS, "decode": True})
        assert "secret-looking" not in caught.value.message
        assert "the token is malformed" in caught.value.message


def test_constraint_errors_are_evaluation_errors_without_the_token(tmp_path: Path) -> None:
    text = (
        "package spacelift\nimport rego.v1\n"
        'deny contains "x" if io.jwt.decode_verify(input.token, {"cert": "nope"})[0]\n'
    )
    (tmp_path / "policy.rego").write_text(text)
    sanitizer = Sanitizer.random()
    compiled = check_policy_path(tmp_path, sanitizer=sanitizer)
    with (
        PolicyGate.start(compiled, sanitizer=sanitizer, isolated=False) as gate,
        pytest.raises(PolicyEvaluationError) as caught,
    ):
        gate.evaluate({"token": GOOD_HS})
    assert "constraint cert holds no PEM block" in caught.value.message
    assert GOOD_HS not in caught.value.message
    assert caught.value.message.startswith("evaluating data.spacelift.deny: policy.rego:3:")


def test_policy_test_runner_has_the_builtins(tmp_path: Path) -> None:
    token = mint(SECRET, {"sub": "ops"}, alg="HS256")
    (tmp_path / "jwt_test.rego").write_text(
        "package t\nimport rego.v1\n"
        f'test_verify if io.jwt.decode_verify("{token}", {{"secret": "{SECRET.decode()}"}})[0]\n'
        f'test_decode if io.jwt.decode("{token}")[1].sub == "ops"\n'
    )
    report = run_tests([tmp_path])
    assert [r.name for r in report.results] == ["test_verify", "test_decode"]
    assert not report.failed


# -- the library policy and its fixtures ---------------------------------------------------------


def test_regenerated_fixtures_pass_the_library_tests(tmp_path: Path) -> None:
    """The committed fixtures are one run of tests/signed_run_tokens.py; a fresh run passes too."""
    from tests.signed_run_tokens import main as regenerate  # noqa: PLC0415

    for name in ("signed_run.rego", "signed_run_test.rego"):
        (tmp_path / name).write_text((LIBRARY / name).read_text())
    assert regenerate(["signed_run_tokens", str(tmp_path / "signed_run_fixtures_test.rego")]) == 0
    report = run_tests([tmp_path], coverage=True)
    assert len(report.results) >= 25
    assert not report.failed
    assert report.coverage is not None
    assert report.coverage.not_covered == 0


def test_committed_fixture_tokens_verify_against_their_key() -> None:
    text = (LIBRARY / "signed_run_fixtures_test.rego").read_text()
    pem = text.split("public_key := `", 1)[1].split("`", 1)[0]
    good = json.loads(text.split("\ngood := ", 1)[1].splitlines()[0])
    issued = int(text.split("\nissued_at := ", 1)[1].splitlines()[0])
    constraints = {"cert": pem, "time": (issued + 60) * 10**9, "aud": "spacelift-launcher"}
    valid, header, payload = decode_verify(good, constraints)
    assert valid
    assert header["alg"] == "ES256"
    assert payload["stack"] == "prod-db"
