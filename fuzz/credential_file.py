"""Fuzz harness for credential files (``hardened_launcher.credential_files`` through the settings).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/credential_file.py fuzz/corpus/credential_file -max_total_time=300

``test_one_input`` also works without atheris; tests/unit/test_credential_files_fuzz.py replays
the seed corpus through it.

Properties checked for every input, written as the token file and as the key file:
- loading gives a ``Settings`` or one ``SettingsError``, nothing else;
- a refusal never quotes the file's content (any 8-byte run of it), in any text of the error;
- an accepted token is the file's stripped ASCII text; an accepted key is that text, or the
  base64 of the PEM when the file holds one.
"""

from __future__ import annotations

import base64
import sys
import tempfile
from pathlib import Path

from hardened_launcher.settings import Settings, SettingsError, load_settings

_PEM_START = b"-----BEGIN "


def _load(env: dict[str, str]) -> Settings | SettingsError:
    try:
        return load_settings(env)
    except SettingsError as exc:
        return exc


def _texts(exc: SettingsError) -> str:
    return "\n".join([exc.message, exc.hint, exc.detail, str(exc), exc.one_line(), repr(exc)])


def test_one_input(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "credential"
        path.write_bytes(data)
        path.chmod(0o600)
        for variable, field in (
            ("SPACELIFT_TOKEN_FILE", "token"),
            ("SPACELIFT_POOL_PRIVATE_KEY_FILE", "pool_private_key"),
        ):
            outcome = _load({"HOME": folder, variable: str(path)})
            stripped = data.strip()
            if isinstance(outcome, SettingsError):
                shown = _texts(outcome)
                text = stripped.decode("latin-1")
                for start in range(0, max(len(text) - 8, 0) + 1, 8):
                    piece = text[start : start + 8]
                    if len(piece) == 8 and piece.strip() == piece and piece.isalnum():
                        assert piece not in shown, "a refusal quoted the credential"
                continue
            value = getattr(outcome, field)
            assert value is not None
            text_value = value.reveal_text()
            if field == "pool_private_key" and stripped.startswith(_PEM_START):
                assert base64.b64decode(text_value) == stripped + b"\n"
            else:
                assert text_value == stripped.decode("ascii")


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
