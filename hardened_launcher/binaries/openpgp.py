"""OpenPGP detached-signature checks through pysequoia, with every failure given a clear reason.

pysequoia raises one generic ``RuntimeError`` for everything (and appends a Rust backtrace to its
text when ``RUST_BACKTRACE`` is set), so this module never shows that text as a message. Instead
it inspects the signature packet (issuer, hash algorithm, creation time, type) and the
certificates (fingerprints, creation, expiry, revocation, subkeys) itself, refuses with a
specific reason *before* asking pysequoia for the cryptographic check, and reports a failure of
that check as ``signature_invalid``. The dependency's text, cut to its first line, goes only into
``detail`` (shown with ``-v``).

What is judged here and not left to pysequoia:

- the signing key's primary fingerprint must be pinned; a signature by a subkey counts for its
  primary key;
- the key (primary and, for a subkey signature, the subkey) must be neither revoked nor expired
  *now*. pysequoia judges a key at the signature's own (claimed) creation time, so without this a
  backdated signature from an expired key would pass;
- the signature's creation time must not be before the key's creation and must not lie further
  in the future than :data:`MAX_CLOCK_SKEW`; the signature itself must not have expired;
- the hash algorithm must be one of :data:`ACCEPTED_HASH_ALGORITHMS` (SHA-1, MD5, RIPEMD-160 and
  SHA-224 are refused as ``signature_weak_hash``).

Limits: subkey expiry, capability and revocation are read from the subkey's binding and
revocation packets; pysequoia does not expose which of those it validated, so this module takes
the newest binding issued by the primary key. A binding dated before the primary key was
created binds nothing (Sequoia rejects it too). Sequoia keeps the other signatures it rejects
after the last subkey, where they read as that subkey's. A forged revocation can only cause a
refusal; a forged binding would need write access to the operator's keyring, which is trust
material.
"""

from __future__ import annotations

import logging
import string
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pysequoia
from pysequoia import Cert, Sig
from pysequoia.packet import HashAlgorithm, Packet, PacketPile, SignatureType, Tag

from hardened_launcher.bounded_input import describe_path, read_bounded
from hardened_launcher.errors import ConfigurationError, LauncherError, UntrustedInputError

log = logging.getLogger(__name__)

MAX_SIGNATURE_BYTES = 64 * 1024
MAX_KEYRING_BYTES = 8 * 1024 * 1024
MAX_CLOCK_SKEW = timedelta(minutes=5)
_V4_FINGERPRINT_CHARS = 40
_V6_FINGERPRINT_CHARS = 64
_KEY_ID_CHARS = 16
_MAX_DETAIL_CHARS = 200
_ARMOR_END = b"-----END PGP PUBLIC KEY BLOCK"

# Hash algorithms a release signature may use: SHA-2 and SHA-3 with at least 256-bit output.
_HASH_NAMES: tuple[tuple[HashAlgorithm, str], ...] = (
    (HashAlgorithm.SHA256, "SHA-256"),
    (HashAlgorithm.SHA384, "SHA-384"),
    (HashAlgorithm.SHA512, "SHA-512"),
    (HashAlgorithm.SHA3_256, "SHA3-256"),
    (HashAlgorithm.SHA3_512, "SHA3-512"),
    (HashAlgorithm.SHA224, "SHA-224"),
    (HashAlgorithm.SHA1, "SHA-1"),
    (HashAlgorithm.MD5, "MD5"),
    (HashAlgorithm.RipeMD, "RIPEMD-160"),
)
ACCEPTED_HASH_ALGORITHMS: frozenset[str] = frozenset(
    {"SHA-256", "SHA-384", "SHA-512", "SHA3-256", "SHA3-512"}
)
_PRINTABLE = frozenset(string.printable) - frozenset("\t\n\r\x0b\x0c")


# --------------------------------------------------------------------------- dependency boundary


