"""Fuzz harness for the ``SPACELIFT_TOKEN`` parser (``hardened_launcher.identity.token``).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/token_format.py fuzz/corpus/token -max_total_time=300

(Not ``fuzz/token.py``: run as a script, a ``token.py`` in this directory would shadow the
standard-library ``token`` module for every harness here, and ``dataclasses``/``inspect`` fail
to import.)

``test_one_input`` also works without atheris; the unit tests replay the seed corpus through it.

Properties checked for every input, beyond "no exception other than TokenError":
- every refusal carries one of the documented reason slugs (``TOKEN_REASONS``);
- no refusal message echoes a 24-byte run of the input;
- a token that parses re-encodes to a token equal to it.
"""

from __future__ import annotations

import re
import sys

from hardened_launcher.identity.token import TOKEN_REASONS, Token, TokenError

CANARY_BYTES = 24


_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{%d,}" % CANARY_BYTES)


def _echoes_input(data: bytes, rendered: str) -> bool:
    """Whether a run of 24+ base64 characters of the input shows up in ``rendered``.

    Only base64-alphabet runs count: messages legitimately name things such as
    SPACELIFT_POOL_PRIVATE_KEY, and an input that happens to contain that name is not a leak.
    No message has 24 base64-alphabet characters in a row of its own.
    """
    for run in _BASE64_RUN.findall(data):
        text = run.decode("ascii")
        for i in range(len(text) - CANARY_BYTES + 1):
            if text[i : i + CANARY_BYTES] in rendered:
                return True
    return False


def _parse(data: bytes) -> Token | TokenError:
    try:
        return Token.from_encoded(data)
    except TokenError as error:
        return error


def test_one_input(data: bytes) -> None:
    token = _parse(data)
    if isinstance(token, TokenError):
        assert token.reason in TOKEN_REASONS, f"undocumented reason {token.reason}"
        assert token.message, "a refusal must say what is wrong"
        rendered = f"{token.message}\n{token.hint}\n{token.detail}\n{token!r}"
        assert not _echoes_input(data, rendered), "a refusal echoed the input"
        return
    with token.to_encoded() as encoded:
        again = Token.from_encoded(encoded)
    assert again == token, "re-encoding changed the token"


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
