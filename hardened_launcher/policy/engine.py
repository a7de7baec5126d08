"""The Rego engine behind a small interface: regorus (``gordon-to-regorus``, exact pin) today.

Everything the rest of the launcher knows about Rego goes through :class:`RegoEngine` (one
engine, bound to the thread that made it) and :func:`compile_policy` / :func:`evaluate_spacelift`;
swapping the engine means reimplementing this module and passing ``tests/policy_conformance``.

Engine facts that shape this module (all checked by tests):

- regorus objects are *unsendable*: used from another thread they panic. :class:`RegoEngine`
  records its thread and refuses other threads with a plain ``RuntimeError`` first.
- An engine panic surfaces as ``pyo3_runtime.PanicException``, a ``BaseException`` subclass;
  :func:`translate` catches it explicitly and maps it to :class:`PolicyEngineCrashError`.
- Evaluation holds the GIL: a runaway evaluation freezes every Python thread of the process, so a
  watchdog *thread* cannot enforce a timeout. Hard timeouts therefore live in
  :mod:`hardened_launcher.policy.worker` (a child process that is killed and replaced).
- The binding exposes no execution-time or instruction limits; it exposes policy length limits,
  which :func:`new_engine` sets.
- Error text carries ``--> file:line:col``, a source excerpt and ``error: …``; with
  ``RUST_BACKTRACE`` set it also carries a backtrace. :func:`clean_engine_message` keeps only
  ``file:line:col: message``, and :func:`scrub_rust_environment` unsets the variables.
- There are no network or process builtins: ``http.send`` is undefined (evaluates to nothing),
  there is no ``exec``; ``time.now_ns`` and the ``sanitized`` extension are the only impure ones
  (``io.jwt.decode_verify``, an extension from :mod:`hardened_launcher.policy.jwt`, reads the
  clock when its constraints give no ``time``).
- Extensions may have dotted names (``io.jwt.decode_verify`` is registered as is), cannot be
  replaced with ``with … as`` in tests (regorus reports "undefined rule"), and an exception they
  raise becomes an evaluation error carrying its message — so they must never put input in it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hardened_launcher.errors import LauncherError
from hardened_launcher.policy.errors import (
    PolicyCompileError,
    PolicyEngineCrashError,
    PolicyEvaluationError,
    PolicyUndefinedDenyError,
)
from hardened_launcher.policy.regovalue import check_lossless
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.source import PolicyBundle, PolicyFile, Syntax

ENGINE_NAME = "regorus"
ENGINE_VERSION = "0.13.0"  # gordon-to-regorus, pinned exactly in pyproject.toml
PACKAGE = "data.spacelift"
DENY_RULE = f"{PACKAGE}.deny"
SAMPLE_RULE = f"{PACKAGE}.sample"
SANITIZED_BUILTIN = "sanitized"
MAX_DENY_MESSAGES = 100
MAX_DENY_MESSAGE_CHARS = 1000
MAX_ENGINE_MESSAGE_CHARS = 400
MAX_POLICY_LINES = 20_000
MAX_POLICY_COLUMNS = 1_000

_LOCATION = re.compile(r"-->\s*(?P<where>[^\s]+:[0-9]+:[0-9]+)")
_ERROR_LINE = re.compile(r"^\s*error:\s*(?P<text>.*)$", re.MULTILINE)
_BACKTRACE_MARKERS = ("Stack backtrace:", "stack backtrace:", "\nnote: run with")
# Errors a probe evaluation reports that are about the policy text, not the input.
_STATIC_ERRORS = ("unsafe", "could not find function", "recursion", "not a valid rule path")

T = TypeVar("T")


def scrub_rust_environment() -> None:
    """Unset backtrace variables before the engine first reads them (anyhow caches them)."""
    os.environ.pop("RUST_BACKTRACE", None)
    os.environ.pop("RUST_LIB_BACKTRACE", None)


scrub_rust_environment()


def clean_engine_message(text: str) -> str:
    """``file:line:col: message`` from an engine error, without excerpt or backtrace."""
    for marker in _BACKTRACE_MARKERS:
        text = text.split(marker, 1)[0]
    location = _LOCATION.search(text)
    errors = [m.group("text").strip() for m in _ERROR_LINE.finditer(text)]
    if errors:
        message = errors[0]
        caused = text.split("Caused by:", 1)
        if len(caused) == 2 and caused[1].strip():
            message = f"{message}: {caused[1].strip().splitlines()[0].strip()}"
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        message = lines[-1] if lines else "unknown engine error"
    message = " ".join(message.split())
    if location:
        message = f"{location.group('where')}: {message}"
    if len(message) > MAX_ENGINE_MESSAGE_CHARS:
        message = message[: MAX_ENGINE_MESSAGE_CHARS - 1] + "…"
    return message


def translate(
    call: Callable[[], T],
    *,
    error: type[LauncherError],
    what: str,
    hint: str,
) -> T:
    """Run one engine call; map every engine failure, panics included, to our hierarchy."""
    try:
        return call()
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except LauncherError:
        raise
    except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
        raise error(
            f"{what}: {clean_engine_message(str(exc))}", hint=hint, reason=error.default_reason
        ) from None
    except BaseException as exc:  # noqa: BLE001 - pyo3 PanicException derives from BaseException
        raise PolicyEngineCrashError(
            f"the policy engine panicked during {what}: {clean_engine_message(str(exc))}",
            hint="the run is denied; report the policy and the input that triggered it",
            reason="policy_engine_panic",
        ) from None


@dataclass(frozen=True, kw_only=True)
class RuleInfo:
    package: str  # data.spacelift_test
    name: str  # test_allows_main
    file: str
    line: int
    col: int

    @property
    def path(self) -> str:
        return f"{self.package}.{self.name}"


def _ref_name(node: object) -> str | None:
    """The leading variable name of a rule-head reference in the AST JSON."""
    while isinstance(node, dict) and len(node) == 1:
        kind, inner = next(iter(node.items()))
        if kind == "Var" and isinstance(inner, dict):
            value = inner.get("value")
            return value if isinstance(value, str) else None
        if isinstance(inner, dict) and "refr" in inner:
            node = inner["refr"]
            continue
        return None
    return None


def _package_name(node: object) -> str:
    parts: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        kind, inner = next(iter(node.items()))
        if not isinstance(inner, dict):
            break
        if kind == "Var":
            parts.append(str(inner.get("value")))
            break
        if kind == "RefDot":
            field_ = inner.get("field")
            if isinstance(field_, list) and field_:
                parts.append(str(field_[-1]))
        elif kind == "RefBrack":
            index = inner.get("index")
            if isinstance(index, dict) and "String" in index:
                parts.append(str(index["String"].get("value")))
        node = inner.get("refr")
    return "data." + ".".join(reversed(parts))


def _regorus() -> Any:  # noqa: ANN401  # the binding ships no stubs
    """The regorus module, imported on first use: a launcher daemon evaluates policies in its
    policy worker process and never needs the engine's ~6 MiB itself."""
    import regorus  # type: ignore[import-untyped]  # noqa: PLC0415

    return regorus


