"""Engine wrapper and gate: semantics, fail-closed paths, message hygiene."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import regorus  # type: ignore[import-untyped]  # the binding ships no stubs

from hardened_launcher.audit import AuditSink, MemoryAuditLog, Outcome
from hardened_launcher.policy import (
    PolicyCompileError,
    PolicyDecision,
    PolicyDeniedError,
    PolicyEngineCrashError,
    PolicyEvaluationError,
    PolicyGate,
    PolicyTimeoutError,
    Sanitizer,
    Syntax,
    check_policy_path,
)
from hardened_launcher.policy.engine import RawEvaluation, clean_engine_message, translate
from hardened_launcher.policy.errors import PolicyUndefinedDenyError
from hardened_launcher.policy.worker import (
    InlineBackend,
    SubprocessBackend,
    decode_result,
    encode_result,
)

ALLOW_MAIN = (
    'package spacelift\nimport rego.v1\ndeny contains "not main" if input.branch != "main"\n'
)
# About 9 million iterations: seconds of engine time.
SLOW = (
    "package spacelift\nimport rego.v1\n"
    "deny contains msg if {\n  n := count([1 | some a in numbers.range(1, input.n); "
    'some b in numbers.range(1, input.n)])\n  msg := sprintf("%d", [n])\n}\n'
)


def write(tmp_path: Path, text: str, name: str = "policy.rego") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def gate_for(
    path: Path, *, timeout_s: float = 1.0, audit: AuditSink | None = None, isolated: bool = True
) -> PolicyGate:
    sanitizer = Sanitizer.random()
    return PolicyGate.start(
        check_policy_path(path, sanitizer=sanitizer),
        sanitizer=sanitizer,
        timeout_s=timeout_s,
        audit=audit,
        isolated=isolated,
    )


def test_allow_returns_proof_and_audits(tmp_path: Path) -> None:
    audit = MemoryAuditLog()
    with gate_for(write(tmp_path, ALLOW_MAIN), audit=audit, isolated=False) as gate:
        decision = gate.check({"branch": "main"}, run_id="run-1")
    assert isinstance(decision, PolicyDecision)
    assert decision.policy_sha256 == gate.compiled.sha256
    (event,) = audit.events
    assert (event.type, event.outcome, event.gate, event.run_id) == (
        "policy.allowed",
        Outcome.ALLOW,
        "policy",
        "run-1",
    )
    assert event.fields["policy_sha256"] == gate.compiled.sha256


def test_deny_raises_with_every_message(tmp_path: Path) -> None:
    text = ALLOW_MAIN + 'deny contains "second" if input.branch == "dev"\n'
    audit = MemoryAuditLog()
    with (
        gate_for(write(tmp_path, text), audit=audit, isolated=False) as gate,
        pytest.raises(PolicyDeniedError) as caught,
    ):
        gate.check({"branch": "dev"}, run_id="r")
    assert caught.value.messages == ("not main", "second")
    assert caught.value.reason == "policy_denied"
    assert audit.events[0].outcome is Outcome.DENY
    assert audit.events[0].fields["deny"] == ("not main", "second")


def test_digest_changes_with_sources(tmp_path: Path) -> None:
    first = check_policy_path(write(tmp_path, ALLOW_MAIN)).sha256
    second = check_policy_path(write(tmp_path, ALLOW_MAIN + "# comment\n")).sha256
    assert first != second
    assert len(first) == 64


def test_syntax_error_names_file_line_col_without_backtrace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'package spacelift\ndeny contains "x" if {\n  input.a ==\n}\n')
    with pytest.raises(PolicyCompileError) as caught:
        check_policy_path(path)
    assert caught.value.message.startswith("policy.rego:4:1: ")
    assert "backtrace" not in str(caught.value).lower()
    assert "\n" not in caught.value.message
    assert caught.value.reason == "policy_compile_error"


def test_clean_message_drops_backtrace_and_excerpt() -> None:
    raw = (
        "\n--> p.rego:3:7\n  |\n3 | x := 1/0\n  |       ^\nerror: divide by zero\n\n"
        "Stack backtrace:\n   0: <unknown>\n   1: secret_input_value\n"
    )
    assert clean_engine_message(raw) == "p.rego:3:7: divide by zero"


def test_legacy_file_in_forced_v1_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'package spacelift\ndeny["no"] { true }\n')
    assert check_policy_path(path).syntaxes == {"policy.rego": Syntax.V0}
    with pytest.raises(PolicyCompileError) as caught:
        check_policy_path(path, syntax=Syntax.V1)
    assert "policy.rego:2:" in caught.value.message


def test_mixed_syntax_directory(tmp_path: Path) -> None:
    write(tmp_path, 'package spacelift\ndeny["old"] { input.x }\n', "a.rego")
    write(tmp_path, 'package spacelift\ndeny contains "new" if input.x\n', "b.rego")
    with gate_for(tmp_path, isolated=False) as gate:
        assert gate.evaluate({"x": True}).deny == ("new", "old")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("package spacelift\nallow := true\n", "policy_no_deny_rule"),
        ("package other\ndeny contains 1 if true\n", "policy_no_deny_rule"),
        ('package spacelift\ndeny contains "x" if { nosuch(1) }\n', "policy_compile_error"),
        ("package spacelift\ndeny contains x if { y == 1 }\n", "policy_compile_error"),
    ],
)
def test_broken_policies_do_not_compile(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(PolicyCompileError) as caught:
        check_policy_path(write(tmp_path, text))
    assert caught.value.reason == reason
    assert caught.value.hint


def test_empty_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyCompileError) as caught:
        check_policy_path(tmp_path)
    assert caught.value.reason == "policy_files_missing"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("package spacelift\nimport rego.v1\ndeny := {1, 2} if true\n", "policy_deny_malformed"),
        ("package spacelift\nimport rego.v1\ndeny := true if true\n", "policy_deny_malformed"),
        (
            'package spacelift\nimport rego.v1\ndeny := {"x"} if input.never\n',
            "policy_undefined_deny",
        ),
    ],
)
def test_malformed_or_undefined_deny_fails_closed(tmp_path: Path, text: str, reason: str) -> None:
    with (
        gate_for(write(tmp_path, text), isolated=False) as gate,
        pytest.raises(PolicyUndefinedDenyError) as caught,
    ):
        gate.check({})
    assert caught.value.reason == reason


def test_runtime_error_fails_closed_and_is_audited(tmp_path: Path) -> None:
    text = 'package spacelift\nimport rego.v1\ndeny contains "x" if input.a / input.b > 1\n'
    audit = MemoryAuditLog()
    with (
        gate_for(write(tmp_path, text), audit=audit) as gate,
        pytest.raises(PolicyEvaluationError) as caught,
    ):
        gate.check({"a": 1, "b": 0}, run_id="r")
    assert caught.value.reason == "policy_evaluation_error"
    assert "policy.rego:3:" in caught.value.message
    assert audit.events[-1].outcome is Outcome.ERROR
    assert audit.events[-1].reason == "policy_evaluation_error"


def test_timeout_kills_worker_and_next_run_works(tmp_path: Path) -> None:
    gate = gate_for(write(tmp_path, SLOW), timeout_s=0.3)
    with gate:
        with pytest.raises(PolicyTimeoutError) as caught:
            gate.check({"n": 20000})
        assert caught.value.reason == "policy_timeout"
        # The poisoned worker was replaced: a cheap evaluation succeeds.
        with pytest.raises(PolicyDeniedError) as denied:
            gate.check({"n": 2})
        assert denied.value.messages == ("4",)


def test_inline_timeout_is_detected_after_the_fact(tmp_path: Path) -> None:
    with (
        gate_for(write(tmp_path, SLOW), timeout_s=0.001, isolated=False) as gate,
        pytest.raises(PolicyTimeoutError),
    ):
        gate.check({"n": 300})


def test_evaluation_holds_the_gil_so_threads_cannot_time_it_out(tmp_path: Path) -> None:
    # Pins the engine fact that made the timeout a process, not a watchdog thread.
    sanitizer = Sanitizer.random()
    compiled = check_policy_path(write(tmp_path, SLOW), sanitizer=sanitizer)
    gate = PolicyGate.start(compiled, sanitizer=sanitizer, isolated=False, timeout_s=60)
    ticks: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    thread = threading.Thread(target=ticker)
    thread.start()
    time.sleep(0.05)
    start = time.monotonic()
    with pytest.raises(PolicyDeniedError):
        gate.check({"n": 1500})
    end = time.monotonic()
    stop.set()
    thread.join()
    inside = [t for t in ticks if start + 0.05 < t < end - 0.05]
    assert end - start > 0.2
    assert len(inside) <= 2


def test_real_engine_panic_is_caught_and_mapped(tmp_path: Path) -> None:
    # regorus engines are unsendable: touching one from another thread is a genuine pyo3 panic.
    sanitizer = Sanitizer.random()
    compiled = check_policy_path(write(tmp_path, ALLOW_MAIN), sanitizer=sanitizer)
    backend = InlineBackend(compiled, sanitizer=sanitizer)
    raw = backend.engine.raw
    caught: list[BaseException] = []

    def other_thread() -> None:
        try:
            translate(
                lambda: raw.eval_rule("data.spacelift.deny"),  # type: ignore[attr-defined]
                error=PolicyEvaluationError,
                what="evaluation",
                hint="",
            )
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever arrives
            caught.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    (exc,) = caught
    assert isinstance(exc, PolicyEngineCrashError)
    assert exc.reason == "policy_engine_panic"


class _PanickingBackend:
    def evaluate(self, input_json: str, *, timeout_s: float) -> RawEvaluation:  # noqa: ARG002
        raise PolicyEngineCrashError("the policy engine panicked", reason="policy_engine_panic")

    def close(self) -> None:
        pass


def test_panic_behind_the_interface_fails_closed(tmp_path: Path) -> None:
    audit = MemoryAuditLog()
    gate = PolicyGate(
        check_policy_path(write(tmp_path, ALLOW_MAIN)), backend=_PanickingBackend(), audit=audit
    )
    with pytest.raises(PolicyEngineCrashError):
        gate.check({"branch": "main"}, run_id="r")
    assert audit.events[-1].reason == "policy_engine_panic"


def test_worker_death_is_a_crash_and_worker_restarts(tmp_path: Path) -> None:
    with gate_for(write(tmp_path, ALLOW_MAIN)) as gate:
        backend = gate._backend
        proc = backend._proc  # type: ignore[attr-defined]
        proc.kill()
        proc.wait()
        with pytest.raises(PolicyEngineCrashError) as caught:
            gate.check({"branch": "main"})
        assert caught.value.reason == "policy_engine_crashed"
        assert isinstance(gate.check({"branch": "main"}), PolicyDecision)


@pytest.mark.parametrize(
    "call",
    [
        'http.send({"method": "get", "url": "http://127.0.0.1:9"})',
        'net.lookup_ip_addr("localhost")',
        "opa.runtime()",
        'object.get(opa.runtime(), "env", {})',
    ],
)
def test_network_and_host_builtins_are_refused_at_compile_time(tmp_path: Path, call: str) -> None:
    # Refused by name even where no input reaches them (a rule never evaluated with `{}`).
    text = (
        "package spacelift\nimport rego.v1\n"
        f'deny contains "reached" if {{\n  input.never\n  {call}\n}}\n'
    )
    with pytest.raises(PolicyCompileError) as caught:
        check_policy_path(write(tmp_path, text))
    assert "is refused" in caught.value.message
    assert caught.value.message.startswith("policy.rego:5:")


def test_data_files_are_loaded(tmp_path: Path) -> None:
    write(
        tmp_path,
        'package spacelift\nimport rego.v1\ndeny contains "listed" if input.x in data.cfg.bad\n',
    )
    (tmp_path / "cfg.yaml").write_text("cfg:\n  bad: [1, 2]\n")
    with gate_for(tmp_path, isolated=False) as gate:
        assert gate.evaluate({"x": 2}).deny == ("listed",)
        assert gate.evaluate({"x": 3}).deny == ()


def test_sample_marks_decision_with_sanitized_input(tmp_path: Path) -> None:
    text = ALLOW_MAIN + 'sample if input.branch == "main"\n'
    audit = MemoryAuditLog()
    with gate_for(write(tmp_path, text), audit=audit, isolated=False) as gate:
        decision = gate.check({"branch": "main"}, run_id="r")
    assert decision.sample
    assert decision.sampled_input == {"branch": "main"}
    assert audit.events[-1].type == "policy.sampled"


# -- why the timeout is a process, and the worker protocol ---------------------------------------

DENY_PATH = "data.spacelift.deny"


def test_binding_offers_no_in_process_execution_limit() -> None:
    # The Rust engine has an execution timer and the RVM an instruction limit setter, but the
    # Python binding exposes neither. If an upgrade adds them, revisit the worker process.
    limits = ("set_execution_timer_config", "set_max_instructions", "set_memory_limit")
    for cls in (regorus.Engine, regorus.Rvm):
        assert not [name for name in limits if hasattr(cls, name)], cls


def test_rvm_instruction_limit_does_not_bound_a_builtin() -> None:
    # The RVM stops loops after a fixed 25 000 instructions, but one builtin call is one
    # instruction however long it runs: no bound on a runaway policy.
    text = (
        "package spacelift\nimport rego.v1\n"
        'deny contains "big" if count(numbers.range(1, input.n)) > 0\n'
        'deny contains "loop" if count([x | some x in numbers.range(1, input.m)]) < 0\n'
    )
    program = regorus.Program.compile_from_modules("{}", [("p.rego", text)], [DENY_PATH])
    vm = regorus.Rvm()
    vm.load_program(program)
    vm.set_input_json('{"n": 200000, "m": 1}')
    assert "big" in vm.execute_entry_point(DENY_PATH)  # 200 000 elements in one instruction
    vm.set_input_json('{"n": 1, "m": 200000}')
    with pytest.raises(RuntimeError, match="instruction limit"):
        vm.execute_entry_point(DENY_PATH)


# A builtin that allocates for seconds: the worker must still be stopped at the deadline.
HUGE_RANGE = (
    "package spacelift\nimport rego.v1\n"
    'deny contains "never" if count(numbers.range(0, input.n)) < 0\n'
    'deny contains "small" if input.n < 10\n'
)


def test_runaway_builtin_times_out_in_the_worker(tmp_path: Path) -> None:
    # 5 million numbers fit in the worker's memory limit but take about 1 s.
    with gate_for(write(tmp_path, HUGE_RANGE), timeout_s=0.2) as gate:
        start = time.monotonic()
        with pytest.raises(PolicyTimeoutError) as caught:
            gate.check({"n": 5_000_000})
        assert time.monotonic() - start < 5
        assert caught.value.reason == "policy_timeout"
        assert gate._backend.restarts == 1  # type: ignore[attr-defined]
        with pytest.raises(PolicyDeniedError) as denied:
            gate.check({"n": 1})
        assert denied.value.messages == ("small",)


@pytest.mark.parametrize("n", [100_000_000, 1_000_000_000, 10**15])
def test_evaluation_over_the_memory_limit_is_denied_and_the_worker_replaced(
    tmp_path: Path, n: int
) -> None:
    with gate_for(write(tmp_path, HUGE_RANGE), timeout_s=30) as gate:
        start = time.monotonic()
        with pytest.raises(PolicyEngineCrashError) as caught:
            gate.check({"n": n})
        assert "memory limit" in caught.value.message
        assert time.monotonic() - start < 20
        assert gate._backend.restarts == 1  # type: ignore[attr-defined]
        with pytest.raises(PolicyDeniedError) as denied:
            gate.check({"n": 1})
        assert denied.value.messages == ("small",)


def test_worker_address_space_is_capped() -> None:
    code = (
        "import resource\n"
        "from hardened_launcher.policy.worker import limit_memory, MEMORY_BUDGET_BYTES\n"
        "limit_memory()\n"
        "soft, _ = resource.getrlimit(resource.RLIMIT_AS)\n"
        "assert soft != resource.RLIM_INFINITY\n"
        "try:\n"
        "    bytearray(MEMORY_BUDGET_BYTES + (64 << 20))\n"
        "except MemoryError:\n"
        "    print('capped')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.stdout.strip() == "capped", done.stderr[-500:]


# A worker that misbehaves on request (the real child loop, the real protocol).
FAKE_WORKER = """
import os, sys
from hardened_launcher.policy import worker
from hardened_launcher.policy.engine import RawEvaluation
from hardened_launcher.policy.errors import PolicyEngineCrashError
real_evaluate, real_encode = worker.evaluate_spacelift, worker.encode_result
def evaluate(engine, text, *, has_sample):
    if '"mode":"panic"' in text:
        raise PolicyEngineCrashError("the policy engine panicked", reason="policy_engine_panic")
    if '"mode":"die"' in text:
        os._exit(3)
    if '"mode":"garbage"' in text:
        return RawEvaluation(deny=("garbage",), sample=False, duration_ns=1)
    return real_evaluate(engine, text, has_sample=has_sample)
