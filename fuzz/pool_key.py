"""Fuzz harness for the pool key loader (``SPACELIFT_POOL_PRIVATE_KEY``).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/pool_key.py fuzz/corpus/pool_key -max_total_time=300

``test_one_input`` also works without atheris; the unit tests replay the seed corpus through it.
The seeds are throwaway keys made for this corpus only.

Properties checked for every input, beyond "no exception other than PoolKeyError":
- every refusal carries one of the documented reason slugs (``POOL_KEY_REASONS``);
- no refusal message, hint or detail echoes a 24-byte run of the input;
- a key that loads is RSA of 2048+ bits or EC P-256/P-384, and its repr shows none of the input.
"""

from __future__ import annotations

import re
import sys

from hardened_launcher.identity.keys import (
    POOL_KEY_REASONS,
    PoolKeyError,
    PoolPrivateKey,
    load_pool_private_key,
)
from hardened_launcher.secrets import Secret

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


def _load(data: bytes) -> PoolPrivateKey | PoolKeyError:
    try:
        return load_pool_private_key(Secret(data))
    except PoolKeyError as error:
        return error


def test_one_input(data: bytes) -> None:
    key = _load(data)
    if isinstance(key, PoolKeyError):
        assert key.reason in POOL_KEY_REASONS, f"undocumented reason {key.reason}"
        assert key.message, "a refusal must say what is wrong"
        rendered = f"{key.message}\n{key.hint}\n{key.detail}\n{key!r}"
        assert not _echoes_input(data, rendered), "a refusal echoed the input"
        return
    algorithm = key.algorithm
    assert algorithm in ("EC-P256", "EC-P384") or (
        algorithm.startswith("RSA-") and int(algorithm[4:]) >= 2048
    ), algorithm
    assert not _echoes_input(data, repr(key))


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
