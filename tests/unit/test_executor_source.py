"""A run's source (executor/source.py): the git form, the archive form and its hostile members.

The worker's side of an archive (directories, links, binary and executable files) runs through
the real worker script with the host's shells; the git side needs a server and runs in
tests/integration/test_source_git.py.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hardened_launcher.envelope.ticket import (
    RunManifest,
    TicketError,
    _check_manifest,
    check_spec_matches,
    manifest_from_spec,
)
from hardened_launcher.executor import source as source_module
from hardened_launcher.executor.entrypoint import worker_script_path
from hardened_launcher.executor.errors import RunSpecError
from hardened_launcher.executor.instructions import encode_instructions
from hardened_launcher.executor.runner import RunResult, StopReason, _SourceWatch
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.executor.source import (
    ArchiveSource,
    GitSource,
    SourceArchiveError,
    archive_entries,
    clean_tar,
    parse_source,
)
from hardened_launcher.pipeline import policy_metadata
from hardened_launcher.policy.sanitize import Sanitizer

SHA = "0123456789abcdef0123456789abcdef01234567"
SHELLS = [s for s in ("busybox", "dash") if shutil.which(s)]


def spec(**extra: Any) -> Any:
    return run_spec_from_mapping(
        {
            "version": 1,
            "run_id": "r",
            "run_type": "wo",
            "image": "busybox",
            "phases": [{"name": "main", "commands": ["true"]}],
            **extra,
        }
    )


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None], compress: bool = False) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if compress else "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return out.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, **fields: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def archive_source(data: bytes, digest: str | None = None) -> dict[str, str]:
    return {
        "archive": base64.b64encode(data).decode(),
        "sha256": digest or hashlib.sha256(data).hexdigest(),
    }


GOOD = tar_of(
    (member("./", tarfile.DIRTYPE, mode=0o755), None),
    (member("bin", tarfile.DIRTYPE, mode=0o755), None),
    (member("bin/provider", mode=0o755), b"#!/bin/sh\necho provider ran\n"),
    (member("data/blob.bin", mode=0o644), bytes(range(256)) * 4),
    (member("data/link", tarfile.SYMTYPE, linkname="blob.bin"), None),
    (member("up", tarfile.SYMTYPE, linkname="bin"), None),
)


# -- git ----------------------------------------------------------------------------------------
def test_a_git_source_is_parsed_and_reaches_the_manifest_and_the_policy() -> None:
    run = spec(
        source={"url": "private://corp/group/repo.git", "ref": "main", "commit_sha": SHA},
        metadata={"commit_sha": SHA},
    )
    assert run.source == GitSource(url="private://corp/group/repo.git", ref="main", commit_sha=SHA)
    sanitizer = Sanitizer(b"k" * 32)
    manifest = manifest_from_spec(run, sanitizer)
    assert manifest.source == {
        "url": "private://corp/group/repo.git",
        "ref": "main",
        "commit_sha": SHA,
    }
    checked = _check_manifest(dict(manifest.document))
    check_spec_matches(run, checked, sanitizer)
    static = policy_metadata(manifest, worker_version="1", environment={})
    environment = static["static_run_environment"]
    assert isinstance(environment, dict)
    assert environment["commit_sha"] == SHA
    assert environment["commit_branch"] == "main"


def test_a_spec_whose_source_differs_from_the_judged_manifest_is_refused() -> None:
    sanitizer = Sanitizer(b"k" * 32)
    judged = manifest_from_spec(
        spec(source={"url": "https://git.example/r.git", "ref": "main", "commit_sha": SHA}),
        sanitizer,
    )
    other = spec(source={"url": "https://git.example/r.git", "ref": "main", "commit_sha": "f" * 40})
    with pytest.raises(TicketError, match="source") as caught:
        check_spec_matches(other, judged, sanitizer)
    assert caught.value.reason == "manifest_mismatch"
    without = spec()
    with pytest.raises(TicketError):
        check_spec_matches(without, judged, sanitizer)


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"url": "https://git.example/r.git", "ref": "main", "commit_sha": "abc"}, "commit_sha"),
        ({"url": "https://git.example/r.git", "ref": "main", "commit_sha": SHA.upper()}, "commit"),
        ({"url": "https://user:tok@git.example/r.git", "ref": "main", "commit_sha": SHA}, "url"),
        ({"url": "ssh://git.example/r.git", "ref": "main", "commit_sha": SHA}, "url"),
        ({"url": "file:///etc", "ref": "main", "commit_sha": SHA}, "url"),
        ({"url": "ext::sh -c id", "ref": "main", "commit_sha": SHA}, "url"),
        ({"url": "https://git.example/r.git?x=1", "ref": "main", "commit_sha": SHA}, "url"),
        ({"url": "https://git.example/r .git", "ref": "main", "commit_sha": SHA}, "url"),
        ({"url": "private://a b/r", "ref": "main", "commit_sha": SHA}, "url"),
        ({"url": "https://git.example/r.git", "ref": "--upload-pack=x", "commit_sha": SHA}, "ref"),
        ({"url": "https://git.example/r.git", "ref": "a..b", "commit_sha": SHA}, "ref"),
        ({"url": "https://git.example/r.git", "ref": "main", "commit_sha": SHA, "x": 1}, "source"),
        ({"url": "https://git.example/r.git", "commit_sha": SHA}, "source"),
        ("https://git.example/r.git", "source"),
    ],
)
def test_malformed_git_sources_are_refused_naming_the_field(source: Any, field: str) -> None:
    with pytest.raises(RunSpecError, match=field) as caught:
        spec(source=source)
    assert "tok" not in str(caught.value)


def test_metadata_and_source_cannot_name_two_commits() -> None:
    with pytest.raises(RunSpecError, match=r"metadata\.commit_sha"):
        spec(
            source={"url": "https://git.example/r.git", "ref": "main", "commit_sha": SHA},
            metadata={"commit_sha": "f" * 40},
        )


def test_a_manifest_with_a_malformed_source_is_refused() -> None:
    document = dict(manifest_from_spec(spec(), Sanitizer(b"k" * 32)).document)
    for bad in ({"url": "x"}, {"archive_sha256": "a", "archive_bytes": True}, "x", None):
        with pytest.raises(TicketError, match=r"manifest\.source"):
            _check_manifest({**document, "source": bad})
    assert isinstance(_check_manifest(document), RunManifest)


def test_the_git_record_carries_the_resolved_url_first_and_needs_one() -> None:
    run = spec(
        source={"url": "private://corp/r.git", "ref": "main", "commit_sha": SHA},
        env={"GIT_SSH_COMMAND": "evil"},
    )
    data = bytes(encode_instructions(run, source_url="https://10.0.0.5/r.git"))
    lines = data.split(b"\n")
    assert lines[1].startswith(b"S ")
    assert base64.b64decode(lines[1].split()[1]) == b"https://10.0.0.5/r.git"
    assert lines[1].split()[3] == SHA.encode()
    with pytest.raises(ValueError, match="resolved URL"):
        encode_instructions(run)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_worker_without_git_refuses_the_source_with_its_marker(
    shell: str, tmp_path: Path
) -> None:
    run = spec(source={"url": "https://git.example/r.git", "ref": "main", "commit_sha": SHA})
    data = encode_instructions(run, source_url="https://git.example/r.git")
    nogit = tmp_path / "bin"
    nogit.mkdir()
    for tool in ("base64", "mkdir", "chmod", "cat", "sleep"):
        found = shutil.which(tool)
        assert found is not None
        (nogit / tool).symlink_to(found)
    program = shutil.which(shell)
    assert program is not None
    argv = [program, "sh"] if shell == "busybox" else [program]
    workspace = tmp_path / "ws"
    workspace.mkdir()
    done = subprocess.run(
        [*argv, str(worker_script_path())],
        input=bytes(data),
        capture_output=True,
        env={"HL_WORKSPACE": str(workspace), "PATH": str(nogit)},
        timeout=30,
        check=False,
    )
    assert done.returncode == 125
    assert b"::hl:: source refused source_git_missing\n" in done.stdout
    assert b"::hl:: phase" not in done.stdout


def test_source_markers_count_only_before_the_first_phase() -> None:
    watch = _SourceWatch()
    watch.feed(b"noise\n::hl:: source com")
    watch.feed(b"mit " + SHA.encode() + b"\n::hl:: phase main start\n")
    watch.feed(b"::hl:: source refused source_commit_mismatch\n")
    assert (watch.commit, watch.refused) == (SHA, None)
    refused = _SourceWatch()
    refused.feed(b"fatal: x\n::hl:: source refused source_commit_mismatch\n")
    assert refused.refused == "source_commit_mismatch"
    result = RunResult(
        run_id="r",
        container_id="c",
        exit_code=125,
        stopped_by=StopReason.EXITED,
        duration_seconds=1.0,
        output_bytes=1,
        source_refused=refused.refused,
    )
    assert result.reason == "source_commit_mismatch"
    assert not result.succeeded


# -- archives -----------------------------------------------------------------------------------
def test_a_good_archive_keeps_binary_content_modes_and_inner_links() -> None:
    run = spec(source=archive_source(GOOD))
    source = run.source
    assert isinstance(source, ArchiveSource)
    kinds = {e.path: e.kind for e in source.entries}
    assert kinds == {
        "bin": "dir",
        "bin/provider": "file",
        "data/blob.bin": "file",
        "data/link": "symlink",
        "up": "symlink",
    }
    blob = next(e for e in source.entries if e.path == "data/blob.bin")
    assert blob.content == bytes(range(256)) * 4
    provider = next(e for e in source.entries if e.path == "bin/provider")
    assert provider.mode == 0o755
    assert manifest_from_spec(run, Sanitizer(b"k" * 32)).source == {
        "archive_sha256": hashlib.sha256(GOOD).hexdigest(),
        "archive_bytes": len(GOOD),
    }


def test_an_archive_with_another_digest_is_refused_before_it_is_read() -> None:
    with pytest.raises(SourceArchiveError, match="SHA-256") as caught:
        parse_source(archive_source(b"not even a tar", "0" * 64))
    assert caught.value.reason == "source_archive_digest_mismatch"


def test_many_files_are_fine_under_the_size_cap() -> None:
    members = [(member(f"f{i:04}.txt"), b"x") for i in range(2000)]
    entries = archive_entries(tar_of(*members, compress=True))
    assert len(entries) == 2000


HOSTILE = {
    "absolute": tar_of((member("/etc/passwd"), b"x")),
    "dotdot": tar_of((member("a/../../x"), b"x")),
    "link-absolute": tar_of((member("l", tarfile.SYMTYPE, linkname="/etc"), None)),
    "link-out": tar_of((member("a/l", tarfile.SYMTYPE, linkname="../../x"), None)),
    "link-dotdot-after-name": tar_of(
        (member("l1", tarfile.SYMTYPE, linkname="."), None),
        (member("l2", tarfile.SYMTYPE, linkname="l1/.."), None),
    ),
    "through-link": tar_of(
        (member("d", tarfile.SYMTYPE, linkname="."), None),
        (member("d/x", mode=0o644), b"x"),
    ),
    "link-over-dir": tar_of(
        (member("d/x", mode=0o644), b"x"),
        (member("d", tarfile.SYMTYPE, linkname="e"), None),
    ),
    "hardlink": tar_of((member("a"), b"x"), (member("b", tarfile.LNKTYPE, linkname="a"), None)),
    "device": tar_of((member("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), None)),
    "fifo": tar_of((member("p", tarfile.FIFOTYPE), None)),
    "duplicate": tar_of((member("a"), b"x"), (member("./a"), b"y")),
    "control": tar_of((member("a\nb"), b"x")),
    "not-tar": b"\x00" * 10 + b"junk" * 100,
    "truncated": GOOD[:1600],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_archives_are_refused(name: str) -> None:
    with pytest.raises(SourceArchiveError) as caught:
        spec(source=archive_source(HOSTILE[name]))
    assert caught.value.reason == "source_archive_refused"


def test_a_decompression_bomb_is_refused_by_the_unpacked_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cap scaled down (64 MiB to 1 MiB) to keep the test fast; the check is the same.
    monkeypatch.setattr(source_module, "MAX_ARCHIVE_EXTRACTED_BYTES", 1024 * 1024)
    info = member("zeros")
    info.size = 2 * 1024 * 1024
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    bomb = gzip.compress(raw.getvalue(), compresslevel=9)
    assert len(bomb) < 64 * 1024
    with pytest.raises(SourceArchiveError) as caught:
        archive_entries(bomb)
    assert caught.value.reason == "source_archive_too_large"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=4096))
def test_property_any_bytes_are_entries_or_one_archive_error(data: bytes) -> None:
    try:
        entries = archive_entries(data)
    except SourceArchiveError:
        return
    assert all(not e.path.startswith("/") and ".." not in e.path.split("/") for e in entries)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.integers(min_value=0, max_value=255))
def test_property_a_flipped_byte_never_escapes(index: int, value: int) -> None:
    data = bytearray(GOOD)
    data[index] = value
    try:
        entries = archive_entries(bytes(data))
    except SourceArchiveError:
        return
    for entry in entries:
        assert not entry.path.startswith("/")
        assert ".." not in entry.path.split("/")
        assert not entry.target.startswith("/")


@pytest.mark.parametrize("shell", SHELLS)
def test_the_worker_unpacks_an_archive_and_its_provider_executes(
    shell: str, tmp_path: Path
) -> None:
    run = run_spec_from_mapping(
        {
            "version": 1,
            "run_id": "r",
            "run_type": "wo",
            "image": "busybox",
            "phases": [{"name": "main", "commands": ["./up/provider", "cat data/link | wc -c"]}],
            "source": archive_source(GOOD),
        }
    )
    argv = [shell, "sh"] if shell == "busybox" else [shell]
    done = subprocess.run(
        [*argv, str(worker_script_path())],
        input=bytes(encode_instructions(run)),
        capture_output=True,
        env={"HL_WORKSPACE": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert b"provider ran\n" in done.stdout
    assert b"1024" in done.stdout
    assert (tmp_path / "data" / "blob.bin").read_bytes() == bytes(range(256)) * 4
    assert (tmp_path / "up").is_symlink()
    assert (tmp_path / "bin" / "provider").stat().st_mode & 0o777 == 0o755


def test_the_clean_tar_holds_exactly_the_accepted_entries() -> None:
    entries = archive_entries(GOOD)
    assert archive_entries(clean_tar(entries)) == entries


def test_the_worker_continues_after_the_archive_and_files_replace_its_files(
    tmp_path: Path,
) -> None:
    run = run_spec_from_mapping(
        {
            "version": 1,
            "run_id": "r",
            "run_type": "wo",
            "image": "busybox",
            "phases": [{"name": "main", "commands": ["./bin/provider", 'echo "v=$V"']}],
            "source": archive_source(GOOD),
            "env": {"V": "after"},
            "files": [
                {"path": "bin/provider", "content": "#!/bin/sh\necho mine\n", "mode": "0755"}
            ],
        }
    )
    done = subprocess.run(
        ["sh", str(worker_script_path())],
        input=bytes(encode_instructions(run)),
        capture_output=True,
        env={"HL_WORKSPACE": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert b"mine\nv=after\n" in done.stdout


def test_git_credentials_are_named_in_the_manifest_and_sent_only_on_stdin() -> None:
    token = "CANARY-git-token-77c1"
    run = spec(
        source={
            "url": "https://git.example/r.git",
            "ref": "main",
            "commit_sha": SHA,
            "auth": {"username": "x-access-token", "secret_env": "GIT_TOKEN"},
        },
        secret_env={"GIT_TOKEN": token},
    )
    manifest = manifest_from_spec(run, Sanitizer(b"k" * 32))
    assert manifest.source is not None
    assert manifest.source["auth"] == {"username": "x-access-token", "secret_env": "GIT_TOKEN"}
    assert token not in repr(manifest.document)
    _check_manifest(dict(manifest.document))
    data = bytes(encode_instructions(run, source_url="https://git.example/r.git"))
    assert token.encode() not in data
    lines = data.split(b"\n")
    assert lines[1].startswith(b"H ")
    assert lines[2].startswith(b"S ")
    header = base64.b64decode(lines[1].split()[1])
    assert header == b"Authorization: Basic " + base64.b64encode(f"x-access-token:{token}".encode())


@pytest.mark.parametrize(
    ("auth", "secret_env", "field"),
    [
        ({"username": "u", "secret_env": "MISSING"}, {"T": "x"}, "names no variable"),
        ({"username": "u"}, {"T": "x"}, "source.auth"),
        ({"username": "a b", "secret_env": "T"}, {"T": "x"}, "username"),
        ({"username": "u", "secret_env": "1T"}, {"T": "x"}, "variable name"),
        ({"username": "u", "secret_env": "T", "password": "x"}, {"T": "x"}, "source.auth"),
    ],
)
def test_malformed_git_credentials_are_refused(
    auth: dict[str, str], secret_env: dict[str, str], field: str
) -> None:
    source = {"url": "https://git.example/r.git", "ref": "main", "commit_sha": SHA, "auth": auth}
    with pytest.raises(RunSpecError, match=field):
        spec(source=source, secret_env=secret_env)


def test_the_basic_credentials_are_a_secret_of_the_spec_and_wiped_with_it() -> None:
    run = spec(
        source={
            "url": "https://git.example/r.git",
            "ref": "main",
            "commit_sha": SHA,
            "auth": {"username": "u", "secret_env": "T"},
        },
        secret_env={"T": "tok"},
    )
    named = dict(run.secrets())
    assert named["source:auth"].reveal() == base64.b64encode(b"u:tok")
    assert "tok" not in repr(run)
    run.wipe()
    assert named["source:auth"].wiped


@settings(max_examples=150, deadline=None)
@given(
    url=st.one_of(
        st.text(max_size=80),
        st.builds(
            "{}://{}/{}".format,
            st.sampled_from(["https", "http", "private", "ssh", "file", "ext", "HTTPS"]),
            st.text(max_size=20),
            st.text(max_size=20),
        ),
    ),
    ref=st.text(max_size=40),
)
@example(url="A://[", ref="main")
@example(url="https://[::1/repo.git", ref="main")
@example(url="https://vcs]/repo.git", ref="main")
@example(url="https://[v1.x]/repo.git", ref="main")
@example(url="https://host:99999999/repo.git", ref="main")
@example(url="private://[x]/repo.git", ref="main")
def test_property_a_git_source_is_valid_or_one_spec_error(url: str, ref: str) -> None:
    try:
        source = parse_source({"url": url, "ref": ref, "commit_sha": SHA})
    except RunSpecError:
        return
    assert isinstance(source, GitSource)
    assert source.url.split("://", 1)[0].lower() in {"https", "http", "private"}
    assert "@" not in source.url.split("://", 1)[1].split("/", 1)[0]
    assert not any(c.isspace() or ord(c) < 0x20 for c in source.url + source.ref)
    assert not source.ref.startswith("-")
    assert ".." not in source.ref