@functools.cache
def _extensions() -> tuple[tuple[str, int, Callable[..., Any]], ...]:
    """The launcher's builtins (``re2``, ``decimal``, JWT), imported with the engine on first
    use: the daemon builds no engine, only its policy worker does."""
    from hardened_launcher.policy.builtins import BUILTINS  # noqa: PLC0415
    from hardened_launcher.policy.jwt import extensions  # noqa: PLC0415

    return (*BUILTINS, *extensions())


class RegoEngine:
    """One regorus engine, usable only from the thread that created it."""

    def __init__(self, *, sanitizer: Sanitizer, coverage: bool = False) -> None:
        self._thread = threading.get_ident()
        self._engine = _regorus().Engine()
        self._engine.set_policy_length_config(
            max_col=MAX_POLICY_COLUMNS, max_file_bytes=1024 * 1024, max_lines=MAX_POLICY_LINES
        )
        self._engine.set_gather_prints(True)
        self._engine.add_extension(SANITIZED_BUILTIN, 1, _sanitized_builtin(sanitizer))
        for name, arity, function in _extensions():
            self._engine.add_extension(name, arity, lossless_arguments(name, function))
        if coverage:
            self._engine.set_enable_coverage(True)

    def _check_thread(self) -> None:
        if threading.get_ident() != self._thread:
            raise RuntimeError("a RegoEngine is used only from the thread that created it")

    @property
    def raw(self) -> object:
        """The underlying engine (tests use it to provoke real engine failures)."""
        return self._engine

    def add_file(self, file: PolicyFile, syntax: Syntax) -> Syntax:
        """Parse one file; with ``Syntax.AUTO`` try v1, then legacy v0. Returns the syntax used."""
        self._check_thread()
        order = [Syntax.V1, Syntax.V0] if syntax is Syntax.AUTO else [syntax]
        failures: dict[Syntax, str] = {}
        for candidate in order:
            self._engine.set_rego_v0(candidate is Syntax.V0)
            try:
                with _quiet_stderr(syntax is Syntax.AUTO and candidate is Syntax.V0):
                    translate(
                        lambda: self._engine.add_policy(file.path, file.text),
                        error=PolicyCompileError,
                        what="parse",
                        hint="",
                    )
            except PolicyCompileError as exc:
                failures[candidate] = exc.message.removeprefix("parse: ")
                continue
            return candidate
        self._engine.set_rego_v0(False)
        if syntax is Syntax.AUTO:
            looks_v1 = bool(re.search(r"\bimport\s+rego\.v1\b|\bif\b|\bcontains\b", file.text))
            shown = failures[Syntax.V1] if looks_v1 else failures[Syntax.V0]
            other = failures[Syntax.V0] if looks_v1 else failures[Syntax.V1]
            raise PolicyCompileError(
                shown,
                hint="the file is neither valid Rego v1 nor valid legacy (v0) Rego; fix it, "
                "or force one syntax with HL_POLICY_SYNTAX=v0|v1",
                reason="policy_compile_error",
                detail=f"as {'v0' if looks_v1 else 'v1'}: {other}",
            )
        raise PolicyCompileError(
            failures[syntax],
            hint=f"the file is not valid Rego {syntax.value} (HL_POLICY_SYNTAX forces it)",
            reason="policy_compile_error",
        )

    def add_data(self, data: Mapping[str, object]) -> None:
        self._check_thread()
        if data:
            text = json.dumps(data)
            translate(
                lambda: self._engine.add_data_json(text),
                error=PolicyCompileError,
                what="loading data",
                hint="check the data files",
            )

    def ast_modules(self) -> list[dict[str, Any]]:
        self._check_thread()
        modules: list[dict[str, Any]] = json.loads(self._engine.get_ast_as_json())
        return modules

    def rules(self) -> tuple[RuleInfo, ...]:
        from hardened_launcher.policy import static_checks  # noqa: PLC0415  # engines only

        self._check_thread()
        modules = self.ast_modules()
        found: list[RuleInfo] = []
        for module in modules:
            file = str(module.get("source", {}).get("file", "?"))
            if file == static_checks.RUNTIME_FILE:
                continue  # the launcher's own helpers (static_checks.RUNTIME_MODULE)
            ast = module.get("ast", {})
            package = _package_name(ast.get("package", {}).get("refr"))
            for rule in ast.get("rules", []):
                body = next(iter(rule.values())) if isinstance(rule, dict) and rule else {}
                head = body.get("head", {}) if isinstance(body, dict) else {}
                head_body = next(iter(head.values())) if isinstance(head, dict) and head else {}
                if not isinstance(head_body, dict):
                    continue
                name = _ref_name(head_body.get("refr"))
                span = body.get("span", {})
                if name is not None:
                    found.append(
                        RuleInfo(
                            package=package,
                            name=name,
                            file=file,
                            line=int(span.get("line", 0)),
                            col=int(span.get("col", 0)),
                        )
                    )
        return tuple(found)

    def set_input_json(self, text: str) -> None:
        self._check_thread()
        translate(
            lambda: self._engine.set_input_json(text),
            error=PolicyEvaluationError,
            what="setting the input",
            hint="the input must be a JSON document",
        )

    def eval_rule(self, path: str) -> object:
        """The rule's value, or ``None`` when it is undefined."""
        self._check_thread()
        return translate(
            lambda: self._engine.eval_rule(path),
            error=PolicyEvaluationError,
            what=f"evaluating {path}",
            hint="the run is denied; fix the policy (`hardened-launcher policy eval` reproduces "
            "it)",
        )

    def eval_rule_json(self, path: str) -> str | None:
        """The rule's value as JSON (sets as sorted arrays), or ``None`` when it is undefined."""
        self._check_thread()
        text: str = translate(
            lambda: self._engine.eval_query_as_json(f"__hl_value := {path}"),
            error=PolicyEvaluationError,
            what=f"evaluating {path}",
            hint="fix the policy",
        )
        results = json.loads(text).get("result") or []
        if not results:
            return None
        return json.dumps(results[0]["bindings"]["__hl_value"])

    def take_prints(self) -> list[str]:
        self._check_thread()
        prints: list[object] = self._engine.take_prints()
        return [str(p) for p in prints]

    def coverage(self) -> dict[str, object]:
        self._check_thread()
        report: dict[str, object] = json.loads(self._engine.get_coverage_report_as_json())
        return report


