"""Fuzz harness for the secret file value extractor and the run outputs collector.

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/secret_files.py fuzz/corpus/secret_files -max_total_time=300

``test_one_input`` also works without atheris; the unit tests replay the seed corpus through it.
The first byte picks the file name (format); the rest is the file, and also raw stdout.

Properties checked for every input, beyond "no exception":
- the extractor returns at most ``MAX_VALUES`` distinct, non-empty, stripped values, or refuses
  with ``TooManyValuesError``;
- the outputs collector passes through exactly the bytes that are not output frames, whatever
  the chunking (one chunk, or byte by byte), and keeps within its file and size caps.
"""

from __future__ import annotations

import sys

from hardened_launcher.executor.outputs import MAX_OUTPUT_FILES, MAX_OUTPUTS_BYTES, OutputCollector
from hardened_launcher.executor.secret_files import MAX_VALUES, TooManyValuesError, extract_values

NAMES = (
    "vars.yml",
    "creds.json",
    ".env",
    "prod.auto.tfvars",
    "boto.ini",
    "settings.properties",
    "id_rsa",
    "x.conf",
)


def _collect(chunks: list[bytes]) -> tuple[bytes, OutputCollector]:
    collector = OutputCollector()
    passed = b"".join(collector.feed(chunk) for chunk in chunks) + collector.close()
    return passed, collector


def test_one_input(data: bytes) -> None:
    if not data:
        return
    name, body = NAMES[data[0] % len(NAMES)], data[1:]
    try:
        values = extract_values(name, body)
    except TooManyValuesError:
        values = ()  # a refusal (the spec is refused); the message names no value
    else:
        assert len(values) <= MAX_VALUES
        assert len(set(values)) == len(values)
        assert all(value and value == value.strip() for value in values)
    whole, first = _collect([body])
    bytewise, second = _collect([body[i : i + 1] for i in range(len(body))])
    assert whole == bytewise
    assert {k: bytes(v) for k, v in first.files.items()} == {
        k: bytes(v) for k, v in second.files.items()
    }
    assert len(first.files) <= MAX_OUTPUT_FILES
    assert sum(len(v) for v in first.files.values()) <= MAX_OUTPUTS_BYTES


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
