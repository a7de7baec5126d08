"""``hardened-launcher controlplane`` end to end in-process: init, pool, submit, dispatch, open."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from hardened_launcher.cli import main
from hardened_launcher.controlplane.ca import open_state_dir
from hardened_launcher.controlplane.serve import Coordinator
from hardened_launcher.envelope import MemoryReplayCache, open_run_state
from hardened_launcher.errors import EXIT_CONFIGURATION, EXIT_USAGE
from hardened_launcher.executor.runspec import parse_run_spec
from hardened_launcher.identity.csr import create_csr, csr_to_pem, parse_subject
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import Token
from hardened_launcher.transport import messages as wire
from hardened_launcher.transport.memory import MemoryBroker
from tests.unit.test_controlplane_support import SimWorker

SPEC = b"""\
version: 1
run_id: run-cli-1
run_type: ro
image: registry.example/runner:1
phases:
  - name: main
    commands: ["echo hello"]
secret_env: {TF_VAR_token: "CANARY-secret-91c2"}
"""


@pytest.fixture(scope="module")
def pool_key() -> PoolPrivateKey:
    return PoolPrivateKey.generate(rsa_key_bits=2048)


def _csr_file(tmp_path: Path, key: PoolPrivateKey, name: str = "pool.csr") -> Path:
    path = tmp_path / name
    path.write_bytes(csr_to_pem(create_csr(key, parse_subject("/CN=ignored"))))
    return path


def _init(tmp_path: Path) -> Path:
    state = tmp_path / "cp"
    assert main(["controlplane", "init", "--dir", str(state), "--broker-port", "18883"]) == 0
    return state


def test_init_creates_private_files_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _init(tmp_path)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in state.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (state / "broker" / "mosquitto.conf").is_file()
    assert (state / "broker" / "crl.pem").is_file()
    capsys.readouterr()
    assert main(["controlplane", "init", "--dir", str(state)]) == EXIT_CONFIGURATION
    assert "init never overwrites" in capsys.readouterr().err


def test_open_refuses_a_readable_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _init(tmp_path)
    (state / "signing.key").chmod(0o644)
    capsys.readouterr()
    assert main(["controlplane", "runs", "list", "--dir", str(state)]) == EXIT_CONFIGURATION
    assert "chmod 0600" in capsys.readouterr().err


def test_pool_create_submit_dispatch_and_open(
    tmp_path: Path, pool_key: PoolPrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    state_path = _init(tmp_path)
    capsys.readouterr()
    csr = _csr_file(tmp_path, pool_key)
    assert main(["controlplane", "pool", "create", "--dir", str(state_path), "--name", "pool-a",
                 "--csr", str(csr)]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    token = Token.from_encoded(out.strip())
    assert token.pool_id == "pool-a"
    assert token.broker_url == "mqtts://localhost:18883"
    assert out.strip() not in err

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_bytes(SPEC)
    assert main(["controlplane", "run", "submit", "--dir", str(state_path), "--pool", "pool-a",
                 str(spec_path)]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == "run-cli-1"
    state = open_state_dir(state_path)
    with state.open_store() as store:
        assert b"CANARY" not in store.get_envelope("run-cli-1")
        assert b"CANARY" not in state.store_path.read_bytes()

        # A worker registers, gets the assignment, and opens it like the launcher does.
        clock_now = datetime.now(UTC).timestamp()
        broker = MemoryBroker()
        cp = broker.control_plane()
        cp.start()
        coordinator = Coordinator(store, cp, clock=lambda: clock_now)
        worker = SimWorker("w-1", lambda: clock_now, broker)  # type: ignore[arg-type]
        worker.register()
        coordinator.step()
        (message,) = worker.deliver_all()
        assert broker.published[-2].topic == "spacelift/readonly/pool-a/w-1"  # then its ack
        assert isinstance(message.body, wire.Assign)
        opened = open_run_state(
            message.body.envelope,
            pool_private_key=pool_key.private_key,
            signer_public_key=token.run_state_signing_key,
            expected_pool_id="pool-a",
            replay_cache=MemoryReplayCache(),
            now=datetime.now(UTC),
            clock_skew=timedelta(minutes=1),
            max_envelope_bytes=1 << 20,
        )
        with opened, opened.plaintext.view() as view:
            assert parse_run_spec(bytes(view)).run_id == "run-cli-1"
        assert opened.run_id == "run-cli-1"

    assert main(["controlplane", "run", "submit", "--dir", str(state_path), "--pool", "pool-a",
                 str(spec_path)]) == EXIT_USAGE  # fmt: skip
    assert "never reused" in capsys.readouterr().err


def test_invalid_spec_is_refused_without_quoting_it(
    tmp_path: Path, pool_key: PoolPrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    state_path = _init(tmp_path)
    assert main(["controlplane", "pool", "create", "--dir", str(state_path), "--name", "pool-a",
                 "--csr", str(_csr_file(tmp_path, pool_key))]) == 0  # fmt: skip
    spec_path = tmp_path / "bad.yaml"
    spec_path.write_bytes(SPEC + b"surprise: CANARY-field-77\n")
    capsys.readouterr()
    code = main(["controlplane", "run", "submit", "--dir", str(state_path), "--pool", "pool-a",
                 str(spec_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0
    assert "CANARY" not in err
    with open_state_dir(state_path).open_store() as store:
        assert store.list_runs() == []


def test_pool_reset_revokes_the_old_serial_and_cycles_workers(
    tmp_path: Path, pool_key: PoolPrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    state_path = _init(tmp_path)
    capsys.readouterr()
    assert main(["controlplane", "pool", "create", "--dir", str(state_path), "--name", "pool-a",
                 "--csr", str(_csr_file(tmp_path, pool_key))]) == 0  # fmt: skip
    first = Token.from_encoded(capsys.readouterr().out.strip())
    new_key = PoolPrivateKey.generate(rsa_key_bits=2048)
    with open_state_dir(state_path).open_store() as store:
        store.register_worker(
            worker_id="w-1", pool_id="pool-a", metadata={}, version="1", max_concurrent_runs=1,
            now=1.0,
        )  # fmt: skip
    assert main(["controlplane", "pool", "reset", "--dir", str(state_path), "--name", "pool-a",
                 "--csr", str(_csr_file(tmp_path, new_key, "new.csr"))]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    second = Token.from_encoded(out.strip())
    assert second.pool_certificate.serial_number != first.pool_certificate.serial_number
    assert "SIGHUP" in err
    crl = x509.load_pem_x509_crl((state_path / "broker" / "crl.pem").read_bytes())
    revoked = crl.get_revoked_certificate_by_serial_number(first.pool_certificate.serial_number)
    assert revoked is not None
    assert (
        crl.get_revoked_certificate_by_serial_number(second.pool_certificate.serial_number) is None
    )
    with open_state_dir(state_path).open_store() as store:
        assert [m.type for m in store.pending_messages()] == ["cycle"]
        assert store.revoked_certificates()[0].serial == f"{first.pool_certificate.serial_number:x}"


def test_pool_name_must_be_a_dns_label(
    tmp_path: Path, pool_key: PoolPrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    state_path = _init(tmp_path)
    code = main(["controlplane", "pool", "create", "--dir", str(state_path), "--name", "Pool_A",
                 "--csr", str(_csr_file(tmp_path, pool_key))])  # fmt: skip
    assert code == EXIT_USAGE
    assert "DNS label" not in capsys.readouterr().out


def test_missing_dir_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HL_CP_DIR", raising=False)
    assert main(["controlplane", "runs", "list"]) == EXIT_USAGE
    assert "HL_CP_DIR" in capsys.readouterr().err


CONFIRMED_SPEC = b"""\
version: 1
run_id: run-cli-2
run_type: wo
image: registry.example/runner:1
confirm_after: planning
metadata: {commit_sha: "0123456789abcdef0123456789abcdef01234567"}
phases:
  - {name: planning, commands: ["echo plan"]}
  - {name: applying, commands: ["echo apply"]}