@contextmanager
def _quiet_stderr(active: bool) -> Iterator[None]:
    """Silence the engine's parser warnings while a v1 file is tried as legacy v0."""
    if not active:
        yield
        return
    saved = os.dup(2)
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def lossless_arguments(name: str, function: Callable[..., object]) -> Callable[..., object]:
    """``function``, refusing arguments that lost set elements on their way to Python."""

    def checked(*args: object) -> object:
        for arg in args:
            check_lossless(arg, name)
        return function(*args)

    return checked


def _sanitized_builtin(sanitizer: Sanitizer) -> Callable[[object], str]:
    def sanitized(value: object) -> str:
        if not isinstance(value, str):
            raise TypeError("sanitized() takes a string")
        return sanitizer.sanitize(value)

    return sanitized


@functools.cache
def known_builtins() -> frozenset[str]:
    """Every builtin a policy may call: regorus's own plus the launcher's extensions."""
    probe = _regorus().Engine()
    probe.add_policy("probe.rego", "package probe\n\nbuiltins := opa.runtime().builtins\n")
    names = probe.eval_rule("data.probe.builtins")
    extensions = {name for name, _, _ in _extensions()}
    return frozenset({*names, *extensions, SANITIZED_BUILTIN})


@dataclass(frozen=True, kw_only=True)
class CompiledPolicy:
    """Proof that a policy bundle compiled: what :func:`check_policy_path` returns."""

    bundle: PolicyBundle
    syntaxes: Mapping[str, Syntax]  # file -> syntax it was read as
    has_sample: bool
    rules: tuple[RuleInfo, ...] = field(default=())

    @property
    def sha256(self) -> str:
        return self.bundle.sha256


