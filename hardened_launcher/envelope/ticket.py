"""The run ticket: a run's non-secret description, signed by the control plane, beside its envelope.

Gate 3 (policy) must judge a run before gate 4 (envelope) decrypts it, so every ``assign`` carries
a *ticket* next to the sealed run state::

    {"version": 1, "run_id": …, "pool_id": …, "worker_id": …, "lease_id": …,
     "envelope_sha256": <hex of the sealed bytes>, "manifest": <RunManifest>}

signed with the control plane's Ed25519 run-state key (the token's ``run_state_signing_key``)
over :data:`TICKET_DOMAIN` followed by the canonical JSON of the ticket. The manifest is the run
spec without a single secret byte: image, phases, plain variables, the *names* of secret
variables with their sanitized form (a keyed HMAC under the pool's sanitize key), file paths
with digests, binaries, limits and metadata (:func:`manifest_from_spec`).

The launcher verifies the ticket (signature, run, pool, lease) in the identity gate, the policy
reads the manifest, the envelope gate checks the sealed bytes' SHA-256 against the ticket before
any private-key operation, and after decryption the spec must produce exactly the same manifest
(:func:`check_spec_matches`), or the run is refused before anything executes. Everything here is
bounded: ticket bytes, JSON depth, counts and string sizes, strict keys, no duplicate keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hardened_launcher.audit.canonical import canonical_json
from hardened_launcher.errors import UntrustedInputError
from hardened_launcher.executor.runspec import (
    BINARY_NAME_PATTERN,
    VERSION_PATTERN,
    RunSpec,
    RunType,
)
from hardened_launcher.executor.source import source_manifest
from hardened_launcher.policy.sanitize import Sanitizer

__all__ = [
    "MAX_TICKET_BYTES",
    "TICKET_DOMAIN",
    "PlanBinding",
    "RunManifest",
    "RunTicket",
    "TicketError",
    "VerifiedTicket",
    "check_spec_matches",
    "manifest_from_spec",
    "pool_sanitize_key",
    "sign_ticket",
    "verify_ticket",
]

TICKET_VERSION: Final = 1
TICKET_DOMAIN: Final = b"hardened-launcher/run-ticket/v1\n"
#: Largest encoded ticket accepted (the manifest holds no file contents, only digests).
MAX_TICKET_BYTES: Final = 96 * 1024
MAX_TICKET_DEPTH: Final = 6
_SIGNATURE_BYTES: Final = 64
_BINARY_RE: Final = BINARY_NAME_PATTERN
_VERSION_RE: Final = VERSION_PATTERN
_KEY_ID_LABEL: Final = b"hardened-launcher/sanitize-key-id/v1"
_POOL_KEY_LABEL: Final = b"hardened-launcher/pool-sanitize-key/v1\n"

_TICKET_KEYS: Final = frozenset(
    {"version", "run_id", "pool_id", "worker_id", "lease_id", "envelope_sha256", "manifest"}
)
_MANIFEST_KEYS: Final = frozenset(
    {
        "run_id",
        "run_type",
        "image",
        "phases",
        "env",
        "secret_env",
        "files",
        "binaries",
        "limits",
        "metadata",
        "sanitize_key_id",
    }
)
#: Present only when the run has a source, or is a half of a confirmed run (older manifests
#: stay valid as they are).
_OPTIONAL_MANIFEST_KEYS: Final = frozenset({"source", "stage", "plan_of"})
_SOURCE_KEYS: Final = (
    frozenset({"url", "ref", "commit_sha"}),
    frozenset({"url", "ref", "commit_sha", "auth"}),
    frozenset({"archive_sha256", "archive_bytes"}),
)
_PLAN_KEYS: Final = frozenset({"run_id", "sha256", "commit_sha"})


class TicketError(UntrustedInputError):
    """The run ticket beside a sealed run state was refused (``reason`` says why)."""

    default_reason = "ticket_invalid"


def _refuse(what: str, reason: str = "ticket_invalid") -> TicketError:
    return TicketError(
        f"the run ticket is refused: {what}",
        hint="the control plane sent an assignment this launcher cannot trust; check that it "
        "and the launcher come from compatible releases and that the token is current",
        reason=reason,
    )


def pool_sanitize_key(signing_key: Ed25519PrivateKey, pool_id: str) -> bytes:
    """The control plane's per-pool sanitize key, derived from its signing key (so it needs no
    storage of its own); it travels to the launcher inside the pool's token."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - one caller

    raw = signing_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return hmac.new(raw, _POOL_KEY_LABEL + pool_id.encode("ascii"), hashlib.sha256).digest()


def sanitize_key_id(sanitizer: Sanitizer) -> str:
    """Names the sanitizer's key without revealing it: both sides must use the same key."""
    return sanitizer.sanitize(_KEY_ID_LABEL)


