"""A run's source: a git commit fetched inside the run, or a tar archive checked by its digest.

Two forms (``docs/runspec.md``):

* :class:`GitSource` ``{url, ref, commit_sha[, auth]}``: the worker fetches ``ref`` from ``url``
  inside the run container (as the run's user, through the run's egress proxy), checks out
  ``commit_sha`` and refuses the run when the commit it holds is not exactly that one. The URL
  may be ``private://<name>/<path>``, resolved by the launcher through its
  ``SPACELIFT_PRIVATEVCS_MAPPING_*`` pairs (:func:`resolved_url`).
* :class:`ArchiveSource` ``{archive, sha256}``: a tar (optionally gzip, bzip2 or xz compressed)
  carried base64-encoded in the sealed run state. Its SHA-256 is checked before a single member
  is read; then :func:`archive_entries` reads it in memory (nothing is extracted on the
  launcher's host) and refuses anything hostile: absolute paths, ``..``, links that leave the
  workspace or that a later member would be written through, hard links, devices, FIFOs,
  duplicates, and more than :data:`MAX_ARCHIVE_EXTRACTED_BYTES` once unpacked. The entries reach
  the worker as ordinary workspace records, so binary files and any number of files are fine.

Parsing raises :class:`~.errors.RunSpecError` naming the field, never the value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import lzma
import posixpath
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from hardened_launcher.executor.errors import RunSpecError
from hardened_launcher.secrets import Secret
from hardened_launcher.urls import split_url

__all__ = [
    "MAX_ARCHIVE_BYTES",
    "MAX_ARCHIVE_EXTRACTED_BYTES",
    "ArchiveEntry",
    "ArchiveSource",
    "GitAuth",
    "GitSource",
    "RunSource",
    "SourceArchiveError",
    "archive_entries",
    "clean_tar",
    "parse_source",
    "source_manifest",
]

#: Largest archive (as carried, before decompression): it travels in the sealed run state.
MAX_ARCHIVE_BYTES: Final = 8 * 1024 * 1024
#: Largest total once unpacked (file contents plus 512 bytes per member for its header).
MAX_ARCHIVE_EXTRACTED_BYTES: Final = 64 * 1024 * 1024
MAX_URL_CHARS: Final = 2048
MAX_REF_CHARS: Final = 255
_MEMBER_OVERHEAD_BYTES: Final = 512
#: What reading a damaged tar (or its gzip, bzip2 or xz stream) may raise, besides TarError.
_READ_ERRORS: Final = (EOFError, OSError, ValueError, zlib.error, lzma.LZMAError)

_SHA_RE: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
# A git ref name or a commit (git check-ref-format, a little stricter): no leading '-', no '..',
# no '@{', no control characters, spaces, '~', '^', ':', '?', '*', '[' or backslash.
_REF_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./+-]{0,254}")
_URL_CHARS_RE: Final = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+")
_SCHEMES: Final = frozenset({"https", "http", "private"})
_USERNAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class SourceArchiveError(RunSpecError):
    """A source archive was refused: wrong digest, hostile member, or too large."""

    default_reason = "source_archive_refused"


def _fail(where: str, why: str) -> RunSpecError:
    return RunSpecError(
        f"the run spec is invalid: {where} {why}",
        hint="fix the run spec (docs/runspec.md documents every field)",
    )


def _archive_fail(why: str, reason: str = "source_archive_refused") -> SourceArchiveError:
    return SourceArchiveError(
        f"the source archive is refused: {why}",
        hint="make the archive with plain files, directories and links that stay inside it "
        "(docs/runspec.md, source)",
        reason=reason,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class GitSource:
    """A commit to fetch with git inside the run and check out into the workspace."""

    url: str
    ref: str
    commit_sha: str
    #: HTTP basic authentication for the fetch: the user name, and the name of the spec's
    #: ``secret_env`` variable that holds the password or token (never the value itself).
    auth: GitAuth | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GitAuth:
    """Who the worker is to the git server: ``username`` and a ``secret_env`` name."""

    username: str
    secret_env: str
    #: ``base64(username:secret)``, the HTTP basic credentials (filled in by the run spec's
    #: parser from ``secret_env``; registered with the redactor like any secret of the run).
    basic: Secret | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveEntry:
    """One member of a checked archive: a directory, a regular file or a symbolic link."""

    kind: Literal["dir", "file", "symlink"]
    path: str
    mode: int = 0o644
    content: bytes = b""
    target: str = ""
    mtime: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveSource:
    """A tar archive whose SHA-256 matched and whose members were all accepted."""

    sha256: str
    size_bytes: int
    entries: tuple[ArchiveEntry, ...]


RunSource = GitSource | ArchiveSource


def _text(where: str, value: object, max_chars: int) -> str:
    if not isinstance(value, str):
        raise _fail(where, "is not a string")
    if len(value) > max_chars:
        raise _fail(where, f"is longer than {max_chars} characters")
    return value


def _url(where: str, value: object) -> str:
    url = _text(where, value, MAX_URL_CHARS)
    if not _URL_CHARS_RE.fullmatch(url):
        raise _fail(where, "has characters a URL cannot hold (spaces, control characters…)")
    parts = split_url(url)
    if parts is None:  # e.g. an unbalanced "[" (urllib: "Invalid IPv6 URL")
        raise _fail(where, "is not a well-formed URL (unbalanced [ ] around the host?)")
    if parts.scheme.lower() not in _SCHEMES:
        raise _fail(where, "is not an https://, http:// or private://<name>/ URL")
    if not parts.netloc or "@" in parts.netloc:
        # Credentials never travel in a URL (the manifest the policy reads is not secret).
        raise _fail(where, "has no host, or carries credentials (user@ or user:password@)")
    if parts.query or parts.fragment:
        raise _fail(where, "has a query or a fragment")
    if parts.scheme.lower() == "private" and not re.fullmatch(
        r"[A-Za-z0-9_.-]{1,64}", parts.netloc
    ):
        raise _fail(where, "names a private VCS that is not a mapping name")
    return url


def _ref(where: str, value: object) -> str:
    ref = _text(where, value, MAX_REF_CHARS)
    if (
        not _REF_RE.fullmatch(ref)
        or ".." in ref
        or "//" in ref
        or ref.endswith(("/", ".", ".lock"))
        or "/." in ref
    ):
        raise _fail(where, "is not a git ref name (e.g. main, refs/heads/main, v1.2)")
    return ref


def _auth(value: object) -> GitAuth:
    if not isinstance(value, dict) or set(value) != {"username", "secret_env"}:
        raise _fail("source.auth", "does not have exactly the fields {username, secret_env}")
    username = _text("source.auth.username", value["username"], 128)
    if not _USERNAME_RE.fullmatch(username):
        raise _fail("source.auth.username", f"does not match {_USERNAME_RE.pattern}")
    name = _text("source.auth.secret_env", value["secret_env"], 128)
    if not _ENV_NAME_RE.fullmatch(name):
        raise _fail("source.auth.secret_env", "is not a variable name")
    return GitAuth(username=username, secret_env=name)


def parse_source(value: object) -> RunSource:
    """Validate the spec's ``source`` mapping (git or archive form)."""
    if not isinstance(value, dict):
        raise _fail("source", "is not a mapping")
    mapping = cast("dict[str, Any]", value)
    keys = set(mapping)
    if keys - {"auth"} == {"url", "ref", "commit_sha"}:
        sha = _text("source.commit_sha", mapping["commit_sha"], 64)
        if not _SHA_RE.fullmatch(sha):
            raise _fail("source.commit_sha", "is not a full commit id (40 or 64 lowercase hex)")
        return GitSource(
            url=_url("source.url", mapping["url"]),
            ref=_ref("source.ref", mapping["ref"]),
            commit_sha=sha,
            auth=None if mapping.get("auth") is None else _auth(mapping["auth"]),
        )
    if keys == {"archive", "sha256"}:
        digest = _text("source.sha256", mapping["sha256"], 64)
        if not _SHA256_RE.fullmatch(digest):
            raise _fail("source.sha256", "is not a SHA-256 (64 lowercase hex)")
        encoded = _text("source.archive", mapping["archive"], MAX_ARCHIVE_BYTES * 4 // 3 + 8)
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise _fail("source.archive", "is not base64") from None
        if len(data) > MAX_ARCHIVE_BYTES:
            raise _archive_fail(
                f"it is {len(data)} bytes, over the limit of {MAX_ARCHIVE_BYTES}",
                "source_archive_too_large",
            )
        # Verified before a single member is read.
        if hashlib.sha256(data).hexdigest() != digest:
            raise _archive_fail(
                "its SHA-256 is not the one the run spec names", "source_archive_digest_mismatch"
            )
        return ArchiveSource(sha256=digest, size_bytes=len(data), entries=archive_entries(data))
    raise _fail(
        "source",
        "does not have exactly the fields {url, ref, commit_sha} (git) or {archive, sha256}",
    )


def source_manifest(source: RunSource | None) -> dict[str, object] | None:
    """The non-secret description the signed ticket carries (and the policy reads)."""
    if source is None:
        return None
    if isinstance(source, GitSource):
        described: dict[str, object] = {
            "url": source.url,
            "ref": source.ref,
            "commit_sha": source.commit_sha,
        }
        if source.auth is not None:
            described["auth"] = {
                "username": source.auth.username,
                "secret_env": source.auth.secret_env,
            }
        return described
    return {"archive_sha256": source.sha256, "archive_bytes": source.size_bytes}


# ---------------------------------------------------------------------------------------------
# Archive members
# ---------------------------------------------------------------------------------------------
def _member_path(raw: str) -> str:
    if "\x00" in raw or any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise _archive_fail("a member name has control characters")
    if raw.startswith("/"):
        raise _archive_fail("a member has an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _archive_fail("a member path has a '..' component")
    return "/".join(parts)


def _link_target(path: str, target: str) -> str:
    if not target or "\x00" in target or target.startswith("/"):
        raise _archive_fail("a symbolic link points to an absolute or empty path")
    parts = [p for p in target.split("/") if p not in ("", ".")]
    # '..' only at the start: the link's own directory holds no link (checked by the caller),
    # so the leading '..' climb real directories and the rest walks forward.
    leading = 0
    while leading < len(parts) and parts[leading] == "..":
        leading += 1
    if ".." in parts[leading:]:
        raise _archive_fail("a symbolic link has '..' after a name")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith(("../", "/")):
        raise _archive_fail("a symbolic link points outside the archive")
    return target


def archive_entries(data: bytes) -> tuple[ArchiveEntry, ...]:
    """The members of a tar archive, each checked (see the module docstring)."""
    import tarfile  # noqa: PLC0415  # with the first archive source, not at the daemon's start

    read_errors = (tarfile.TarError, *_READ_ERRORS)
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 - closed below
    except read_errors:
        raise _archive_fail("it is not a tar archive (optionally gzip, bzip2 or xz)") from None
    entries: list[ArchiveEntry] = []
    seen: dict[str, str] = {}
    total = 0
    with tar:
        while True:
            try:
                member = tar.next()
            except read_errors:
                raise _archive_fail("it is truncated or corrupt") from None
            if member is None:
                break
            path = _member_path(member.name)
            total += _MEMBER_OVERHEAD_BYTES + max(0, member.size)
            if total > MAX_ARCHIVE_EXTRACTED_BYTES:
                raise _archive_fail(
                    f"it is over {MAX_ARCHIVE_EXTRACTED_BYTES} bytes once unpacked",
                    "source_archive_too_large",
                )
            if not path:
                if member.isdir():
                    continue  # the archive's root ("./")
                raise _archive_fail("a member has an empty path")
            if path in seen and not (member.isdir() and seen[path] == "implicit"):
                raise _archive_fail("a member path appears twice")
            # Nothing is written through a link (so a link cannot redirect a later member).
            prefix = path
            while "/" in prefix:
                prefix = prefix.rsplit("/", 1)[0]
                if seen.get(prefix) == "symlink":
                    raise _archive_fail("a member lies under a symbolic link")
                if seen.get(prefix) == "file":
                    raise _archive_fail("a member lies under a file")
                seen.setdefault(prefix, "implicit")
            mode = member.mode & 0o777
            mtime = max(0, min(int(member.mtime), 2**33 - 1))
            if member.isdir():
                entry = ArchiveEntry(kind="dir", path=path, mode=mode | 0o700, mtime=mtime)
            elif member.issym():
                entry = ArchiveEntry(
                    kind="symlink",
                    path=path,
                    target=_link_target(path, member.linkname),
                    mtime=mtime,
                )
            elif member.isreg():
                stream = tar.extractfile(member)
                if stream is None:  # pragma: no cover - isreg() members always have one
                    raise _archive_fail("a file member has no content")
                try:
                    content = stream.read()
                except read_errors:
                    raise _archive_fail("it is truncated or corrupt") from None
                if len(content) != member.size:
                    raise _archive_fail("it is truncated or corrupt")
                entry = ArchiveEntry(
                    kind="file", path=path, mode=mode | 0o600, content=content, mtime=mtime
                )
            elif member.islnk():
                raise _archive_fail("it holds a hard link (use a copy or a symbolic link)")
            else:
                raise _archive_fail(
                    "it holds a device, FIFO or other special file (only files, "
                    "directories and symbolic links are accepted)"
                )
            seen[path] = entry.kind
            entries.append(entry)
    return tuple(entries)


def clean_tar(entries: Sequence[ArchiveEntry]) -> bytes:
    """The accepted entries again as one plain tar (POSIX pax, owner 0, no compression): what
    the worker unpacks with the image's ``tar``. It holds nothing the checks refused, so any
    tar unpacks it inside the workspace."""
    import tarfile  # noqa: PLC0415

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mode, info.mtime = entry.mode, entry.mtime
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
                tar.addfile(info)
            else:
                info.size = len(entry.content)
                tar.addfile(info, io.BytesIO(entry.content))
    return out.getvalue()