def encode(raw):
    return b"\\x01\\x05" if raw.deny == ("garbage",) else real_encode(raw)
worker.evaluate_spacelift, worker.encode_result = evaluate, encode
sys.exit(worker.child_main())
"""


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("panic", "policy_engine_panic"),
        ("die", "policy_engine_crashed"),
        ("garbage", "policy_engine_crashed"),
    ],
)
def test_worker_failure_denies_and_replaces_the_worker(
    tmp_path: Path, mode: str, reason: str
) -> None:
    sanitizer = Sanitizer.random()
    compiled = check_policy_path(write(tmp_path, ALLOW_MAIN), sanitizer=sanitizer)
    backend = SubprocessBackend(
        compiled, sanitizer=sanitizer, argv=[sys.executable, "-c", FAKE_WORKER]
    )
    backend.start()
    audit = MemoryAuditLog()
    with PolicyGate(compiled, backend=backend, audit=audit) as gate:
        assert isinstance(gate.check({"branch": "main"}), PolicyDecision)
        first = backend._proc
        assert first is not None
        with pytest.raises(PolicyEngineCrashError) as caught:
            gate.check({"branch": "main", "mode": mode}, run_id="r")
        assert caught.value.reason == reason
        assert audit.events[-1].reason == reason
        assert backend.restarts == 1
        assert first.poll() is not None  # the old worker is gone
        assert isinstance(gate.check({"branch": "main"}), PolicyDecision)
        assert backend._proc is not None
        assert backend._proc.pid != first.pid


def test_concurrent_callers_share_one_worker(tmp_path: Path) -> None:
    text = 'package spacelift\nimport rego.v1\ndeny contains sprintf("n=%d", [input.n]) if true\n'
    errors: list[BaseException] = []
    with gate_for(write(tmp_path, text)) as gate:

        def caller(base: int) -> None:
            try:
                for n in range(base, base + 40):
                    assert gate.evaluate({"n": n}).deny == (f"n={n}",)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=caller, args=(i * 1000,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert gate._backend.restarts == 0  # type: ignore[attr-defined]
    assert errors == []


def test_frames_larger_than_the_pipe_buffer(tmp_path: Path) -> None:
    # ~300 KB in, ~100 KB of deny messages out: partial writes and buffer growth both ways.
    text = (
        "package spacelift\nimport rego.v1\n"
        'deny contains sprintf("%03d %s", [i, input.pad]) if some i in numbers.range(1, 100)\n'
    )
    pad = "x" * 990
    with gate_for(write(tmp_path, text)) as gate:
        result = gate.evaluate({"pad": pad, "filler": ["y" * 1000] * 300})
        assert len(result.deny) == 100
        assert result.deny[0] == f"001 {pad}"
        assert gate.evaluate({"pad": "", "filler": []}).deny[:1] == ("001 ",)


def test_result_frames_round_trip_and_reject_damage() -> None:
    raw = RawEvaluation(deny=("a", "ünï\x00code", ""), sample=True, duration_ns=12345)
    body = encode_result(raw)
    assert decode_result(body) == raw
    for damaged in (body[:-1], body + b"x", body[:3], b"\x02" + body[1:]):
        with pytest.raises(ValueError):
            decode_result(damaged)


SETS_MEET_OBJECTS = {
    "variables in a set's order": "a := {1}\n  b := input.o\n  s := {x | some x in [a, b]}",
    "variable in <": "a := {1}\n  a < input.o",
    "set operator": 'c := {1} | {2}\n  {"a": 1} > c',
    "set rule": "s := {names, input.o}",
    "set builtin": "s := {union({{1}}), input.o}",
}


@pytest.mark.parametrize("body", SETS_MEET_OBJECTS.values(), ids=SETS_MEET_OBJECTS.keys())
def test_a_set_meeting_an_object_through_a_variable_is_refused_at_load(
    tmp_path: Path, body: str
) -> None:
    text = (
        "package spacelift\nimport rego.v1\nnames contains n if some n in input.names\n"
        f'deny contains "x" if {{\n  {body}\n  true\n}}\n'
    )
    with pytest.raises(PolicyCompileError) as caught:
        check_policy_path(write(tmp_path, text), sanitizer=Sanitizer.random(), probe=False)
    assert caught.value.message.startswith("policy.rego:")
    assert "OPA orders objects before sets" in caught.value.message
    assert "do not sort, compare or collect sets together with objects" in caught.value.hint


@pytest.mark.parametrize(
    "body",
    [
        "a := {1}\n  b := {2}\n  s := {x | some x in [a, b]}\n  count(s) == 2",
        "a := {1}\n  l := [a, input.o]\n  count(l) == 2",  # an array keeps its order
        'not input.r in {"a", "b"}',
    ],
)
def test_sets_that_meet_no_object_still_load(tmp_path: Path, body: str) -> None:
    text = f'package spacelift\nimport rego.v1\ndeny contains "x" if {{\n  {body}\n}}\n'
    compiled = check_policy_path(write(tmp_path, text), sanitizer=Sanitizer.random(), probe=False)
    assert "data.spacelift.deny" in {rule.path for rule in compiled.rules}
