"""Outside witnesses through the control plane's object storage (SeaweedFS, which checks
request signatures): a log cut at a checkpoint verifies alone, and ``audit verify --witness
s3://…`` finds the cut."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from hardened_launcher.audit.keys import public_key_pem
from hardened_launcher.audit.reader import list_segments, split_lines
from hardened_launcher.controlplane.logs import LogStorage, LogStorageConfig
from hardened_launcher.controlplane.witness import WitnessExporter
from hardened_launcher.secrets import Secret
from tests.integration.s3_server import S3Server, s3_server  # noqa: F401 - the fixture
from tests.unit.audit_support import KEY, event, open_log

pytestmark = pytest.mark.integration


def _verify(
    server: S3Server, log_dir: Path, key_file: Path, url: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HL_"))}
    return subprocess.run(
        [sys.executable, "-m", "hardened_launcher", "audit", "verify", str(log_dir),
         "--public-key", str(key_file), "--allow-open-tail", "--witness", url],
        env={**env, **server.environ()},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )  # fmt: skip


def test_a_log_cut_at_a_checkpoint_is_found_by_its_witnesses_in_s3(
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    bucket = f"hl-witness-{secrets.token_hex(4)}"
    s3_server.client().create_bucket(Bucket=bucket)
    storage = LogStorage(
        LogStorageConfig(
            bucket=bucket,
            endpoint_url=s3_server.endpoint_url,
            region=s3_server.region,
            prefix="cp/",
            access_key_id=s3_server.access_key,
            secret_access_key=Secret(s3_server.secret_key),
        )
    )
    log_dir = tmp_path / "audit"
    log = open_log(log_dir, segment_bytes=3000, checkpoint_records=4)
    exporter = WitnessExporter(storage, initial_backoff=0.05)
    sent = 0
    try:
        for i in range(24):
            log.record(event(i))
            for w in log.take_witnesses(pool_id="pool-a", worker_id="w1"):
                assert exporter.submit(w.key_id, w.seq, w.to_json())
                sent += 1
        done: list[tuple[str, int]] = []
        for _ in range(200):
            done += exporter.take_done()
            if len(done) == sent:
                break
            exporter._stop.wait(0.05)
        assert len(done) == sent > 3
    finally:
        exporter.close()
    log.close()
    key_file = tmp_path / "audit.pub"
    key_file.write_text(public_key_pem(KEY.public_key()))
    url = f"s3://{bucket}/cp"

    whole = _verify(s3_server, log_dir, key_file, url)
    assert whole.returncode == 0, whole.stderr
    assert "witness(es) agree" in whole.stdout

    # Cut right after an earlier checkpoint (what remains verifies on its own).
    names = [name for _, name in list_segments(log_dir)]
    first = log_dir / names[0]
    lines = split_lines(first.read_bytes())
    docs = [json.loads(line) for line in lines]
    last_checkpoint = max(
        i for i, d in enumerate(docs) if d["type"] == "audit.checkpoint" and i < len(docs) - 1
    )
    for name in names[1:]:
        (log_dir / name).unlink()
    first.write_bytes(b"".join(x + b"\n" for x in lines[: last_checkpoint + 1]))
    alone = subprocess.run(
        [sys.executable, "-m", "hardened_launcher", "audit", "verify", str(log_dir),
         "--public-key", str(key_file), "--allow-open-tail"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert alone.returncode == 0, alone.stderr

    cut = _verify(s3_server, log_dir, key_file, url)
    assert cut.returncode == 65, cut.stderr
    assert "removed from the end of the log" in cut.stderr
    assert "Traceback" not in cut.stderr
    assert s3_server.secret_key not in cut.stderr + cut.stdout