def _is_dependency_failure(exc: BaseException) -> bool:
    # pysequoia raises RuntimeError (ValueError for some argument checks); pyo3 turns a Rust
    # panic into ``pyo3_runtime.PanicException``, a BaseException subclass. Anything else (a
    # TypeError, say) is a bug in this module and must not be reported as bad input.
    return isinstance(exc, RuntimeError | ValueError) or type(exc).__name__ == "PanicException"


def dependency_text(exc: BaseException) -> str:
    """The dependency's error text, cut to its first line (no backtrace), printable, short."""
    first = str(exc).split("\n", 1)[0]
    clean = "".join(c if c in _PRINTABLE else "?" for c in first)[:_MAX_DETAIL_CHARS]
    return f"pysequoia {type(exc).__name__}: {clean}"


@contextmanager
def _boundary(make_error: Callable[[str], LauncherError]) -> Iterator[None]:
    """Translate any pysequoia failure inside the block into ``make_error(detail)``."""
    try:
        yield
    except LauncherError:
        raise
    except BaseException as exc:
        if not _is_dependency_failure(exc):
            raise
        # ``from None``: the dependency's text may carry a backtrace; it stays in ``detail`` only.
        raise make_error(dependency_text(exc)) from None


# --------------------------------------------------------------------------------- fingerprints


def normalize_fingerprint(text: str) -> str:
    """Lower-case hex with spaces removed; a v4 (40 hex) or v6 (64 hex) fingerprint, or raise.

    Reasons match the settings parser: ``release_key_short_id`` for an 8 or 16 hex digit key
    id (those can be forged), ``release_key_fingerprint_invalid`` for anything else.
    """
    cleaned = "".join(text.split()).lower().removeprefix("0x")
    is_hex = bool(cleaned) and all(c in string.hexdigits for c in cleaned)
    shown = text if len(text) <= 80 and text.isprintable() else f"{text[:80]!r}..."
    if is_hex and len(cleaned) in {8, _KEY_ID_CHARS}:
        raise ConfigurationError(
            f"{shown!r} is a short key id, not a fingerprint; key ids can be forged",
            hint="pin the whole fingerprint as printed by `gpg --fingerprint`",
            reason="release_key_short_id",
        )
    if not is_hex or len(cleaned) not in {_V4_FINGERPRINT_CHARS, _V6_FINGERPRINT_CHARS}:
        raise ConfigurationError(
            f"{shown!r} is not a full OpenPGP fingerprint (40 or 64 hex digits)",
            hint="pin the whole fingerprint as printed by `gpg --fingerprint`",
            reason="release_key_fingerprint_invalid",
        )
    return cleaned


def normalize_pins(values: Iterable[str]) -> frozenset[str]:
    """Normalise pinned fingerprints; an empty set is refused (an empty pin list denies)."""
    pins = frozenset(normalize_fingerprint(value) for value in values)
    if not pins:
        raise ConfigurationError(
            "no release signing key is pinned, so no binary can be accepted",
            hint=(
                "set HL_RELEASE_KEY_FINGERPRINTS (or pass --fingerprint) to the primary key "
                "fingerprint(s) that sign releases"
            ),
            reason="no_pinned_keys",
        )
    return pins


def _key_id(fingerprint: str) -> str:
    # v4 key ids are the last 64 bits of the fingerprint, v6 key ids the first 64 bits.
    if len(fingerprint) == _V4_FINGERPRINT_CHARS:
        return fingerprint[-_KEY_ID_CHARS:]
    return fingerprint[:_KEY_ID_CHARS]


# ------------------------------------------------------------------------------------- keyring


@dataclass(frozen=True, kw_only=True)
class KeyComponent:
    """A primary key or subkey, as far as this gate cares about it."""

    fingerprint: str
    created: datetime
    expiration: datetime | None
    revoked: bool
    # None: unknown here (the primary key; pysequoia checks its capability).
    signing_capable: bool | None

    @property
    def key_id(self) -> str:
        return _key_id(self.fingerprint)