def load_files(
    files: tuple[PolicyFile, ...],
    data: Mapping[str, object],
    *,
    sanitizer: Sanitizer,
    syntax: Syntax = Syntax.AUTO,
    fixed: Mapping[str, Syntax] | None = None,
    coverage: bool = False,
) -> tuple[RegoEngine, dict[str, Syntax], tuple[RuleInfo, ...]]:
    """A fresh engine holding ``files`` and ``data``, after the compile-time checks.

    :func:`~hardened_launcher.policy.static_checks.check_modules` refuses what would mean two
    things and may return files with negation guards inserted and arithmetic, ``count`` and
    ``time.format`` rewritten into conformant calls; those are loaded instead (a second engine,
    with the launcher's runtime module), so evaluation means what OPA means.
    """
    from hardened_launcher.policy import static_checks  # noqa: PLC0415  # engines only

    engine = RegoEngine(sanitizer=sanitizer, coverage=coverage)
    syntaxes = {
        file.path: engine.add_file(file, (fixed or {}).get(file.path, syntax)) for file in files
    }
    engine.add_data(data)
    rules = engine.rules()
    rewritten = static_checks.check_modules(
        engine.ast_modules(),
        rule_names=frozenset(rule.name for rule in rules),
        builtins=known_builtins(),
        texts={file.path: file.text for file in files},
        legacy_files=frozenset(path for path, used in syntaxes.items() if used is Syntax.V0),
    )
    if rewritten:
        engine = RegoEngine(sanitizer=sanitizer, coverage=coverage)
        for file in files:
            text = rewritten.get(file.path, file.text)
            engine.add_file(PolicyFile(path=file.path, text=text), syntaxes[file.path])
        runtime = PolicyFile(path=static_checks.RUNTIME_FILE, text=static_checks.RUNTIME_MODULE)
        engine.add_file(runtime, Syntax.V1)
        engine.add_data(data)
        rules = engine.rules()
    return engine, syntaxes, rules


