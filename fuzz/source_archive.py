"""Fuzz harness for the source archive reader (executor/source.py, ``archive_entries``).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/source_archive.py fuzz/corpus/source_archive -max_total_time=300

``test_one_input`` also works without atheris; the unit tests replay the seed corpus through it.
The input is the archive as carried (tar, or tar compressed with gzip, bzip2 or xz).

Properties checked for every input, beyond "no exception but SourceArchiveError":
- every entry's path is relative, normalized (no empty, ``.`` or ``..`` component), unique, and
  lies under no link and no file of the archive;
- every link target is relative and, from the link's directory, stays inside the archive;
- the contents together stay within ``MAX_ARCHIVE_EXTRACTED_BYTES``.
"""

from __future__ import annotations

import posixpath
import sys

from hardened_launcher.executor.source import (
    MAX_ARCHIVE_EXTRACTED_BYTES,
    SourceArchiveError,
    archive_entries,
)


def test_one_input(data: bytes) -> None:
    try:
        entries = archive_entries(data)
    except SourceArchiveError:
        return
    kinds: dict[str, str] = {}
    for entry in entries:
        parts = entry.path.split("/")
        assert entry.path
        assert not entry.path.startswith("/")
        assert all(part not in ("", ".", "..") for part in parts)
        assert entry.path not in kinds
        for depth in range(1, len(parts)):
            assert kinds.get("/".join(parts[:depth]), "dir") == "dir"
        if entry.kind == "symlink":
            assert entry.target
            assert not entry.target.startswith("/")
            resolved = posixpath.normpath(
                posixpath.join(posixpath.dirname(entry.path), entry.target)
            )
            assert resolved != ".."
            assert not resolved.startswith("../")
        kinds[entry.path] = entry.kind
    assert sum(len(e.content) for e in entries) <= MAX_ARCHIVE_EXTRACTED_BYTES


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