def _issued_by(packet: Packet, primary: str) -> bool:
    issuer = packet.issuer_fingerprint
    if issuer is not None:
        return issuer.lower() == primary
    key_id = packet.issuer_key_id
    return key_id is not None and key_id.lower() == _key_id(primary)


def _subkeys(
    packets: list[Packet], primary: str, primary_created: datetime
) -> tuple[KeyComponent, ...]:
    """The subkeys with at least one usable binding, read from Sequoia's serialization of a cert.

    Signatures belong to the component packet they follow; any other packet (user id,
    attribute, an unknown component) ends a subkey's run. Sequoia writes the signatures it
    rejected while canonicalising *after the last component*, so they sit where the last
    subkey's own signatures sit and position alone cannot tell them apart. A binding dated
    before the primary key was created is one Sequoia always rejects (a signature cannot
    predate the key that made it; gpg lists such a subkey as invalid), so it is ignored here
    whatever subkey it lands after: otherwise such a subkey would count as bound or not
    depending on how Sequoia happened to sort the subkeys.
    """
    groups: list[tuple[Packet | None, list[Packet]]] = []
    for packet in packets:
        tag = packet.tag
        if tag == Tag.Signature:
            if groups:
                groups[-1][1].append(packet)
        elif tag in (Tag.PublicSubkey, Tag.SecretSubkey):
            groups.append((packet, []))
        else:
            groups.append((None, []))
    out: list[KeyComponent] = []
    for key, sigs in groups:
        if key is None:
            continue
        fingerprint, created = key.fingerprint, key.key_created
        if fingerprint is None or created is None:
            continue
        own = [s for s in sigs if _issued_by(s, primary)]
        bindings: list[tuple[datetime, Packet]] = []
        for sig in own:
            made = sig.signature_created
            if sig.signature_type != SignatureType.SubkeyBinding or made is None:
                continue
            if made < primary_created:
                continue  # impossible, and rejected by Sequoia: binds nothing
            bindings.append((made, sig))
        if not bindings:
            continue  # an unbound subkey is not part of the certificate
        newest = max(bindings, key=lambda pair: pair[0])[1]
        period = newest.key_validity_period
        flags = newest.key_flags
        out.append(
            KeyComponent(
                fingerprint=fingerprint.lower(),
                created=created,
                expiration=created + period if period else None,
                # Every revocation counts, however dated: a bogus one can only cause a refusal.
                revoked=any(s.signature_type == SignatureType.SubkeyRevocation for s in own),
                signing_capable=None if flags is None else flags.signing,
            )
        )
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class PublicKey:
    """One certificate from the keyring: its primary key, its bound subkeys, and the cert."""

    primary: KeyComponent
    subkeys: tuple[KeyComponent, ...]
    cert: Cert = field(repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        return self.primary.fingerprint

    @classmethod
    def from_cert(cls, cert: Cert) -> PublicKey:
        fingerprint = cert.fingerprint.lower()
        packets = list(PacketPile.from_bytes(bytes(cert)))
        created = packets[0].key_created if packets else None
        if created is None:
            raise ValueError("certificate does not start with a primary key packet")
        primary = KeyComponent(
            fingerprint=fingerprint,
            created=created,
            expiration=cert.expiration,
            revoked=cert.is_revoked,
            signing_capable=None,
        )
        return cls(primary=primary, subkeys=_subkeys(packets, fingerprint, created), cert=cert)

    def component(self, *, fingerprint: str | None, key_id: str | None) -> KeyComponent | None:
        """The primary key or subkey that has this fingerprint (or, without one, key id)."""
        for component in (self.primary, *self.subkeys):
            if fingerprint is not None:
                if component.fingerprint == fingerprint:
                    return component
            elif key_id is not None and component.key_id == key_id:
                return component
        return None


def _keyring_error(source: str, what: str, reason: str) -> ConfigurationError:
    return ConfigurationError(
        f"the keyring {source} {what}",
        hint="export the release public key(s) with `gpg --export --armor FINGERPRINT > FILE`",
        reason=reason,
    )


def _keyring_too_large(message: str, *, hint: str, reason: str) -> ConfigurationError:
    del hint, reason
    return ConfigurationError(
        message,
        hint="export only the release signing keys (`gpg --export --armor FINGERPRINT`)",
        reason="keyring_too_large",
    )


@dataclass(frozen=True, kw_only=True)
class Keyring:
    """Public release keys, one entry per primary fingerprint (duplicates are merged).

    The data is binary packets or one or more ASCII-armored blocks (``cat a.asc b.asc`` works);
    data after the last armored block is refused rather than silently ignored.
    """

    keys: tuple[PublicKey, ...]
    source: str = "keyring"

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "keyring") -> Keyring:
        if len(data) > MAX_KEYRING_BYTES:
            raise _keyring_error(
                source, f"is larger than {MAX_KEYRING_BYTES} bytes", "keyring_too_large"
            )

        def malformed(detail: str) -> LauncherError:
            error = _keyring_error(source, "is not OpenPGP public key data", "keyring_malformed")
            error.detail = detail
            return error

        end = data.rfind(_ARMOR_END)
        if end >= 0 and data[end + len(_ARMOR_END) :].strip(b"-\r\n\t "):
            # pysequoia would silently ignore binary keys after armored ones.
            raise _keyring_error(
                source, "has data after its last armored key block", "keyring_malformed"
            )
        with _boundary(malformed), warnings.catch_warnings():
            # Cert.split_bytes warns when it meets secret keys; they are refused below.
            warnings.simplefilter("ignore", DeprecationWarning)
            certs = Cert.split_bytes(data)
            merged: dict[str, Cert] = {}
            for cert in certs:
                fingerprint = cert.fingerprint.lower()
                if cert.has_secret_keys:
                    raise _keyring_error(
                        source,
                        f"holds secret key material (key {fingerprint})",
                        "keyring_has_secret_keys",
                    )
                previous = merged.get(fingerprint)
                merged[fingerprint] = cert if previous is None else previous.merge(cert)
            keys = tuple(PublicKey.from_cert(cert) for cert in merged.values())
        if not keys:
            raise _keyring_error(source, "holds no public key", "keyring_empty")
        return cls(keys=keys, source=source)

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        data = read_bounded(
            path,
            max_bytes=MAX_KEYRING_BYTES,
            what="keyring",
            too_large=_keyring_too_large,
            reason="keyring_unreadable",
        )
        return cls.from_bytes(bytes(data), source=describe_path(path))

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(key.fingerprint for key in self.keys)

    def find(
        self, *, fingerprint: str | None, key_id: str | None, prefer: Collection[str] = ()
    ) -> tuple[PublicKey, KeyComponent] | None:
        """The key holding this fingerprint (else key id); keys in ``prefer`` are tried first.

        Key ids can collide; preferring pinned keys means a colliding unpinned key cannot
        shadow a pinned one (the cryptographic check still decides).
        """
        for key in sorted(self.keys, key=lambda k: k.fingerprint not in prefer):
            component = key.component(fingerprint=fingerprint, key_id=key_id)
            if component is not None:
                return key, component
        return None