def compile_policy(
    bundle: PolicyBundle,
    *,
    sanitizer: Sanitizer,
    syntax: Syntax = Syntax.AUTO,
    fixed: Mapping[str, Syntax] | None = None,
    require_deny: bool = True,
    coverage: bool = False,
    probe: bool = True,
) -> tuple[RegoEngine, CompiledPolicy]:
    """Load ``bundle`` into a fresh engine in this thread and probe it once with ``{}``.

    The probe catches what regorus reports only at first evaluation (unsafe variables, unknown
    functions); errors that depend on the input are left for run time. ``fixed`` gives the
    syntax each file was already detected as (the worker process re-reads files that way).
    ``probe=False`` leaves the probe (:func:`probe_policy`) to the caller.
    """
    engine, syntaxes, rules = load_files(
        bundle.files,
        bundle.data,
        sanitizer=sanitizer,
        syntax=syntax,
        fixed=fixed,
        coverage=coverage,
    )
    names = {rule.path for rule in rules}
    if require_deny and DENY_RULE not in names:
        raise PolicyCompileError(
            f"the policy has no `deny` rule in package spacelift ({bundle.root})",
            hint="a run initialization policy is `package spacelift` with a `deny` set of "
            "messages; without one it would allow everything, so it is refused",
            reason="policy_no_deny_rule",
        )
    has_sample = SAMPLE_RULE in names
    if require_deny and probe:
        probe_policy(engine, has_sample=has_sample)
    return engine, CompiledPolicy(
        bundle=bundle, syntaxes=syntaxes, has_sample=has_sample, rules=rules
    )


def probe_policy(engine: RegoEngine, *, has_sample: bool) -> None:
    """Evaluate ``deny`` (and ``sample``) once with ``{}``: what regorus reports only at first
    evaluation (unsafe variables, unknown functions) becomes a :class:`PolicyCompileError`.
    Errors that depend on the input are left for run time. Unbounded in time and memory: the
    launcher runs it in the policy worker process (``probe=False`` here)."""
    engine.set_input_json("{}")
    for rule in (DENY_RULE, SAMPLE_RULE) if has_sample else (DENY_RULE,):
        try:
            engine.eval_rule(rule)
        except PolicyEvaluationError as exc:
            if any(marker in exc.message for marker in _STATIC_ERRORS):
                raise PolicyCompileError(
                    exc.message.split(": ", 1)[1],
                    hint="fix the policy; `hardened-launcher policy check PATH` repeats this",
                    reason="policy_compile_error",
                ) from None
    engine.take_prints()


@dataclass(frozen=True, kw_only=True)
class RawEvaluation:
    """What one evaluation produced, before the gate turns it into allow or deny."""

    deny: tuple[str, ...]
    sample: bool
    duration_ns: int


def _deny_messages(value: object) -> tuple[str, ...]:
    if value is None:
        raise PolicyUndefinedDenyError(
            "the policy's `deny` is undefined for this input",
            hint="a broken policy denies; define deny as a set (`deny contains msg if …`)",
            reason="policy_undefined_deny",
        )
    if not isinstance(value, set | frozenset | list) or not all(isinstance(m, str) for m in value):
        raise PolicyUndefinedDenyError(
            f"the policy's `deny` is a {type(value).__name__}, not a set of strings",
            hint="define deny as a set of messages (`deny contains msg if …`)",
            reason="policy_deny_malformed",
        )
    messages = sorted(set(value))
    clipped = [
        m if len(m) <= MAX_DENY_MESSAGE_CHARS else m[: MAX_DENY_MESSAGE_CHARS - 1] + "…"
        for m in messages[:MAX_DENY_MESSAGES]
    ]
    if len(messages) > MAX_DENY_MESSAGES:
        clipped.append(f"… and {len(messages) - MAX_DENY_MESSAGES} more deny messages")
    return tuple(clipped)


def evaluate_spacelift(engine: RegoEngine, input_json: str, *, has_sample: bool) -> RawEvaluation:
    """Evaluate ``deny`` (and ``sample`` if the policy has one) for one input document."""
    start = time.perf_counter_ns()
    engine.set_input_json(input_json)
    deny = _deny_messages(engine.eval_rule(DENY_RULE))
    sample = has_sample and engine.eval_rule(SAMPLE_RULE) is True
    duration = time.perf_counter_ns() - start
    engine.take_prints()
    return RawEvaluation(deny=deny, sample=sample, duration_ns=duration)
