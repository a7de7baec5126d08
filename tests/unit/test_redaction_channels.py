"""Every channel: CLI filter, the launcher's own logs, audit events, policy samples, canary."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.audit.events import AuditEvent, Outcome
from hardened_launcher.cli import main
from hardened_launcher.errors import EXIT_USAGE, UntrustedInputError
from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction.canary import LeakDetectedError, verify_log_clean
from hardened_launcher.redaction.channels import RedactingAuditSink, redact_json
from hardened_launcher.redaction.logging import RedactingFilter, RedactingFormatter, install

SECRET = "tf-cloud-Token.9f8e7d"
REPO = Path(__file__).resolve().parents[2]


def _redactor() -> Redactor:
    red = Redactor()
    red.add("TF_TOKEN", SECRET)
    return red


# -- CLI -------------------------------------------------------------------------------------------
def _run_cli(
    args: list[str], stdin: bytes, env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "hardened_launcher", "redact", *args],
        input=stdin,
        capture_output=True,
        env=full_env,
        check=False,
        cwd=REPO,
    )


def test_cli_masks_env_values_and_encodings() -> None:
    payload = f"token={SECRET} b64={base64.b64encode(b'x:' + SECRET.encode()).decode()}\n"
    done = _run_cli(
        ["--mask-env", "TF_TOKEN,UNSET_ONE", "--counts"], payload.encode(), {"TF_TOKEN": SECRET}
    )
    assert done.returncode == 0
    assert SECRET.encode() not in done.stdout
    assert done.stdout.startswith(b"token=*** b64=")
    assert b"UNSET_ONE" in done.stderr
    assert b"masked 2 x TF_TOKEN" in done.stderr
    assert SECRET.encode() not in done.stderr


def test_cli_values_file_lines_and_nul(tmp_path: Path) -> None:
    lines = tmp_path / "values.txt"
    lines.write_bytes(b"first-value-1\r\nsecond-value-2\n")
    nul = tmp_path / "values.bin"
    nul.write_bytes(b"multi\nline value\x00other-value-9")
    text = b"a first-value-1 b second-value-2 c multi\nline value d other-value-9\n"
    done = _run_cli(["--values-file", str(lines)], text, {})
    assert done.stdout == b"a *** b *** c multi\nline value d other-value-9\n"
    done = _run_cli(["--values-file", str(nul), "-z"], text, {})
    assert done.stdout == b"a first-value-1 b second-value-2 c *** d ***\n"


def test_cli_without_values_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SPACELIFT_MASK_ENVS", raising=False)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["redact", "--mask-env", "NOT_SET_ANYWHERE"]) == EXIT_USAGE
    assert "NOT_SET_ANYWHERE not set" in capsys.readouterr().err


def test_cli_defaults_to_spacelift_mask_envs() -> None:
    done = _run_cli(
        [], f"x {SECRET} y".encode(), {"SPACELIFT_MASK_ENVS": "TF_TOKEN", "TF_TOKEN": SECRET}
    )
    assert done.stdout == b"x *** y"


# -- logging ---------------------------------------------------------------------------------------
def test_log_records_args_extra_and_exceptions_are_redacted() -> None:
    red = _redactor()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(detail)s"))
    logger = logging.getLogger("test.redaction.logging")
    logger.propagate = False
    logger.addHandler(handler)
    install(red, logger)
    try:
        try:
            raise RuntimeError(f"bad token {SECRET}")
        except RuntimeError:
            logger.exception("login with %s failed", SECRET, extra={"detail": f"tok={SECRET}"})
    finally:
        logger.removeHandler(handler)
    text = buf.getvalue()
    assert SECRET not in text
    assert "login with *** failed tok=***" in text
    assert "RuntimeError: bad token ***" in text
    assert red.counts()["TF_TOKEN"] >= 3


def test_formatter_redacts_what_it_adds() -> None:
    red = _redactor()
    record = logging.LogRecord("x", logging.INFO, "f", 1, "plain", None, None)
    record.threadName = SECRET
    formatter = RedactingFormatter(red, logging.Formatter("%(threadName)s %(message)s"))
    assert formatter.format(record) == "*** plain"


def test_filter_survives_bad_format_arguments() -> None:
    red = _redactor()
    record = logging.LogRecord("x", logging.INFO, "f", 1, "%d " + SECRET, ("nan",), None)
    assert RedactingFilter(red).filter(record) is True
    assert SECRET not in record.getMessage()


# -- audit and policy samples ---------------------------------------------------------------------
class _Sink:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


def test_audit_events_and_policy_samples_are_redacted() -> None:
    red = _redactor()
    sink = _Sink()
    RedactingAuditSink(sink, red).record(
        AuditEvent(
            type="run.output",
            outcome=Outcome.INFO,
            reason=f"saw {SECRET}",
            fields={"line": f"x {SECRET}", "n": 3, "list": (SECRET, 1)},
        )
    )
    dumped = json.dumps(sink.events[0].to_json_dict())
    assert SECRET not in dumped
    assert sink.events[0].fields["n"] == 3
    sample = {"input": {"env": [f"TOKEN={SECRET}"], SECRET: True}, "n": 1}
    assert SECRET not in json.dumps(redact_json(red, sample))


# -- canary ----------------------------------------------------------------------------------------
def test_canary_clean_log_gets_a_proof(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_bytes(b"all fine ***\n" * 1000)
    proof = verify_log_clean(log, _redactor(), quarantine_dir=tmp_path / "q")
    assert proof.size_bytes == 13_000
    assert log.exists()


def test_canary_hit_quarantines_and_names_variables_only(tmp_path: Path) -> None:
    red = _redactor()
    log = tmp_path / "run.log"
    # a value added after it was written: the stream could not have masked it
    log.write_bytes(b"x" * 3_000_000 + base64.b64encode(b"ab" + SECRET.encode()) + b"\n")
    with pytest.raises(LeakDetectedError) as info:
        verify_log_clean(log, red, quarantine_dir=tmp_path / "q")
    err = info.value
    assert isinstance(err, UntrustedInputError)
    assert err.reason == "leak_detected"
    assert err.counts == {"TF_TOKEN": 1}
    assert not log.exists()
    assert (tmp_path / "q" / "run.log").exists()
    assert SECRET not in str(err) + err.detail + err.one_line()
    assert red.counts() == {}  # the canary's hits are not output masks


# -- fuzz seed corpus ----------------------------------------------------------------------------
def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_redaction", REPO / "fuzz" / "redaction.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CORPUS = sorted((REPO / "fuzz" / "corpus" / "redaction").iterdir())


def test_the_seed_corpus_exists() -> None:
    assert len(CORPUS) >= 5


@pytest.mark.parametrize("seed", CORPUS, ids=[p.name for p in CORPUS])
def test_fuzz_harness_replays_the_seed_corpus(seed: Path) -> None:
    _harness().test_one_input(seed.read_bytes())


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_fuzz_harness_on_random_bytes(data: bytes) -> None:
    _harness().test_one_input(data)
