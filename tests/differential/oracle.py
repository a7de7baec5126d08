"""Evaluate one Rego v1 module under the real OPA engine and under the launcher's engine.

The oracle is OPA's Go engine as a c-shared library (`opa-golib-python-bindings`, fetched by
``scripts/fetch-opa-oracle`` into a cache directory and loaded with ctypes, never installed).
Both sides evaluate ``data.<package>.<rule>`` of the same module and input and reduce the answer
to an :class:`Outcome`: a JSON value, ``undefined``, an evaluation ``error`` or a
``compile_error`` (OPA refuses at compile time what regorus often finds only when evaluating,
and the launcher refuses at start-up too, so both count as "refused").
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher.errors import LauncherError
from hardened_launcher.policy.engine import RegoEngine, compile_policy
from hardened_launcher.policy.errors import PolicyCompileError
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.source import PolicyBundle, PolicyFile, Syntax
from tests.conftest import integration_required

ROOT = Path(__file__).resolve().parents[2]
FETCH = ROOT / "scripts" / "fetch-opa-oracle"
MODULE_FILE = "case.rego"
REFUSED = frozenset({"compile_error", "error"})


@dataclass(frozen=True)
class Outcome:
    kind: str  # "value" | "undefined" | "error" | "compile_error"
    value: Any = None
    message: str = ""

    def same_as(self, other: Outcome) -> bool:
        if self.kind == "value" and other.kind == "value":
            return bool(_canonical(self.value) == _canonical(other.value))
        # Refused at compile time or at evaluation time: the run is denied either way.
        if self.kind in REFUSED and other.kind in REFUSED:
            return True
        return self.kind == other.kind

    def show(self) -> str:
        if self.kind == "value":
            return json.dumps(self.value, sort_keys=True)[:300]
        return f"<{self.kind}> {self.message[:200]}"


def _canonical(value: Any) -> Any:
    """Exact comparison: integers and floats of equal value are equal, but 1 is not True."""
    if isinstance(value, bool) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, _canonical(v)) for k, v in value.items())))
    return (type(value).__name__, value)


class Opa:
    """The real OPA engine, loaded from the fetched wheel."""

    def __init__(self, package_dir: Path) -> None:
        if str(package_dir) not in sys.path:
            sys.path.insert(0, str(package_dir))
        self._bindings: Any = importlib.import_module("opa_bindings")

    def engine(self) -> Any:
        """A fresh OPA engine (the caller closes it); prints are discarded."""
        engine = self._bindings.OpaEngine()
        engine.print_handler = lambda _message, _location: None
        return engine

    @property
    def error(self) -> type[Exception]:
        error: type[Exception] = self._bindings.OpaError
        return error

    def evaluate(self, module: str, rule: str, input_doc: Any, *, package: str = "t") -> Outcome:
        engine = self._bindings.OpaEngine()
        engine.print_handler = lambda _message, _location: None
        try:
            try:
                engine.add_policy(MODULE_FILE, module)
            except self._bindings.OpaError as exc:
                return Outcome("compile_error", message=str(exc))
            try:
                value = engine.eval_document(f"{package}.{rule}", input_doc)
            except self._bindings.OpaUndefinedError:
                return Outcome("undefined")
            except self._bindings.OpaError as exc:
                kind = "compile_error" if "compile" in exc.code else "error"
                return Outcome(kind, message=str(exc))
            return Outcome("value", value)
        finally:
            engine.close()


def ours(
    module: str, rule: str, input_doc: Any, *, package: str = "t", syntax: str = "v1"
) -> Outcome:
    """The launcher's engine with its overrides and compile-time checks."""
    bundle = PolicyBundle(
        root=Path(),
        files=(PolicyFile(path=MODULE_FILE, text=module),),
        data={},
        sha256=hashlib.sha256(module.encode()).hexdigest(),
    )
    try:
        engine, _ = compile_policy(
            bundle, sanitizer=Sanitizer.random(), syntax=Syntax(syntax), require_deny=False
        )
    except PolicyCompileError as exc:
        return Outcome("compile_error", message=exc.message)
    return ours_eval(engine, rule, input_doc, package=package)


def ours_eval(engine: RegoEngine, rule: str, input_doc: Any, *, package: str = "t") -> Outcome:
    try:
        engine.set_input_json(json.dumps(input_doc))
        text = engine.eval_rule_json(f"data.{package}.{rule}")
    except LauncherError as exc:
        return Outcome("error", message=exc.message)
    if text is None:
        return Outcome("undefined")
    return Outcome("value", json.loads(text))


def fetch_oracle() -> Path | None:
    """The directory holding ``opa_bindings``; None (skip locally, fail in CI) if unavailable."""
    env = {**os.environ}
    result = subprocess.run(
        [sys.executable, str(FETCH)], capture_output=True, text=True, check=False, env=env
    )
    if result.returncode != 0:
        message = f"the OPA oracle could not be fetched: {result.stderr.strip()[-500:]}"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)
    return Path(result.stdout.strip().splitlines()[-1])