# ----------------------------------------------------------------------------------- signature


def _hash_name(algorithm: HashAlgorithm) -> str:
    for known, name in _HASH_NAMES:
        if algorithm == known:
            return name
    return repr(algorithm).removeprefix("HashAlgorithm.")


def _signature_malformed(source: str, what: str, detail: str = "") -> UntrustedInputError:
    return UntrustedInputError(
        f"the signature file {source} {what}",
        hint="pass the detached signature of the sums file (e.g. SHA256SUMS.sig or .asc)",
        reason="signature_malformed",
        detail=detail,
    )


@dataclass(frozen=True, kw_only=True)
class DetachedSignature:
    """One detached signature over a file, parsed and checked for shape (not yet verified)."""

    issuer_fingerprint: str | None
    issuer_key_id: str | None
    hash_algorithm: str
    created: datetime
    expiration: datetime | None
    sig: Sig = field(repr=False, compare=False)
    source: str = "signature"

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "signature") -> DetachedSignature:
        if len(data) > MAX_SIGNATURE_BYTES:
            raise _signature_malformed(source, f"is larger than {MAX_SIGNATURE_BYTES} bytes")
        if not data.strip():
            raise _signature_malformed(source, "is empty")
        with _boundary(lambda d: _signature_malformed(source, "is not an OpenPGP signature", d)):
            packets = list(PacketPile.from_bytes(data))
            if not packets or any(p.tag != Tag.Signature for p in packets):
                raise _signature_malformed(source, "is not a detached OpenPGP signature")
            if len(packets) != 1:
                raise _signature_malformed(
                    source, f"holds {len(packets)} signatures; exactly one is accepted"
                )
            sig = Sig.from_bytes(data)
            signature_type = sig.signature_type
            created = sig.created
            expiration = sig.expiration
            algorithm = _hash_name(sig.hash_algorithm)
            issuer_fingerprint = sig.issuer_fingerprint
            issuer_key_id = sig.issuer_key_id
        if signature_type not in (SignatureType.Binary, SignatureType.Text):
            raise _signature_malformed(source, "is not a signature over a document")
        if created is None:
            raise _signature_malformed(source, "carries no creation time")
        if issuer_fingerprint is None and issuer_key_id is None:
            raise _signature_malformed(source, "does not say which key made it")
        return cls(
            issuer_fingerprint=issuer_fingerprint.lower() if issuer_fingerprint else None,
            issuer_key_id=issuer_key_id.lower() if issuer_key_id else None,
            hash_algorithm=algorithm,
            created=created,
            expiration=expiration,
            sig=sig,
            source=source,
        )

    @property
    def issuer(self) -> str:
        """The issuer as the signature names it: its fingerprint, else its key id."""
        return self.issuer_fingerprint or self.issuer_key_id or "unknown"


