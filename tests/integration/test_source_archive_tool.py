"""A Terraform-shaped run on real Docker: the project comes as a source archive (checked by its
SHA-256), a signed tool (the binaries gate: a detached signature over SHA256SUMS) unpacks a
"provider" executable into the workspace during ``init``, and ``apply`` executes it.

The provider is a static ELF (busybox-static stands in for a real provider), so the run proves
what Terraform needs from the workspace: a file the run unpacked is executable (``exec`` tmpfs,
``nosuid,nodev`` kept), as is a script of the project. The image is the busybox one (seconds).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import secrets
import tarfile
from pathlib import Path

import pytest

from hardened_launcher import __version__
from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.executor.logsink import FileLogSink
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.pipeline import run_pipeline
from hardened_launcher.redaction import Redactor
from tests.integration.executor_support import runner_for, settings_for, signed_release
from tests.integration.images import BUSYBOX, busybox_image

pytestmark = pytest.mark.integration

PROVIDER_DIR = ".terraform/providers/example.test/hl/busybox/1.0.0/linux_amd64"


def _tar(members: dict[str, tuple[bytes, int]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def tool() -> bytes:
    """``tf init`` unpacks the provider it carries; ``tf apply`` runs it with the project."""
    # busybox runs the applet named by its first argument when its own name is "busybox".
    payload = gzip.compress(_tar({"busybox": (BUSYBOX.read_bytes(), 0o755)}), compresslevel=6)
    script = f"""#!/bin/sh
set -eu
dir={PROVIDER_DIR}
case $1 in
init)
    mkdir -p "$dir"
    sed '1,/^__PROVIDER__$/d' "$0" | base64 -d | tar -xzf - -C "$dir"
    echo "tf: provider installed"
    ;;
apply)
    "$dir/busybox" sh -c 'echo "provider: $(wc -c < main.tf) bytes of config, uid $(id -u)"'
    ;;
esac
exit 0
__PROVIDER__
"""
    return script.encode() + base64.encodebytes(payload)


def test_a_signed_tool_unpacks_a_provider_into_the_workspace_and_runs_it(tmp_path: Path) -> None:
    image = busybox_image()
    project = _tar(
        {
            "main.tf": (b'resource "null_resource" "x" {}\n', 0o644),
            "scripts/check.sh": (b"#!/bin/sh\necho check: project script ran\n", 0o755),
        }
    )
    settings = settings_for(tmp_path, run_workspace_bytes=32 * 1024 * 1024)
    release = signed_release(tmp_path, extra={"tf": tool()})
    spec = run_spec_from_mapping(
        {
            "version": 1,
            "run_id": f"src-tf-{secrets.token_hex(4)}",
            "run_type": "wo",
            "image": image,
            "phases": [
                {"name": "init", "commands": ["tf init", f"test -x {PROVIDER_DIR}/busybox"]},
                {"name": "apply", "commands": ["tf apply", "./scripts/check.sh"]},
            ],
            "source": {
                "archive": base64.b64encode(project).decode(),
                "sha256": hashlib.sha256(project).hexdigest(),
            },
            "binaries": [{"name": "tf", "version": "1.0"}],
        }
    )
    log = tmp_path / "run.log"
    result = run_pipeline(
        spec,
        settings=settings,
        launcher_id=f"src-{secrets.token_hex(4)}",
        worker_version=__version__,
        binaries=release.gate,
        policy=None,
        runner=runner_for(settings),
        redactor=Redactor(),
        sink=FileLogSink(log),
        audit=MemoryAuditLog(),
    )
    text = log.read_text()
    assert result.succeeded, text
    assert "tf: provider installed" in text
    assert "provider: 32 bytes of config, uid 1983" in text
    assert "check: project script ran" in text
