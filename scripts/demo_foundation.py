"""Walk the foundation gates on material made on the spot, through the real commands.

What it shows, in a temporary directory that it removes afterwards:
1. ``keygen`` makes the pool key and CSR; a local CA (the control plane's side) issues the pool
   certificate from the CSR and builds the token; ``token inspect`` and ``doctor`` check them.
2. A release key signs a SHA256SUMS file; ``verify-binary`` accepts the binary, then refuses a
   tampered copy.
3. The control plane seals a run state to the pool key; the launcher opens it in memory, and a
   replay of the same envelope is refused.
Each step prints what it did; the script exits non-zero if any gate behaves unexpectedly.
The end-to-end demo (control plane, broker, containers) replaces this with the end-to-end issue.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from pysequoia import SignatureMode, Tsk, sign

from hardened_launcher.envelope import MemoryReplayCache, open_run_state, seal_run_state
from hardened_launcher.errors import EXIT_INFRASTRUCTURE, EXIT_UNTRUSTED_INPUT, LauncherError
from hardened_launcher.identity import load_pool_private_key
from hardened_launcher.identity.csr import load_csr_pem
from hardened_launcher.identity.issuing import CertificateAuthority, issue_pool_token
from hardened_launcher.secrets import Secret

CANARY = "demo-secret-value-do-not-print"


def step(title: str) -> None:
    print(f"\n=== {title}")


def cli(args: list[str], env: dict[str, str], *, expect: int = 0) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "hardened_launcher", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    shown = (proc.stdout + proc.stderr).rstrip()
    print("$ hardened-launcher " + " ".join(args))
    print(shown)
    if proc.returncode != expect:
        raise SystemExit(f"demo: expected exit code {expect}, got {proc.returncode}")
    if CANARY in shown:
        raise SystemExit("demo: a secret reached the output")
    return proc.stdout


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hl-demo-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACELIFT_", "HL_"))}
        env.update(HL_STATE_DIR=str(work / "state"), HL_CACHE_DIR=str(work / "cache"))

        step("1. credentials: keygen, a CA issues the pool certificate, token, doctor")
        cli(
            [
                "keygen",
                "--key-out",
                str(work / "spacelift.key"),
                "--csr-out",
                str(work / "spacelift.csr"),
            ],
            env,
        )
        now = datetime.now(UTC)
        ca = CertificateAuthority.generate()
        signing_key = ed25519.Ed25519PrivateKey.generate()
        token = issue_pool_token(
            ca,
            load_csr_pem((work / "spacelift.csr").read_bytes()),
            pool_id="demo-pool",
            not_before=now - timedelta(minutes=1),
            not_after=now + timedelta(days=30),
            broker_url="mqtts://127.0.0.1:8883",
            control_plane_url="http://127.0.0.1:8080",
            run_state_signing_key=signing_key.public_key(),
        )
        env["SPACELIFT_TOKEN"] = token.to_encoded().reveal_text()
        env["SPACELIFT_POOL_PRIVATE_KEY"] = base64.b64encode(
            (work / "spacelift.key").read_bytes()
        ).decode()
        env["HL_CA_FINGERPRINT"] = ca.fingerprint_sha256.hex()
        cli(["token", "inspect"], env)

        step("2. binaries: a signed SHA256SUMS; the genuine file passes, a tampered one fails")
        release_key = Tsk.generate("Demo Release <release@example.org>")
        binary = work / "terraform"
        binary.write_bytes(b"#!/bin/sh\necho pretend terraform\n")
        sums = work / "SHA256SUMS"
        digest = subprocess.run(
            ["sha256sum", str(binary)], check=True, capture_output=True, text=True
        ).stdout.split()[0]
        sums.write_text(f"{digest}  terraform\n")
        (work / "SHA256SUMS.sig").write_bytes(
            sign(release_key.signer(), sums.read_bytes(), mode=SignatureMode.DETACHED)
        )
        (work / "release.asc").write_text(str(release_key.extract_certificate()))
        fingerprint = release_key.extract_certificate().fingerprint
        env["HL_RELEASE_KEY_FINGERPRINTS"] = fingerprint
        env["HL_RELEASE_KEYRING"] = str(work / "release.asc")
        verify = [
            "verify-binary",
            str(binary),
            "--sums",
            str(sums),
            "--sig",
            str(work / "SHA256SUMS.sig"),
            "--keyring",
            str(work / "release.asc"),
        ]
        cli(verify, env)
        binary.write_bytes(b"#!/bin/sh\necho something else\n")
        cli(verify, env, expect=EXIT_UNTRUSTED_INPUT)

        cli(["doctor"], env, expect=_doctor_expected_exit())

        step("3. envelope: sealed by the control plane, opened in memory, replay refused")
        pool_key = load_pool_private_key(Secret(env["SPACELIFT_POOL_PRIVATE_KEY"]))
        run_state = f'{{"env": {{"TF_VAR_password": "{CANARY}"}}}}'.encode()
        sealed = seal_run_state(
            run_state,
            pool_public_key=pool_key.public_key,
            signing_key=signing_key,
            run_id="run-0001",
            pool_id="demo-pool",
            issued_at=now,
            expires_at=now + timedelta(minutes=10),
        )
        cache = MemoryReplayCache()
        opened = open_run_state(
            sealed,
            pool_private_key=pool_key.private_key,
            signer_public_key=signing_key.public_key(),
            expected_pool_id="demo-pool",
            replay_cache=cache,
            now=datetime.now(UTC),
            clock_skew=timedelta(minutes=5),
            max_envelope_bytes=16 * 1024 * 1024,
        )
        with opened:
            print(
                f"opened {opened.run_id}: {len(opened.plaintext)} bytes in memory, "
                f"shown as {opened.plaintext!r}"
            )
        print(f"after use the plaintext is wiped: {opened.plaintext.wiped}")
        try:
            open_run_state(
                sealed,
                pool_private_key=pool_key.private_key,
                signer_public_key=signing_key.public_key(),
                expected_pool_id="demo-pool",
                replay_cache=cache,
                now=datetime.now(UTC),
                clock_skew=timedelta(minutes=5),
                max_envelope_bytes=16 * 1024 * 1024,
            )
        except LauncherError as exc:
            print(f"replay refused ({exc.reason}): {exc.one_line()}")
        else:
            raise SystemExit("demo: a replayed envelope was opened")
    print("\ndemo: every gate behaved as expected")
    return 0


def _doctor_expected_exit() -> int:
    # doctor checks the Docker daemon too; without one it fails that check (and says how to fix).
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    except OSError:
        return EXIT_INFRASTRUCTURE
    return 0 if probe.returncode == 0 else EXIT_INFRASTRUCTURE


if __name__ == "__main__":
    raise SystemExit(main())