@dataclass(frozen=True, kw_only=True)
class SignatureVerified:
    """Proof that a detached signature over some bytes verified against a pinned key."""

    signer_fingerprint: str  # the pinned primary key
    signing_key_fingerprint: str  # the primary key or the subkey that made the signature
    created: datetime
    hash_algorithm: str


def _refuse(message: str, hint: str, reason: str) -> UntrustedInputError:
    return UntrustedInputError(message, hint=hint, reason=reason)


def _parts(key: PublicKey, component: KeyComponent) -> list[tuple[KeyComponent, str]]:
    parts = [(key.primary, f"release key {key.fingerprint}")]
    if component is not key.primary:
        what = f"signing subkey {component.fingerprint} of release key {key.fingerprint}"
        parts.append((component, what))
    return parts


def _check_key_now(key: PublicKey, component: KeyComponent, now: datetime) -> None:
    for part, what in _parts(key, component):
        if part.revoked:
            raise _refuse(
                f"the {what} is revoked",
                "the publisher withdrew this key; do not trust binaries signed with it and pin "
                "the publisher's new key",
                "signing_key_revoked",
            )
        if part.expiration is not None and part.expiration <= now:
            raise _refuse(
                f"the {what} expired at {part.expiration.isoformat()}",
                "ask the publisher for a signature by a current key, or import their updated "
                "key (with its extended expiry) into the keyring",
                "signing_key_expired",
            )


