"""The policy input document: the documented worker-side shape plus our ``launcher`` section.

:func:`build_input` takes run metadata (as the control plane sends it), the launcher's own facts
and the verified binaries, and returns a plain JSON-compatible ``dict``::

    {
      "docker_image": str, "worker_version": str,
      "run": {"id", "state", "type", "triggered_by", "created_at", "updated_at",
              "commit": {"author", "branch", "hash", "created_at", "message"},
              "changes", "user_provided_metadata", "based_on_local_workspace"},
      "static_run_environment": {"account_name", "run_type", "run_ulid", "stack_slug",
              "stack_labels", "command", "before_init", "before_apply", "commit_branch",
              "commit_sha", "project_root", "repository_path", "environment_variables",
              "terraform_version", "vendor_specific_config", "source", "stage",
              "plan_of", ...},
      "launcher": {"pool_id", "worker_id", "metadata": {str: str}, "version",
                   "binaries": {name: sha256}}
    }

Secret values never enter it: every :class:`~hardened_launcher.secrets.Secret` anywhere in the
metadata, and the value of every environment variable named in ``secret_variables``, is replaced
by its sanitized form (:mod:`hardened_launcher.policy.sanitize`).

The metadata is untrusted: only the documented top-level keys are accepted (``launcher`` is ours
and refused from outside), values must be JSON scalars, lists or string-keyed objects, nesting is
at most :data:`MAX_INPUT_DEPTH` deep, numbers must be finite (integers within 64 bits), and the
encoded document is at most :data:`MAX_INPUT_BYTES`. Refusals are :class:`PolicyInputError`
naming the path, never the value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from hardened_launcher.binaries.verify import VerifiedBinary
from hardened_launcher.policy.errors import PolicyInputError
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.secrets import Secret

MAX_INPUT_DEPTH = 32
MAX_INPUT_BYTES = 1024 * 1024
MAX_KEY_CHARS = 256

METADATA_KEYS: frozenset[str] = frozenset(
    {"docker_image", "worker_version", "run", "static_run_environment"}
)
RESERVED_KEYS: frozenset[str] = frozenset({"launcher"})

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]


@dataclass(frozen=True, kw_only=True)
class LauncherFacts:
    """The ``launcher`` section: who is evaluating. ``metadata`` is the operator's tags."""

    pool_id: str
    worker_id: str
    version: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("pool_id", "worker_id", "version"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"LauncherFacts.{name} must be a str")
        for key, value in self.metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("LauncherFacts.metadata maps str to str")


def _refuse(path: str, what: str) -> PolicyInputError:
    return PolicyInputError(
        f"the run metadata cannot be used as policy input: {path or 'the document'} {what}",
        hint="the control plane sent run metadata outside the documented shape; check its version",
    )


class _Builder:
    def __init__(self, sanitizer: Sanitizer, secret_variables: Collection[str]) -> None:
        self.sanitizer = sanitizer
        self.secret_variables = frozenset(secret_variables)

    def value(self, obj: object, path: str, depth: int) -> JSONValue:
        if depth > MAX_INPUT_DEPTH:
            raise _refuse(path, f"is nested deeper than {MAX_INPUT_DEPTH} levels")
        if isinstance(obj, Secret):
            return self.sanitizer.sanitize(obj)
        if obj is None or isinstance(obj, bool | str):
            return obj
        if isinstance(obj, int):
            if not -(2**63) <= obj < 2**64:
                # the engine would round it to a double; OPA compares it exactly: fail closed
                raise _refuse(path, "is an integer beyond 64 bits")
            return obj
        if isinstance(obj, float):
            if not math.isfinite(obj):
                raise _refuse(path, "is not a finite number")
            if obj.is_integer() or "e" in repr(obj):
                # OPA keeps the text (1.0, 1e-05) for json.marshal and sprintf; the engine
                # holds 1 or a double it prints otherwise: fail closed
                raise _refuse(path, "is a number written 1.0 or with an exponent")
            return obj
        if isinstance(obj, Mapping):
            out: dict[str, JSONValue] = {}
            for key, item in obj.items():
                if not isinstance(key, str):
                    raise _refuse(path, "has a key that is not a string")
                if len(key) > MAX_KEY_CHARS:
                    raise _refuse(path, f"has a key longer than {MAX_KEY_CHARS} characters")
                out[key] = self.value(item, f"{path}.{key}" if path else key, depth + 1)
            return out
        if isinstance(obj, list | tuple):
            return [self.value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(obj)]
        raise _refuse(path, f"has a value of unsupported type {type(obj).__name__}")

    def environment(self, env: object, path: str) -> JSONValue:
        built = self.value(env, path, 2)
        if isinstance(built, dict):
            for name in self.secret_variables & built.keys():
                raw = env[name] if isinstance(env, Mapping) else None
                if isinstance(raw, str):
                    built[name] = self.sanitizer.sanitize(raw)
                elif not (isinstance(raw, Secret) or raw is None):
                    raise _refuse(f"{path}.{name}", "is a secret variable that is not a string")
        return built


def build_input(
    metadata: Mapping[str, object],
    *,
    launcher: LauncherFacts,
    sanitizer: Sanitizer,
    binaries: Sequence[VerifiedBinary] = (),
    secret_variables: Collection[str] = (),
) -> dict[str, JSONValue]:
    """Return the policy input document for one run (see the module docstring)."""
    if not isinstance(metadata, Mapping):
        raise _refuse("", "is not an object")
    builder = _Builder(sanitizer, secret_variables)
    doc: dict[str, JSONValue] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise _refuse("", "has a key that is not a string")
        if key in RESERVED_KEYS:
            raise _refuse(key, "is reserved for the launcher and may not come from outside")
        if key not in METADATA_KEYS:
            raise _refuse(key[:MAX_KEY_CHARS], "is not a documented input field")
        if key == "static_run_environment" and isinstance(value, Mapping):
            section: dict[str, JSONValue] = {}
            for sub_key, sub_value in value.items():
                if not isinstance(sub_key, str):
                    raise _refuse(key, "has a key that is not a string")
                sub_path = f"{key}.{sub_key}"
                if sub_key == "environment_variables":
                    section[sub_key] = builder.environment(sub_value, sub_path)
                else:
                    section[sub_key] = builder.value(sub_value, sub_path, 2)
            doc[key] = section
        else:
            doc[key] = builder.value(value, key, 1)
    doc["launcher"] = {
        "pool_id": launcher.pool_id,
        "worker_id": launcher.worker_id,
        "version": launcher.version,
        "metadata": dict(launcher.metadata),
        "binaries": {binary.name: binary.sha256 for binary in binaries},
    }
    if len(encode_input(doc)) > MAX_INPUT_BYTES:
        raise _refuse("", f"is larger than {MAX_INPUT_BYTES} bytes once encoded")
    return doc


# Built once: ``json.dumps`` with options builds an encoder per call (stateless, so shareable).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def encode_input(doc: Mapping[str, JSONValue]) -> str:
    """The canonical JSON text handed to the engine (sorted keys, no NaN)."""
    return _CANONICAL.encode(doc)
