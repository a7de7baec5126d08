"""Audit witnesses at the control plane: bound to the sender, stored, copied to object storage."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from hardened_launcher.audit.witness import WitnessPoint, parse_witness, sign_witness
from hardened_launcher.audit.witness_s3 import load_witness_s3
from hardened_launcher.controlplane.logs import LogStorage, LogStorageConfig, witness_key
from hardened_launcher.controlplane.store import MAX_WITNESSES_PER_WORKER, Store
from hardened_launcher.controlplane.witness import WitnessExporter
from hardened_launcher.secrets import Secret
from hardened_launcher.transport import messages as wire
from tests.unit.audit_support import KEY
from tests.unit.test_controlplane_serve import Rig
from tests.unit.test_controlplane_support import add_pool, open_store


def _body(
    seq: int, *, pool_id: str = "pool-a", worker_id: str = "w-1", h: str = "a"
) -> wire.Witness:
    record = sign_witness(
        WitnessPoint(
            seq=seq, hash=h * 64, trigger="records", time="2030-01-02T03:04:05.000000+00:00"
        ),
        key=KEY,
        pool_id=pool_id,
        worker_id=worker_id,
    )
    return wire.Witness(
        key_id=record.key_id,
        pool_id=record.pool_id,
        worker_id=record.worker_id,
        seq=record.seq,
        hash=record.hash,
        trigger=record.trigger,
        time=record.time,
        signature=record.signature,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path) as s:
        add_pool(s)
        yield s


class FakeStorage:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.objects: dict[tuple[str, int], bytes] = {}
        self.calls = 0
        self.stored = threading.Event()

    def put_witness(self, key_id: str, seq: int, record: bytes) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise OSError("storage down")
        self.objects[(key_id, seq)] = record
        self.stored.set()


def test_a_witness_is_stored_as_a_verifiable_record(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    worker.send(_body(7))
    worker.send(_body(7))  # retransmitted or repeated: kept once
    rig.pump()
    rig.pump()
    [record] = store.witnesses()
    witness = parse_witness(record.encode())
    witness.verify(KEY.public_key())
    assert (witness.seq, witness.pool_id, witness.worker_id) == (7, "pool-a", "w-1")


def test_a_witness_naming_another_worker_or_from_an_unknown_one_is_not_kept(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    stranger = rig.worker("w-9")
    worker.register()
    worker.send(_body(7, worker_id="w-2"))
    stranger.send(_body(8, worker_id="w-9"))  # never registered
    rig.pump()
    assert store.witnesses() == []
    assert any(kind == "audit.witness_refused" for _, kind, _ in store.events())


def test_two_different_records_for_one_log_place_are_a_recorded_conflict(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    worker.send(_body(7))
    rig.pump()
    worker.send(_body(7, h="b"))
    rig.pump()
    assert len(store.witnesses()) == 1
    assert any(kind == "audit.witness_conflict" for _, kind, _ in store.events())


def test_the_store_keeps_a_bounded_number_per_worker(store: Store) -> None:
    for seq in range(MAX_WITNESSES_PER_WORKER + 5):
        record = f'{{"seq":{seq}}}'
        store.record_witness(
            key_id="k" * 64, seq=seq, pool_id="pool-a", worker_id="w-1", record=record, now=1.0
        )
    kept = store.witnesses()
    assert len(kept) == MAX_WITNESSES_PER_WORKER
    assert kept[-1] == f'{{"seq":{MAX_WITNESSES_PER_WORKER + 4}}}'


def test_witnesses_reach_object_storage_through_an_outage(store: Store) -> None:
    storage = FakeStorage(failures=2)
    exporter = WitnessExporter(storage, initial_backoff=0.01)
    try:
        rig = Rig(store)
        rig.coordinator.witness_exporter = exporter
        worker = rig.worker("w-1")
        worker.register()
        worker.send(_body(3))
        rig.pump()
        assert storage.stored.wait(5)
        assert storage.calls == 3
        rig.coordinator.tick()
        assert store.unexported_witnesses() == []
    finally:
        exporter.close()


def test_witnesses_left_unexported_are_handed_over_after_a_restart(store: Store) -> None:
    rig = Rig(store)
    worker = rig.worker("w-1")
    worker.register()
    worker.send(_body(3))
    rig.pump()  # no exporter: stored only
    assert len(store.unexported_witnesses()) == 1
    storage = FakeStorage()
    exporter = WitnessExporter(storage, initial_backoff=0.01)
    try:
        rig.coordinator.witness_exporter = exporter
        rig.coordinator.tick()
        assert storage.stored.wait(5)
        rig.coordinator._witness_export_due = 0.0
        rig.coordinator.tick()
        assert store.unexported_witnesses() == []
    finally:
        exporter.close()


def test_log_storage_keeps_witnesses_beside_the_run_logs_and_verify_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="hl-run-logs")
        storage = LogStorage(
            LogStorageConfig(
                bucket="hl-run-logs",
                prefix="logs/",
                access_key_id="AKIATEST",
                secret_access_key=Secret("secret"),
            )
        )
        bodies = [_body(seq) for seq in (3, 9, 15)]
        for body in bodies:
            record = sign_witness(
                WitnessPoint(seq=body.seq, hash=body.hash, trigger=body.trigger, time=body.time),
                key=KEY,
                pool_id=body.pool_id,
                worker_id=body.worker_id,
            )
            storage.put_witness(body.key_id, body.seq, record.to_json())
        key = witness_key("logs/", bodies[0].key_id, 3)
        assert key == f"logs/audit-witness/{bodies[0].key_id}/{3:020d}.json"
        client.put_object(Bucket="hl-run-logs", Key="logs/runs/r1/chunk-000000", Body=b"x")
        found = load_witness_s3("s3://hl-run-logs/logs", key_id=bodies[0].key_id, client=client)
        assert [w.seq for w in found] == [3, 9, 15]


def test_the_witnesses_command_prints_what_audit_verify_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hardened_launcher.audit.witness import load_witness_path  # noqa: PLC0415
    from hardened_launcher.cli import main  # noqa: PLC0415
    from hardened_launcher.controlplane.ca import open_state_dir  # noqa: PLC0415

    state = tmp_path / "cp"
    assert main(["controlplane", "init", "--dir", str(state), "--broker-port", "18883"]) == 0
    body = _body(5)
    record = sign_witness(
        WitnessPoint(seq=5, hash=body.hash, trigger=body.trigger, time=body.time),
        key=KEY,
        pool_id="pool-a",
        worker_id="w-1",
    )
    with open_state_dir(state).open_store() as store:
        store.record_witness(
            key_id=record.key_id,
            seq=5,
            pool_id="pool-a",
            worker_id="w-1",
            record=record.to_json().decode(),
            now=1.0,
        )
    capsys.readouterr()
    assert main(["controlplane", "witnesses", "--dir", str(state)]) == 0
    assert capsys.readouterr().out == record.to_json().decode() + "\n"
    argv = ["controlplane", "witnesses", "--dir", str(state), "--key-id", record.key_id]
    assert main(argv) == 0
    out = tmp_path / "w.jsonl"
    out.write_text(capsys.readouterr().out)
    assert load_witness_path(out) == [record]
    assert main([*argv[:-1], "0" * 64]) == 0
    assert capsys.readouterr().out == ""
    assert main(["controlplane", "witnesses", "--dir", str(state), "--key-id", "nope"]) == 64
