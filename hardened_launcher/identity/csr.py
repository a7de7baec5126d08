"""Certificate signing requests: the subject syntax, making one, reading one.

The subject is written the way ``openssl req -subj`` takes it: ``/CN=pool/O=Acme``. Components
are separated by ``/``, a multi-valued RDN joins attributes with ``+``, and ``\\`` escapes the
next character (``/O=A\\/B`` is the organisation ``A/B``). Attribute types are openssl's short or
long names (``CN``, ``commonName``, ``O``, ``OU``, ``C``, ``ST``, ``L``, ``emailAddress``,
``serialNumber``, ``DC``, ``UID``…) or a dotted OID.

The control plane ignores the subject when it issues the pool certificate (it sets its own), so
the subject is for the operator's bookkeeping only.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from hardened_launcher.ascii_text import is_digits, trim
from hardened_launcher.errors import UntrustedInputError, UsageError
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.pem import CSR_LABELS, X509_PARSE_ERRORS, find_blocks

DEFAULT_SUBJECT = "/CN=hardened-launcher-pool"
MAX_SUBJECT_CHARS = 1024
MAX_CSR_PEM_BYTES = 64 * 1024

_ATTRIBUTE_TYPES: dict[str, x509.ObjectIdentifier] = {
    "cn": NameOID.COMMON_NAME,
    "commonname": NameOID.COMMON_NAME,
    "c": NameOID.COUNTRY_NAME,
    "countryname": NameOID.COUNTRY_NAME,
    "st": NameOID.STATE_OR_PROVINCE_NAME,
    "stateorprovincename": NameOID.STATE_OR_PROVINCE_NAME,
    "l": NameOID.LOCALITY_NAME,
    "localityname": NameOID.LOCALITY_NAME,
    "o": NameOID.ORGANIZATION_NAME,
    "organizationname": NameOID.ORGANIZATION_NAME,
    "ou": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "organizationalunitname": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "emailaddress": NameOID.EMAIL_ADDRESS,
    "serialnumber": NameOID.SERIAL_NUMBER,
    "dc": NameOID.DOMAIN_COMPONENT,
    "domaincomponent": NameOID.DOMAIN_COMPONENT,
    "uid": NameOID.USER_ID,
    "userid": NameOID.USER_ID,
    "street": NameOID.STREET_ADDRESS,
    "streetaddress": NameOID.STREET_ADDRESS,
    "title": NameOID.TITLE,
    "gn": NameOID.GIVEN_NAME,
    "givenname": NameOID.GIVEN_NAME,
    "sn": NameOID.SURNAME,
    "surname": NameOID.SURNAME,
    "initials": NameOID.INITIALS,
    "pseudonym": NameOID.PSEUDONYM,
    "dnqualifier": NameOID.DN_QUALIFIER,
    "generationqualifier": NameOID.GENERATION_QUALIFIER,
}


class SubjectError(UsageError):
    """The ``--subject`` text is not an openssl-style distinguished name."""

    default_reason = "subject_invalid"


class CsrError(UntrustedInputError):
    """A certificate signing request was refused."""

    default_reason = "csr_invalid"


def _bad_subject(why: str) -> SubjectError:
    return SubjectError(
        f"the subject is not a valid distinguished name: {why}",
        hint="Write it as openssl does, e.g. /CN=pool/O=Acme (escape a literal / as \\/)",
        reason="subject_invalid",
    )


def _split_unescaped(text: str, separator: str) -> list[str]:
    """Split at ``separator`` characters not preceded by a backslash; keep escapes intact."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise _bad_subject("it ends with a lone backslash")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)


def _attribute_type(name: str) -> x509.ObjectIdentifier:
    key = trim(name)
    if key and all(is_digits(part) for part in key.split(".")) and key.count(".") >= 1:
        try:
            return x509.ObjectIdentifier(key)
        except ValueError as exc:
            raise _bad_subject("an attribute type is not a valid OID") from exc
    oid = _ATTRIBUTE_TYPES.get(key.lower())
    if oid is None:
        known = "CN, O, OU, C, ST, L, emailAddress, serialNumber, DC, UID"
        raise _bad_subject(f"unknown attribute type (known: {known}, or a dotted OID)")
    return oid


def parse_subject(text: str) -> x509.Name:
    """Parse an openssl-style DN (``/CN=pool/O=Acme``) into an ``x509.Name``."""
    if len(text) > MAX_SUBJECT_CHARS:
        raise _bad_subject(f"it is longer than {MAX_SUBJECT_CHARS} characters")
    if not text.startswith("/"):
        raise _bad_subject("it must start with '/'")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise _bad_subject("it contains control characters")
    rdns: list[x509.RelativeDistinguishedName] = []
    for component in _split_unescaped(text[1:], "/"):
        if not component:
            raise _bad_subject("it has an empty component (two '/' in a row, or a trailing '/')")
        attributes: list[x509.NameAttribute[str]] = []
        for assignment in _split_unescaped(component, "+"):
            pair = _split_unescaped(assignment, "=")
            if len(pair) < 2:
                raise _bad_subject("a component has no '=' (write TYPE=value)")
            name, value = pair[0], _unescape("=".join(pair[1:]))
            if not value:
                raise _bad_subject("an attribute has an empty value")
            oid = _attribute_type(_unescape(name))
            try:
                attributes.append(x509.NameAttribute(oid, value))
            except ValueError as exc:
                # cryptography checks lengths (CN up to 64, C exactly 2 letters).
                raise _bad_subject(
                    "an attribute value has the wrong length for its type "
                    "(CN is at most 64 characters, C is a two-letter country code)"
                ) from exc
        try:
            rdns.append(x509.RelativeDistinguishedName(attributes))
        except ValueError as exc:
            raise _bad_subject("a multi-valued component repeats an attribute") from exc
    return x509.Name(rdns)


def create_csr(key: PoolPrivateKey, subject: x509.Name) -> x509.CertificateSigningRequest:
    """A CSR for ``key``, self-signed with SHA-256 (ECDSA-SHA256 for EC keys)."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .sign(key.private_key, hashes.SHA256())
    )


def csr_to_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr_pem(data: bytes) -> x509.CertificateSigningRequest:
    """Parse one PEM CSR (``BEGIN CERTIFICATE REQUEST``). Does not check its signature."""
    if len(data) > MAX_CSR_PEM_BYTES:
        raise CsrError(
            f"the certificate signing request is larger than {MAX_CSR_PEM_BYTES // 1024} KiB",
            hint="Submit the spacelift.csr file made by keygen or openssl req",
            reason="csr_invalid",
        )
    blocks = [block for block in find_blocks(data) if block.label in CSR_LABELS]
    if len(blocks) != 1 or not blocks[0].complete:
        raise CsrError(
            "the data is not exactly one complete PEM certificate signing request",
            hint="Submit the spacelift.csr file made by keygen or openssl req",
            reason="csr_invalid",
        )
    try:
        csr = x509.load_pem_x509_csr(data[blocks[0].start : blocks[0].end])
        # Parsed lazily by cryptography; read them so errors surface here.
        _ = (csr.subject, csr.extensions)
        csr.public_key()
    except UnsupportedAlgorithm as exc:
        raise CsrError(
            "the certificate signing request uses a key type that is not supported",
            hint="Pool keys are RSA (2048+ bits) or EC P-256/P-384",
            reason="csr_key_unsupported",
        ) from exc
    except X509_PARSE_ERRORS as exc:
        raise CsrError(
            "the certificate signing request does not parse",
            hint="Submit the spacelift.csr file made by keygen or openssl req, unmodified",
            reason="csr_invalid",
        ) from exc
    return csr