secret_env: {TF_VAR_token: "CANARY-secret-91c2"}
"""


def test_submit_confirm_and_discard_a_confirmed_run(
    tmp_path: Path, pool_key: PoolPrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    state_path = _init(tmp_path)
    csr = _csr_file(tmp_path, pool_key)
    assert main(["controlplane", "pool", "create", "--dir", str(state_path), "--name", "pool-a",
                 "--csr", str(csr)]) == 0  # fmt: skip
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_bytes(CONFIRMED_SPEC)
    capsys.readouterr()
    assert main(["controlplane", "run", "submit", "--dir", str(state_path), "--pool", "pool-a",
                 str(spec_path)]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == "run-cli-2"
    state = open_state_dir(state_path)
    with state.open_store() as store:
        plan = store.plan_of("run-cli-2")
        assert plan is not None
        assert (plan.apply_run_id, plan.commit_sha, plan.artifact_sha256) == (
            "run-cli-2.apply",
            "0123456789abcdef0123456789abcdef01234567",
            None,
        )
        assert store.find_run("run-cli-2.apply") is None  # queued only on confirm
        assert b"CANARY" not in state.store_path.read_bytes()
    # Not planned yet: neither decision is possible; a hand-written stage is refused.
    for action in ("confirm", "discard"):
        assert main(["controlplane", "run", action, "--dir", str(state_path),
                     "run-cli-2"]) == EXIT_USAGE  # fmt: skip
        assert "not UNCONFIRMED" in capsys.readouterr().err
    spec_path.write_bytes(CONFIRMED_SPEC.replace(b"confirm_after: planning", b"stage: plan"))
    assert main(["controlplane", "run", "submit", "--dir", str(state_path), "--pool", "pool-a",
                 str(spec_path)]) == EXIT_USAGE  # fmt: skip
    assert "stage" in capsys.readouterr().err
    assert main(["controlplane", "run", "show", "--dir", str(state_path), "run-cli-2"]) == 0
    shown = capsys.readouterr().out
    assert "apply run:" in shown
    assert "run-cli-2.apply" in shown
