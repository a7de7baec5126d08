"""Audit log throughput with durability on: records per second, every record fsynced.

Run: ``python benchmarks/bench_audit.py [--records N] [--threads T] [--dir PATH]``

Three figures, each in a fresh directory on the same file system (``--dir``; default a temporary
directory — put it on the disk the launcher's HL_AUDIT_DIR uses, tmpfs would flatter fsync):

- ``plain``: the old unchained JSON-lines log (one write + fsync per record), the baseline;
- ``chained x1``: the chained, signed log from one thread (fsync per record);
- ``chained xT``: T threads recording at once (group commit: one fsync serves several records);
- outside witnesses: a log checkpointed every 10 records, with and without taking (signing) each
  checkpoint's witness after every record, and its verification with and without ``--witness``.

It prints records/s for each and the chained/plain ratio (the price of hashing, signing and
segment bookkeeping on top of the fsync that dominates both).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.audit import AuditEvent, ChainedAuditLog, JsonLinesAuditLog, Outcome
from hardened_launcher.audit.verify import verify_log
from hardened_launcher.audit.witness import WitnessRecord, verify_log_with_witnesses


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        type="policy.evaluated",
        outcome=Outcome.ALLOW if i % 5 else Outcome.DENY,
        gate="policy",
        run_id=f"01HRUN{i // 6:08d}",
        reason=None if i % 5 else "policy_denied",
        fields={"policy_sha256": "ab" * 32, "rules": ("deny_root", "allow_team"), "n": i},
    )


def _timed(records: int, threads: int, record: Callable[[AuditEvent], None]) -> float:
    events = [_event(i) for i in range(records)]
    per = records // threads

    def work(k: int) -> None:
        for e in events[k * per : (k + 1) * per]:
            record(e)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return per * threads / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    key = ed25519.Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(dir=args.dir) as base:
        root = Path(base)
        plain = JsonLinesAuditLog(root / "plain")
        plain_rate = _timed(args.records, 1, plain.record)
        plain.close()
        one = ChainedAuditLog(root / "one", signing_key=key)
        one_rate = _timed(args.records, 1, one.record)
        one.close()
        many = ChainedAuditLog(root / "many", signing_key=key)
        many_rate = _timed(args.records, args.threads, many.record)
        many.close()
        start = time.perf_counter()
        report = verify_log(root / "one", key.public_key())
        verify_rate = report.records / (time.perf_counter() - start)
        # Outside witnesses: a checkpoint every 10 records, each taken and signed as the
        # daemon does (take_witnesses after every record), against the same log without.
        bare = ChainedAuditLog(root / "bare", signing_key=key, checkpoint_records=10)
        bare_rate = _timed(args.records, 1, bare.record)
        bare.close()
        seen = ChainedAuditLog(root / "seen", signing_key=key, checkpoint_records=10)
        taken: list[WitnessRecord] = []

        def record_and_take(event: AuditEvent) -> None:
            seen.record(event)
            taken.extend(seen.take_witnesses(pool_id="bench", worker_id="w1"))

        seen_rate = _timed(args.records, 1, record_and_take)
        seen.close()
        start = time.perf_counter()
        seen_report, _ = verify_log_with_witnesses(root / "seen", key.public_key(), taken)
        witnessed_rate = seen_report.records / (time.perf_counter() - start)
        start = time.perf_counter()
        verify_log(root / "seen", key.public_key())
        seen_verify_rate = seen_report.records / (time.perf_counter() - start)
    print(f"records: {args.records}, fsync per record, dir: {args.dir or tempfile.gettempdir()}")
    print(f"plain (unchained) x1   {plain_rate:10.0f} records/s")
    print(f"chained x1             {one_rate:10.0f} records/s  ratio {one_rate / plain_rate:.2f}")
    print(
        f"chained x{args.threads:<2}            {many_rate:10.0f} records/s  "
        f"ratio {many_rate / plain_rate:.2f} (group commit)"
    )
    print(f"verify                 {verify_rate:10.0f} records/s")
    print(
        f"checkpoint/10 records  {bare_rate:10.0f} records/s; with witnesses taken "
        f"{seen_rate:10.0f} records/s  ratio {seen_rate / bare_rate:.2f} ({len(taken)} witnesses)"
    )
    print(
        f"verify (that log)      {seen_verify_rate:10.0f} records/s; with --witness "
        f"{witnessed_rate:10.0f} records/s  ratio {witnessed_rate / seen_verify_rate:.2f}"
    )


if __name__ == "__main__":
    main()
