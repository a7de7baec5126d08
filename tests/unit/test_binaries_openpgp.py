"""The OpenPGP layer with in-process pysequoia keys: every refusal has its own reason."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pysequoia
import pytest
from pysequoia import Cert, Sig
from pysequoia.packet import PacketPile, SignatureType, Tag

from hardened_launcher.binaries import openpgp
from hardened_launcher.binaries.openpgp import (
    MAX_KEYRING_BYTES,
    MAX_SIGNATURE_BYTES,
    DetachedSignature,
    Keyring,
    normalize_fingerprint,
    normalize_pins,
    verify_detached,
)
from hardened_launcher.errors import (
    ConfigurationError,
    InputFileError,
    LauncherError,
    UntrustedInputError,
)
from tests.unit.test_binaries_support import (
    OPENPGP_MD5,
    OPENPGP_SHA1,
    TestKey,
    keyring_of,
    make_key,
    now_plus,
    redated_signature,
    revoked,
    with_hash_octet,
)

DATA = b"0000000000000000000000000000000000000000000000000000000000000000  tool\n"
BACKTRACE_TEXT = "something failed\n\nStack backtrace:\n   0: anyhow::Error::msg\n   1: sequoia"


@pytest.fixture(scope="module")
def release() -> TestKey:
    return make_key()


@pytest.fixture(scope="module")
def stranger() -> TestKey:
    return make_key("Stranger <x@example.net>")


def detached(key: TestKey, data: bytes = DATA, *, armor: bool = True) -> DetachedSignature:
    return DetachedSignature.from_bytes(key.sign(data, armor=armor))


def refusal(call: object, *args: object, **kwargs: object) -> LauncherError:
    assert callable(call)
    with pytest.raises(LauncherError) as caught:
        call(*args, **kwargs)
    return caught.value


# ------------------------------------------------------------------------------ fingerprints


def test_fingerprints_are_normalised_from_gpg_output_form(release: TestKey) -> None:
    fpr = release.fingerprint
    spaced = " ".join(fpr[i : i + 4].upper() for i in range(0, 40, 4))
    assert normalize_fingerprint(spaced) == fpr
    assert normalize_fingerprint("0x" + fpr.upper()) == fpr
    assert normalize_fingerprint(f"\t{fpr}\n") == fpr


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0123456789ABCDEF", "release_key_short_id"),
        ("89ABCDEF", "release_key_short_id"),
        ("", "release_key_fingerprint_invalid"),
        ("z" * 40, "release_key_fingerprint_invalid"),
        ("a" * 41, "release_key_fingerprint_invalid"),
        ("a" * 39, "release_key_fingerprint_invalid"),
    ],
)
def test_bad_fingerprints_are_configuration_errors(text: str, reason: str) -> None:
    error = refusal(normalize_fingerprint, text)
    assert isinstance(error, ConfigurationError)
    assert error.reason == reason


def test_v6_length_fingerprint_is_accepted() -> None:
    assert normalize_fingerprint("AB" * 32) == "ab" * 32


def test_empty_pin_list_denies() -> None:
    error = refusal(normalize_pins, [])
    assert isinstance(error, ConfigurationError)
    assert error.reason == "no_pinned_keys"
    assert "HL_RELEASE_KEY_FINGERPRINTS" in error.hint


def test_pins_deduplicate_across_spellings(release: TestKey) -> None:
    fpr = release.fingerprint
    assert normalize_pins([fpr, fpr.upper(), " ".join(fpr)]) == frozenset({fpr})


# ----------------------------------------------------------------------------------- keyring


def test_keyring_reads_concatenated_armored_blocks_and_merges_duplicates(
    release: TestKey, stranger: TestKey
) -> None:
    data = release.armored() + b"\n" + stranger.armored() + release.armored()
    ring = Keyring.from_bytes(data)
    assert sorted(ring.fingerprints) == sorted([release.fingerprint, stranger.fingerprint])


def test_keyring_reads_concatenated_binary_keys(release: TestKey, stranger: TestKey) -> None:
    ring = Keyring.from_bytes(bytes(stranger.cert) + bytes(release.cert))
    assert ring.fingerprints == (stranger.fingerprint, release.fingerprint)


def test_binary_keys_after_armored_ones_are_refused_not_dropped(
    release: TestKey, stranger: TestKey
) -> None:
    error = refusal(Keyring.from_bytes, release.armored() + bytes(stranger.cert))
    assert error.reason == "keyring_malformed"


def test_keyring_exposes_subkeys_with_their_capabilities(release: TestKey) -> None:
    (key,) = keyring_of(release.cert).keys
    assert key.primary.fingerprint == release.fingerprint
    assert [sub.signing_capable for sub in key.subkeys] == [True, False]
    assert all(sub.expiration is None for sub in key.subkeys)


# Regression: the gpg integration fixture once bound a subkey ten days before its primary key
# existed. Sequoia rejects such a binding and writes the signatures it rejects after the *last*
# subkey, so the gate counted that subkey as bound (and refused a signature by it as expired)
# or as unbound (refused as not pinned) depending on how Sequoia happened to sort the subkeys.
def test_binding_dated_before_its_primary_key_binds_no_subkey_wherever_sequoia_puts_it() -> None:
    key = make_key()
    packets = list(PacketPile.from_bytes(bytes(key.cert)))
    primary_created = packets[0].key_created
    assert primary_created is not None
    positions = [i for i, packet in enumerate(packets) if packet.tag == Tag.PublicSubkey]
    assert len(positions) == 2  # the signing subkey sorts first, the encryption subkey last
    for at in positions:
        binding = packets[at + 1]
        assert binding.signature_type == SignatureType.SubkeyBinding
        assert binding.body is not None
        before_primary = redated_signature(binding.body, primary_created - timedelta(days=10))
        replaced = [*packets[: at + 1], *PacketPile.from_bytes(before_primary), *packets[at + 2 :]]
        (ring_key,) = keyring_of(Cert.from_packets(replaced)).keys
        bound = [sub.fingerprint for sub in ring_key.subkeys]
        others = [packets[i].fingerprint for i in positions if i != at]
        assert bound == others, f"subkey {at} bound by a binding older than its primary key"
        if at == positions[0]:
            # The signing subkey is not part of the key: its signatures are never accepted.
            ring = Keyring(keys=(ring_key,))
            error = refusal(verify_detached, DATA, detached(key), ring, [key.fingerprint])
            assert error.reason == "signing_key_not_pinned"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"garbage", "keyring_malformed"),
        (b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64\n", "keyring_malformed"),
        (b"", "keyring_empty"),
        (b"\x00" * (MAX_KEYRING_BYTES + 1), "keyring_too_large"),
    ],
)
def test_bad_keyrings_are_configuration_errors(data: bytes, reason: str) -> None:
    error = refusal(Keyring.from_bytes, data, source="k.asc")
    assert isinstance(error, ConfigurationError)
    assert error.reason == reason
    assert "Stack backtrace" not in str(error)
    assert "\n" not in error.detail


def test_keyring_with_secret_keys_is_refused(release: TestKey) -> None:
    error = refusal(Keyring.from_bytes, bytes(release.tsk))
    assert error.reason == "keyring_has_secret_keys"


def test_missing_keyring_file_is_an_input_file_error(tmp_path: Path) -> None:
    error = refusal(Keyring.from_file, tmp_path / "absent.asc")
    assert isinstance(error, InputFileError)
    assert error.exit_code == 66
    assert error.reason == "keyring_unreadable"


# --------------------------------------------------------------------------------- signature


def test_signature_shape_is_read_from_the_packet(release: TestKey) -> None:
    sig = detached(release, armor=False)
    assert sig.issuer_fingerprint == keyring_of(release.cert).keys[0].subkeys[0].fingerprint
    assert sig.hash_algorithm == "SHA-512"
    assert sig.created.tzinfo is not None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"   \n", "blank"),
        (b"garbage that is not openpgp", "garbage"),
        (b"-----BEGIN PGP SIGNATURE-----\n\n!!!!\n-----END PGP SIGNATURE-----\n", "bad armor"),
        (b"\x00" * (MAX_SIGNATURE_BYTES + 1), "oversized"),
    ],
)
def test_garbage_signatures_are_malformed(data: bytes, why: str) -> None:
    error = refusal(DetachedSignature.from_bytes, data, source="SHA256SUMS.sig")
    assert isinstance(error, UntrustedInputError), why
    assert error.reason == "signature_malformed", why
    assert "Stack backtrace" not in str(error) + error.detail


def test_a_public_key_is_not_a_signature(release: TestKey) -> None:
    assert refusal(DetachedSignature.from_bytes, release.armored()).reason == "signature_malformed"


def test_an_inline_signed_message_is_not_a_detached_signature(release: TestKey) -> None:
    inline = pysequoia.sign(release.tsk.signer(), DATA, mode=pysequoia.SignatureMode.INLINE)
    assert refusal(DetachedSignature.from_bytes, inline).reason == "signature_malformed"


def test_two_signatures_in_one_file_are_refused(release: TestKey, stranger: TestKey) -> None:
    two = release.sign(DATA, armor=False) + stranger.sign(DATA, armor=False)
    error = refusal(DetachedSignature.from_bytes, two)
    assert error.reason == "signature_malformed"
    assert "2 signatures" in error.message


# ---------------------------------------------------------------------------------- verifying


def test_subkey_signature_verifies_for_the_pinned_primary(release: TestKey) -> None:
    ring = keyring_of(release.cert)
    proof = verify_detached(DATA, detached(release), ring, [release.fingerprint.upper()])
    assert proof.signer_fingerprint == release.fingerprint
    assert proof.signing_key_fingerprint == ring.keys[0].subkeys[0].fingerprint
    assert proof.hash_algorithm == "SHA-512"


def test_binary_signature_verifies_too(release: TestKey) -> None:
    proof = verify_detached(
        DATA, detached(release, armor=False), keyring_of(release.cert), [release.fingerprint]
    )
    assert proof.signer_fingerprint == release.fingerprint


def test_altered_data_is_signature_invalid_without_dependency_text(release: TestKey) -> None:
    error = refusal(
        verify_detached,
        DATA + b"x",
        detached(release),
        keyring_of(release.cert),
        [release.fingerprint],
    )
    assert isinstance(error, UntrustedInputError)
    assert error.reason == "signature_invalid"
    assert "pysequoia" not in error.message
    assert "Stack backtrace" not in error.detail


def test_no_pins_denies_even_with_a_good_signature(release: TestKey) -> None:
    error = refusal(verify_detached, DATA, detached(release), keyring_of(release.cert), [])
    assert error.reason == "no_pinned_keys"


def test_keyring_without_any_pinned_key_is_a_configuration_error(
    release: TestKey, stranger: TestKey
) -> None:
    error = refusal(
        verify_detached, DATA, detached(release), keyring_of(stranger.cert), [release.fingerprint]
    )
    assert isinstance(error, ConfigurationError)
    assert error.reason == "keyring_has_no_pinned_key"


def test_signature_by_an_unpinned_key_in_the_keyring_names_it(
    release: TestKey, stranger: TestKey
) -> None:
    error = refusal(
        verify_detached,
        DATA,
        detached(stranger),
        keyring_of(release.cert, stranger.cert),
        [release.fingerprint],
    )
    assert isinstance(error, UntrustedInputError)
    assert error.reason == "signing_key_not_pinned"
    assert stranger.fingerprint in error.message


def test_signature_by_a_key_outside_the_keyring_is_not_pinned(
    release: TestKey, stranger: TestKey
) -> None:
    error = refusal(
        verify_detached, DATA, detached(stranger), keyring_of(release.cert), [release.fingerprint]
    )
    assert error.reason == "signing_key_not_pinned"


def test_pinned_issuer_missing_from_the_keyring_is_a_configuration_error(
    release: TestKey, stranger: TestKey
) -> None:
    sig = dataclasses.replace(detached(stranger), issuer_fingerprint=release.fingerprint)
    error = refusal(
        verify_detached,
        DATA,
        sig,
        keyring_of(stranger.cert),
        [release.fingerprint, stranger.fingerprint],
    )
    assert isinstance(error, ConfigurationError)
    assert error.reason == "signing_key_not_in_keyring"


def test_revoked_key_is_refused(release: TestKey) -> None:
    key = make_key()
    error = refusal(
        verify_detached, DATA, detached(key), keyring_of(revoked(key)), [key.fingerprint]
    )
    assert error.reason == "signing_key_revoked"


def test_expired_key_is_judged_now_not_at_the_signatures_time() -> None:
    key = make_key(validity_seconds=3600)
    sig = detached(key)  # made while the key is valid
    ring = keyring_of(key.cert)
    assert verify_detached(DATA, sig, ring, [key.fingerprint]).signer_fingerprint
    error = refusal(verify_detached, DATA, sig, ring, [key.fingerprint], now=now_plus(hours=2))
    assert error.reason == "signing_key_expired"
    assert "expired at" in error.message


def test_revoked_or_expired_signing_subkey_is_refused(release: TestKey) -> None:
    (key,) = keyring_of(release.cert).keys
    sub = key.subkeys[0]
    pins = [release.fingerprint]
    for change, reason in (
        ({"revoked": True}, "signing_key_revoked"),
        ({"expiration": now_plus(seconds=-1)}, "signing_key_expired"),
        ({"signing_capable": False}, "signing_key_not_signing_capable"),
        ({"created": now_plus(days=-1, seconds=-5)}, None),
    ):
        changed = dataclasses.replace(
            key, subkeys=(dataclasses.replace(sub, **change), *key.subkeys[1:])
        )
        ring = Keyring(keys=(changed,))
        if reason is None:
            assert verify_detached(DATA, detached(release), ring, pins).signer_fingerprint
        else:
            error = refusal(verify_detached, DATA, detached(release), ring, pins)
            assert error.reason == reason
            assert sub.fingerprint in error.message


def test_signature_older_than_its_key_is_not_valid_at_signing_time(release: TestKey) -> None:
    sig = detached(release)
    backdated = dataclasses.replace(sig, created=sig.created - timedelta(days=30))
    error = refusal(
        verify_detached, DATA, backdated, keyring_of(release.cert), [release.fingerprint]
    )
    assert error.reason == "signing_key_not_valid_at_signing_time"


def test_signature_from_the_future_is_refused_beyond_the_skew(release: TestKey) -> None:
    sig = detached(release)
    ring, pins = keyring_of(release.cert), [release.fingerprint]
    within = dataclasses.replace(sig, created=now_plus(minutes=4))
    assert verify_detached(DATA, within, ring, pins).signer_fingerprint == release.fingerprint
    beyond = dataclasses.replace(sig, created=now_plus(minutes=6))
    assert refusal(verify_detached, DATA, beyond, ring, pins).reason == (
        "signature_created_in_future"
    )


def test_expired_signature_is_refused(release: TestKey) -> None:
    sig = dataclasses.replace(detached(release), expiration=now_plus(seconds=-1))
    error = refusal(verify_detached, DATA, sig, keyring_of(release.cert), [release.fingerprint])
    assert error.reason == "signature_expired"


@pytest.mark.parametrize(("octet", "name"), [(OPENPGP_SHA1, "SHA-1"), (OPENPGP_MD5, "MD5")])
def test_weak_hash_is_refused_before_any_cryptography(
    release: TestKey, octet: int, name: str
) -> None:
    weak = with_hash_octet(release.sign(DATA, armor=False), octet)
    sig = DetachedSignature.from_bytes(weak)
    assert sig.hash_algorithm == name
    error = refusal(verify_detached, DATA, sig, keyring_of(release.cert), [release.fingerprint])
    assert error.reason == "signature_weak_hash"
    assert name in error.message


def test_now_must_be_timezone_aware(release: TestKey) -> None:
    naive = now_plus().replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_detached(
            DATA, detached(release), keyring_of(release.cert), [release.fingerprint], now=naive
        )


# ----------------------------------------------------------------- dependency error mapping


def test_every_pysequoia_failure_is_mapped_and_loses_its_backtrace(
    release: TestKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    class PanicException(BaseException):  # the name pyo3 gives a Rust panic
        pass

    ring = keyring_of(release.cert)
    sig = detached(release)
    for failure in (RuntimeError(BACKTRACE_TEXT), ValueError(BACKTRACE_TEXT), PanicException()):

        def boom(*_args: object, _failure: BaseException = failure, **_kw: object) -> None:
            raise _failure

        monkeypatch.setattr(pysequoia, "verify", boom)
        error = refusal(verify_detached, DATA, sig, ring, [release.fingerprint])
        assert error.reason == "signature_invalid"
        assert error.__cause__ is None
        assert error.__suppress_context__
        assert "Stack backtrace" not in f"{error} {error.detail}"
        assert "\n" not in error.detail

    def split_fails(_data: bytes) -> list[object]:
        raise RuntimeError(BACKTRACE_TEXT)

    monkeypatch.setattr(pysequoia.Cert, "split_bytes", staticmethod(split_fails))
    error = refusal(Keyring.from_bytes, b"anything")
    assert error.reason == "keyring_malformed"
    assert error.detail == "pysequoia RuntimeError: something failed"


def test_a_bug_is_not_disguised_as_bad_input(
    release: TestKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    def buggy(*_args: object, **_kw: object) -> None:
        raise TypeError("bug in our code")

    monkeypatch.setattr(pysequoia, "verify", buggy)
    with pytest.raises(TypeError):
        verify_detached(DATA, detached(release), keyring_of(release.cert), [release.fingerprint])


def test_dependency_text_is_one_printable_line() -> None:
    text = openpgp.dependency_text(RuntimeError("bad \x1b[31mred\x1b[0m\nStack backtrace: 0"))
    assert text == "pysequoia RuntimeError: bad ?[31mred?[0m"


def test_store_is_offered_only_the_chosen_pinned_certificate(
    release: TestKey, stranger: TestKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    offered: list[list[str]] = []
    real = pysequoia.verify

    def spy(**kwargs: object) -> object:
        store = kwargs["store"]
        assert callable(store)
        offered.append([cert.fingerprint for cert in store(["anything"])])
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pysequoia, "verify", spy)
    ring = keyring_of(stranger.cert, release.cert)
    verify_detached(DATA, detached(release), ring, [release.fingerprint, stranger.fingerprint])
    assert offered == [[release.fingerprint]]


def test_sig_object_is_not_compared_or_shown(release: TestKey) -> None:
    sig = detached(release)
    assert isinstance(sig.sig, Sig)
    assert "sig=" not in repr(sig)


def test_signature_naming_only_a_key_id_still_finds_the_pinned_key(release: TestKey) -> None:
    sig = detached(release)
    assert sig.issuer_fingerprint is not None
    by_id = dataclasses.replace(
        sig, issuer_fingerprint=None, issuer_key_id=sig.issuer_fingerprint[-16:]
    )
    proof = verify_detached(DATA, by_id, keyring_of(release.cert), [release.fingerprint])
    assert proof.signing_key_fingerprint == sig.issuer_fingerprint