def verify_detached(
    data: bytes,
    signature: DetachedSignature,
    keyring: Keyring,
    pins: Iterable[str],
    *,
    now: datetime | None = None,
    max_clock_skew: timedelta = MAX_CLOCK_SKEW,
) -> SignatureVerified:
    """Verify ``signature`` over ``data`` against a pinned key from ``keyring``, or raise.

    Raises :class:`ConfigurationError` (``no_pinned_keys``, ``keyring_has_no_pinned_key``,
    ``signing_key_not_in_keyring``) or :class:`UntrustedInputError` with a specific reason.
    """
    pinned = normalize_pins(pins)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not any(key.fingerprint in pinned for key in keyring.keys):
        raise ConfigurationError(
            f"the keyring {keyring.source} holds none of the {len(pinned)} pinned release key(s)",
            hint="add the pinned release public key to the keyring, or fix the pinned fingerprint",
            reason="keyring_has_no_pinned_key",
        )

    found = keyring.find(
        fingerprint=signature.issuer_fingerprint,
        key_id=None if signature.issuer_fingerprint else signature.issuer_key_id,
        prefer=pinned,
    )
    if found is None:
        if signature.issuer_fingerprint in pinned:
            raise ConfigurationError(
                f"the signature was made by pinned key {signature.issuer}, which is not in the "
                f"keyring {keyring.source}",
                hint="add that public key to the keyring",
                reason="signing_key_not_in_keyring",
            )
        raise _refuse(
            f"the signature was made by key {signature.issuer}, which is not a pinned release key",
            "only signatures by pinned release keys are accepted; check that the files come "
            "from the expected publisher",
            "signing_key_not_pinned",
        )
    key, component = found
    if key.fingerprint not in pinned:
        raise _refuse(
            f"the signature was made by key {key.fingerprint}, which is not a pinned release key",
            "only signatures by pinned release keys are accepted; check that the files come "
            "from the expected publisher",
            "signing_key_not_pinned",
        )
    _check_key_now(key, component, now)

    if signature.hash_algorithm not in ACCEPTED_HASH_ALGORITHMS:
        raise _refuse(
            f"the signature uses the weak hash algorithm {signature.hash_algorithm}",
            "ask the publisher to sign with SHA-256 or stronger (gpg --digest-algo SHA512)",
            "signature_weak_hash",
        )
    if signature.created > now + max_clock_skew:
        raise _refuse(
            f"the signature claims to be made at {signature.created.isoformat()}, in the future",
            "check this machine's clock (NTP); a signature from the future is refused",
            "signature_created_in_future",
        )
    if signature.expiration is not None and signature.expiration <= now:
        raise _refuse(
            f"the signature expired at {signature.expiration.isoformat()}",
            "ask the publisher for a fresh signature",
            "signature_expired",
        )
    for part, what in _parts(key, component):
        too_early = signature.created < part.created
        too_late = part.expiration is not None and signature.created >= part.expiration
        if too_early or too_late:
            raise _refuse(
                f"the signature claims to be made at {signature.created.isoformat()}, when the "
                f"{what} was not valid (created {part.created.isoformat()})",
                "the signature's time is inconsistent with the key; treat it as forged",
                "signing_key_not_valid_at_signing_time",
            )
    if component.signing_capable is False:
        raise _refuse(
            f"the signature was made by subkey {component.fingerprint}, which may not sign",
            "the publisher must sign with a signing-capable key",
            "signing_key_not_signing_capable",
        )

    def invalid(detail: str) -> LauncherError:
        return UntrustedInputError(
            f"the signature by key {key.fingerprint} does not verify over the sums file",
            hint=(
                "the sums file or its signature was altered, or they are from different "
                "releases; download both again from the publisher"
            ),
            reason="signature_invalid",
            detail=detail,
        )

    def store(_key_ids: object) -> list[Cert]:
        # Offer exactly the one pinned certificate chosen above, whatever the signature asks for.
        return [key.cert]

    with _boundary(invalid):
        result = pysequoia.verify(bytes=data, store=store, signature=signature.sig)
        certified = [str(getattr(valid, "certificate", "")).lower() for valid in result.valid_sigs]
    if key.fingerprint not in certified:
        raise invalid("pysequoia reported no valid signature by the pinned key")
    log.debug(
        "binaries.signature_verified signer=%s signing_key=%s",
        key.fingerprint,
        component.fingerprint,
    )
    return SignatureVerified(
        signer_fingerprint=key.fingerprint,
        signing_key_fingerprint=component.fingerprint,
        created=signature.created,
        hash_algorithm=signature.hash_algorithm,
    )
