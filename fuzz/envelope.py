"""Fuzz harness for run-state envelopes: the parser and every check of ``open_run_state``.

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/envelope.py fuzz/corpus/envelope -max_total_time=300

``test_one_input`` also works without atheris (the unit tests replay the corpus through it).
Regenerate the seed corpus with ``python fuzz/envelope.py --make-seeds fuzz/corpus/envelope``.

The pool key and the signing key are derived from fixed constants, so the seeds sealed with
them pass every check and mutations of them reach the deep checks. These keys protect nothing.

Properties checked for every input, beyond "no exception other than EnvelopeError":
- a header that parses re-encodes to the same bytes;
- ``open_run_state`` refuses with the parser's own reason when the input does not parse;
- only an input that parses can open, and its plaintext can be read and is wiped.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from hardened_launcher.envelope import (
    EnvelopeError,
    MemoryReplayCache,
    open_run_state,
    parse_envelope,
    seal_run_state,
)
from hardened_launcher.envelope.format import encode_header

FUZZ_NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
FUZZ_POOL_ID = "01HFUZZPOOL"
MAX_FUZZ_ENVELOPE_BYTES = 64 * 1024
# Fixed, public test keys: deterministic so the committed seeds stay valid.
POOL_KEY = ec.derive_private_key(0x5EED_0F_E1_7E_10_BE_5EED, ec.SECP256R1())
SIGNING_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(b"fuzz-envelope-signer-key-32bytes")
OPENED = "opened"


def check(data: bytes) -> str:
    """Open ``data`` with the fixed keys; return ``"opened"`` or the refusal reason."""
    parse_reason: str | None
    try:
        parsed = parse_envelope(data)
    except EnvelopeError as exc:
        parse_reason = exc.reason
    else:
        parse_reason = None
        header = encode_header(
            algorithm=parsed.algorithm,
            key_id=parsed.key_id,
            run_id=parsed.run_id,
            pool_id=parsed.pool_id,
            issued_at_seconds=parsed.issued_at_seconds,
            expires_at_seconds=parsed.expires_at_seconds,
            key_material=parsed.key_material,
            nonce=parsed.nonce,
            ciphertext_bytes=parsed.ciphertext_bytes,
        )
        if header != bytes(parsed.header):
            raise AssertionError("a parsed header did not re-encode to the same bytes")
    try:
        opened = open_run_state(
            data,
            pool_private_key=POOL_KEY,
            signer_public_key=SIGNING_KEY.public_key(),
            expected_pool_id=FUZZ_POOL_ID,
            replay_cache=MemoryReplayCache(),
            now=FUZZ_NOW,
            clock_skew=timedelta(minutes=5),
            max_envelope_bytes=MAX_FUZZ_ENVELOPE_BYTES,
        )
    except EnvelopeError as exc:
        if (
            parse_reason is not None
            and len(data) <= MAX_FUZZ_ENVELOPE_BYTES
            and exc.reason != parse_reason
        ):
            raise AssertionError(f"parse said {parse_reason}, open said {exc.reason}") from exc
        return exc.reason
    if parse_reason is not None:
        raise AssertionError("open_run_state accepted bytes the parser refuses")
    with opened:
        opened.plaintext.reveal()
    if not opened.plaintext.wiped:
        raise AssertionError("the plaintext was not wiped by the context manager")
    return OPENED


def test_one_input(data: bytes) -> None:
    check(data)


def _seal(
    plaintext: bytes,
    *,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = POOL_KEY,
    run_id: str = "01HFUZZRUN",
    pool_id: str = FUZZ_POOL_ID,
) -> bytes:
    return seal_run_state(
        plaintext,
        pool_public_key=key.public_key(),
        signing_key=SIGNING_KEY,
        run_id=run_id,
        pool_id=pool_id,
        issued_at=FUZZ_NOW,
        expires_at=FUZZ_NOW + timedelta(minutes=10),
    )


def make_seeds(directory: Path) -> None:
    """Write the seed corpus; each file name starts with the outcome it must produce."""
    small = _seal(b'{"env": {"TF_VAR_x": "1"}}')
    long_ids = _seal(b"x" * 200, run_id="R" * 128, pool_id=FUZZ_POOL_ID)
    throwaway_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    seeds = {
        "opened-p256-small": small,
        "opened-p256-empty": _seal(b""),
        "opened-p256-long-run-id": long_ids,
        "envelope_wrong_key-rsa2048": _seal(b"state", key=throwaway_rsa),
        "envelope_pool_mismatch-p256": _seal(b"state", pool_id="01HOTHERPOOL"),
        "envelope_truncated-p256": small[:-1],
        "envelope_trailing_bytes-p256": small + b"\x00",
        "envelope_bad_magic": b"HLRX" + small[4:],
        "envelope_version_unsupported": small[:4] + b"\x02" + small[5:],
        "envelope_algorithm_unsupported": small[:5] + b"\x09" + small[6:],
        "envelope_signature_invalid-p256": small[:-1] + bytes((small[-1] ^ 1,)),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (directory / f"{name}.bin").write_bytes(data)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make-seeds":
        make_seeds(Path(sys.argv[2]))
        sys.exit(0)
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