@dataclass(frozen=True, kw_only=True)
class RunManifest:
    """The non-secret description of a run (a JSON object; see the module docstring)."""

    document: Mapping[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.document["run_id"])

    @property
    def run_type(self) -> RunType:
        return "wo" if self.document["run_type"] == "wo" else "ro"  # checked: ro or wo

    @property
    def image(self) -> str | None:
        """None: the spec names none (the launcher's SPACELIFT_DEFAULT_RUNNER_IMAGE applies)."""
        image = self.document["image"]
        return None if image is None else str(image)

    @property
    def binaries(self) -> tuple[tuple[str, str], ...]:
        return tuple((b["name"], b["version"]) for b in self.document["binaries"])

    @property
    def env(self) -> Mapping[str, str]:
        return dict(self.document["env"])

    @property
    def secret_env(self) -> Mapping[str, str]:
        """Secret variable names → their sanitized form."""
        return dict(self.document["secret_env"])

    @property
    def metadata(self) -> Mapping[str, str]:
        return dict(self.document["metadata"])

    @property
    def phases(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return tuple((p["name"], tuple(p["commands"])) for p in self.document["phases"])

    @property
    def source(self) -> Mapping[str, object] | None:
        """``{url, ref, commit_sha}`` or ``{archive_sha256, archive_bytes}``; None: no source."""
        source = self.document.get("source")
        return None if source is None else dict(source)

    @property
    def sanitize_key_id(self) -> str:
        return str(self.document["sanitize_key_id"])

    @property
    def commit_sha(self) -> str:
        """The commit the run is for: its git source's when it has one, else
        ``metadata.commit_sha`` (empty when neither names one). A plan artifact is bound to it."""
        source = self.document.get("source")
        if isinstance(source, Mapping) and isinstance(source.get("commit_sha"), str):
            return str(source["commit_sha"])
        return str(self.document["metadata"].get("commit_sha", ""))

    @property
    def stage(self) -> str | None:
        """``plan`` or ``apply`` for the halves of a confirmed run, else None."""
        stage = self.document.get("stage")
        return None if stage is None else str(stage)

    @property
    def plan_of(self) -> str | None:
        plan_of = self.document.get("plan_of")
        return None if plan_of is None else str(plan_of)

    def encoded(self) -> bytes:
        return canonical_json(self.document)


def manifest_from_spec(spec: RunSpec, sanitizer: Sanitizer) -> RunManifest:
    """The manifest of ``spec``: no secret byte, only sanitized forms and digests."""
    files = []
    for item in spec.files:
        if isinstance(item.content, bytes):
            digest = "sha256:" + hashlib.sha256(item.content).hexdigest()
        else:
            digest = sanitizer.sanitize(item.content)
        files.append(
            {"path": item.path, "mode": item.mode, "secret": item.secret, "digest": digest}
        )
    limits: dict[str, int | float] = {}
    if spec.limits.memory_bytes is not None:
        limits["memory_bytes"] = spec.limits.memory_bytes
    if spec.limits.pids is not None:
        limits["pids"] = spec.limits.pids
    if spec.limits.cpus is not None:
        limits["cpus"] = spec.limits.cpus
    if spec.limits.time_seconds is not None:
        limits["time_seconds"] = spec.limits.time_seconds
    source = source_manifest(spec.source)
    return RunManifest(
        document={
            **({} if source is None else {"source": source}),
            "run_id": spec.run_id,
            "run_type": spec.run_type,
            "image": spec.image,
            "phases": [{"name": p.name, "commands": list(p.commands)} for p in spec.phases],
            "env": dict(spec.env),
            "secret_env": {k: sanitizer.sanitize(v) for k, v in spec.secret_env.items()},
            "files": files,
            "binaries": [{"name": b.name, "version": b.version} for b in spec.binaries],
            "limits": limits,
            "metadata": dict(spec.metadata),
            "sanitize_key_id": sanitize_key_id(sanitizer),
            # A confirmed run's stage: only present on its two halves (docs/runspec.md).
            **({} if spec.stage is None else {"stage": spec.stage}),
            **({} if spec.plan_of is None else {"plan_of": spec.plan_of}),
        }
    )


@dataclass(frozen=True, kw_only=True)
class PlanBinding:
    """What an applying run's ticket says about the plan it must apply: the planning run, the
    SHA-256 of the sealed artifact that run uploaded, and the commit it was planned for."""

    run_id: str
    sha256: str
    commit_sha: str

    def document(self) -> dict[str, str]:
        return {"run_id": self.run_id, "sha256": self.sha256, "commit_sha": self.commit_sha}


@dataclass(frozen=True, kw_only=True)
class RunTicket:
    """The encoded ticket and its signature, as they travel in ``assign``."""

    encoded: bytes
    signature: bytes


def sign_ticket(
    manifest: RunManifest,
    *,
    pool_id: str,
    worker_id: str,
    lease_id: str,
    envelope: bytes,
    signing_key: Ed25519PrivateKey,
    plan: PlanBinding | None = None,
) -> RunTicket:
    """The control plane's side: bind ``manifest`` to one lease of one sealed run state (and an
    applying run to the plan artifact it must apply)."""
    encoded = canonical_json(
        {
            "version": TICKET_VERSION,
            "run_id": manifest.run_id,
            "pool_id": pool_id,
            "worker_id": worker_id,
            "lease_id": lease_id,
            "envelope_sha256": hashlib.sha256(envelope).hexdigest(),
            "manifest": dict(manifest.document),
            **({} if plan is None else {"plan": plan.document()}),
        }
    )
    if len(encoded) > MAX_TICKET_BYTES:
        raise _refuse(
            f"it is {len(encoded)} bytes, over the limit of {MAX_TICKET_BYTES}",
            "ticket_too_large",
        )
    return RunTicket(encoded=encoded, signature=signing_key.sign(TICKET_DOMAIN + encoded))


@dataclass(frozen=True, kw_only=True)
class VerifiedTicket:
    """A ticket whose signature, run, pool and lease were checked (built by verify_ticket)."""

    run_id: str
    pool_id: str
    worker_id: str
    lease_id: str
    envelope_sha256: str
    manifest: RunManifest
    plan: PlanBinding | None = None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _refuse(f"the key {key[:64]!r} appears twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:  # noqa: ANN401 - json's parse_constant hook
    raise _refuse(f"it holds the non-JSON number {name}")


def _depth(value: object, depth: int = 0) -> int:
    if depth > MAX_TICKET_DEPTH:
        raise _refuse(f"it is nested deeper than {MAX_TICKET_DEPTH} levels")
    if isinstance(value, dict):
        return max((_depth(v, depth + 1) for v in value.values()), default=depth)
    if isinstance(value, list):
        return max((_depth(v, depth + 1) for v in value), default=depth)
    return depth


def _str(value: object, what: str, max_chars: int = 128 * 1024) -> str:
    if not isinstance(value, str) or len(value) > max_chars:
        raise _refuse(f"{what} is not a string of at most {max_chars} characters")
    return value


def _check_manifest(value: object) -> RunManifest:
    if not isinstance(value, dict) or set(value) - _OPTIONAL_MANIFEST_KEYS != _MANIFEST_KEYS:
        raise _refuse("the manifest does not have exactly the documented fields")
    if "source" in value:
        source = value["source"]
        if not isinstance(source, dict) or frozenset(source) not in _SOURCE_KEYS:
            raise _refuse("manifest.source does not have the documented fields")
        for key, item in source.items():
            if key == "archive_bytes":
                if not isinstance(item, int) or isinstance(item, bool) or item < 0:
                    raise _refuse("manifest.source.archive_bytes is not a size")
            elif key == "auth":
                if not isinstance(item, dict) or set(item) != {"username", "secret_env"}:
                    raise _refuse("manifest.source.auth does not have the documented fields")
                for part in ("username", "secret_env"):
                    _str(item[part], f"manifest.source.auth.{part}", 128)
            else:
                _str(item, f"manifest.source.{key}", 2048)
    if value.get("stage", "plan") not in ("plan", "apply"):
        raise _refuse("manifest.stage is not plan or apply")
    if (value.get("stage") == "apply") != ("plan_of" in value):
        raise _refuse("manifest.plan_of is given without stage apply, or missing with it")
    if "plan_of" in value:
        _str(value["plan_of"], "manifest.plan_of", 128)
    _str(value["run_id"], "manifest.run_id", 128)
    if value["run_type"] not in ("ro", "wo"):
        raise _refuse("manifest.run_type is not ro or wo")
    if value["image"] is not None:
        _str(value["image"], "manifest.image", 255)
    _str(value["sanitize_key_id"], "manifest.sanitize_key_id", 64)
    for name in ("env", "secret_env", "metadata", "limits"):
        if not isinstance(value[name], dict):
            raise _refuse(f"manifest.{name} is not an object")
    for name in ("env", "secret_env", "metadata"):
        for key, item in value[name].items():
            _str(key, f"a key of manifest.{name}", 128)
            _str(item, f"manifest.{name}.{key[:64]}")
    for key, item in value["limits"].items():
        if key not in ("memory_bytes", "pids", "cpus", "time_seconds") or isinstance(item, bool):
            raise _refuse("manifest.limits has an unknown field")
        if not isinstance(item, int | float) or not math.isfinite(item):
            raise _refuse(f"manifest.limits.{key} is not a number")
    for name, keys in (
        ("phases", {"name", "commands"}),
        ("files", {"path", "mode", "secret", "digest"}),
        ("binaries", {"name", "version"}),
    ):
        items = value[name]
        if not isinstance(items, list) or len(items) > 1024:
            raise _refuse(f"manifest.{name} is not a list of at most 1024 items")
        for item in items:
            if not isinstance(item, dict) or set(item) != keys:
                raise _refuse(f"an item of manifest.{name} does not have the documented fields")
    for phase in value["phases"]:
        _str(phase["name"], "a phase name", 32)
        if not isinstance(phase["commands"], list):
            raise _refuse("a phase's commands are not a list")
        for command in phase["commands"]:
            _str(command, "a command")
    for item in value["binaries"]:
        # The names become paths in the release directory: the run spec's own grammar.
        if not _BINARY_RE.fullmatch(_str(item["name"], "a binary name", 64)):
            raise _refuse("a binary name is not a release name")
        if not _VERSION_RE.fullmatch(_str(item["version"], "a binary version", 64)):
            raise _refuse("a binary version is not a release version")
    return RunManifest(document=value)


def verify_ticket(
    encoded: bytes,
    signature: bytes,
    *,
    signer_public_key: Ed25519PublicKey,
    run_id: str,
    pool_id: str,
    worker_id: str,
    lease_id: str,
) -> VerifiedTicket:
    """Check the ticket of one assignment: size, signature, then its fields; or raise."""
    if len(encoded) > MAX_TICKET_BYTES:
        raise _refuse(
            f"it is {len(encoded)} bytes, over the limit of {MAX_TICKET_BYTES}", "ticket_too_large"
        )
    if len(signature) != _SIGNATURE_BYTES:
        raise _refuse("its signature is not 64 bytes", "ticket_signature_invalid")
    try:
        signer_public_key.verify(signature, TICKET_DOMAIN + encoded)
    except InvalidSignature:
        raise _refuse(
            "its signature does not verify with the control plane's key from the token",
            "ticket_signature_invalid",
        ) from None
    try:
        document = json.loads(
            encoded.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _refuse("it is not a UTF-8 JSON object") from None
    _depth(document)
    if not isinstance(document, dict) or set(document) - {"plan"} != _TICKET_KEYS:
        raise _refuse("it does not have exactly the documented fields")
    if document["version"] != TICKET_VERSION or isinstance(document["version"], bool):
        raise _refuse(f"its version is not {TICKET_VERSION}", "ticket_version_unsupported")
    manifest = _check_manifest(document["manifest"])
    checks = (
        ("run_id", run_id, "ticket_run_mismatch"),
        ("pool_id", pool_id, "ticket_pool_mismatch"),
        ("worker_id", worker_id, "ticket_worker_mismatch"),
        ("lease_id", lease_id, "ticket_lease_mismatch"),
    )
    for key, expected, reason in checks:
        if document[key] != expected:
            raise _refuse(f"its {key} is not the assignment's", reason)
    if manifest.run_id != run_id:
        raise _refuse("its manifest names another run", "ticket_run_mismatch")
    digest = _str(document["envelope_sha256"], "envelope_sha256", 64)
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise _refuse("envelope_sha256 is not 64 lower-case hex digits")
    plan: PlanBinding | None = None
    if "plan" in document:
        raw = document["plan"]
        if not isinstance(raw, dict) or set(raw) != _PLAN_KEYS:
            raise _refuse("its plan does not have exactly the documented fields")
        sha = _str(raw["sha256"], "plan.sha256", 64)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise _refuse("plan.sha256 is not 64 lower-case hex digits")
        plan = PlanBinding(
            run_id=_str(raw["run_id"], "plan.run_id", 128),
            sha256=sha,
            commit_sha=_str(raw["commit_sha"], "plan.commit_sha", 128),
        )
    if (plan is not None) != (manifest.stage == "apply"):
        raise _refuse("an applying run needs its plan binding, and only it has one")
    if plan is not None and plan.run_id != manifest.plan_of:
        raise _refuse("its plan binding names another planning run", "plan_run_mismatch")
    return VerifiedTicket(
        plan=plan,
        run_id=run_id,
        pool_id=pool_id,
        worker_id=worker_id,
        lease_id=lease_id,
        envelope_sha256=digest,
        manifest=manifest,
    )


def check_spec_matches(spec: RunSpec, manifest: RunManifest, sanitizer: Sanitizer) -> None:
    """After decryption: the run spec must be exactly what the policy judged, or raise."""
    actual = manifest_from_spec(spec, sanitizer).document
    if actual == dict(manifest.document):
        return
    differing = sorted(
        k
        for k in _MANIFEST_KEYS | _OPTIONAL_MANIFEST_KEYS
        if actual.get(k) != manifest.document.get(k)
    )
    raise _refuse(
        "the decrypted run spec differs from the signed manifest the policy judged "
        f"(fields: {', '.join(differing)})",
        "manifest_mismatch",
    )
