"""Images: SPACELIFT_DEFAULT_RUNNER_IMAGE for a spec without one; a passwd/group entry for the
run's uid, read-only, when the image has none (real Docker, runc and gVisor)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.executor.errors import ImageUnsetError
from tests.integration.executor_support import Release, settings_for, signed_release
from tests.integration.images import busybox_image, image_with_user
from tests.integration.test_executor_docker import containers_of, execute, require_runsc, spec_of

pytestmark = pytest.mark.integration

WHO = [
    "whoami",
    "id",
    "grep -c '' /etc/passwd",
    "echo x >> /etc/passwd && echo PASSWD-WRITABLE || echo passwd-read-only",
    'echo "home=$HOME"',
]


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return signed_release(tmp_path)


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_an_image_without_the_runs_user_gets_a_read_only_entry(
    runtime: str, release: Release, tmp_path: Path
) -> None:
    if runtime == "runsc":
        require_runsc()
    log = tmp_path / "run.log"
    result = execute(
        spec_of(busybox_image(), ("main", WHO)),
        settings_for(tmp_path, worker_runtime=runtime),
        release,
        log,
    )
    text = log.read_text()
    assert result.succeeded, text
    assert "\nspacelift\n" in text
    assert "uid=1983(spacelift) gid=1983(spacelift)" in text
    assert "\n2\n" in text  # the image's root line kept, ours added
    assert "passwd-read-only" in text
    assert "PASSWD-WRITABLE" not in text
    assert "home=/home/spacelift" in text
    assert containers_of(result.run_id) == []


def test_an_image_with_the_user_keeps_its_own_files(release: Release, tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    result = execute(
        spec_of(image_with_user("runner"), ("main", WHO)), settings_for(tmp_path), release, log
    )
    text = log.read_text()
    assert result.succeeded, text
    assert "uid=1983(runner) gid=1983(runner)" in text
    assert "spacelift" not in text.replace("home=/home/spacelift", "")


def test_a_spec_without_image_runs_in_the_default_runner_image(
    release: Release, tmp_path: Path
) -> None:
    document = spec_of("unused", ("main", ["echo default-image-ran"]))
    del document["image"]
    audit = MemoryAuditLog()
    settings = settings_for(tmp_path, default_runner_image=busybox_image())
    log = tmp_path / "run.log"
    result = execute(document, settings, release, log, audit=audit)
    assert result.succeeded
    assert "default-image-ran" in log.read_text()
    (started,) = [e for e in audit.events if e.type == "run.started"]
    assert started.fields["image"] == busybox_image()


def test_a_spec_without_image_and_no_default_is_refused(release: Release, tmp_path: Path) -> None:
    document = spec_of("unused", ("main", ["echo never"]))
    del document["image"]
    with pytest.raises(ImageUnsetError) as info:
        execute(document, settings_for(tmp_path), release, tmp_path / "l")
    assert "SPACELIFT_DEFAULT_RUNNER_IMAGE" in str(info.value)
    assert info.value.exit_code == 78
    assert containers_of(document["run_id"]) == []
