"""Fuzz harness for the transport message parser (``hardened_launcher.transport.messages``).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/transport_messages.py fuzz/corpus/transport_messages -max_total_time=300

``test_one_input`` also works without atheris; the unit tests replay the seed corpus through it.

Properties checked for every input, for both senders (worker and control plane):
- the only exception is MessageError, with the reason ``message_invalid`` and a message;
- no refusal message echoes a 16-byte run of the input;
- a message that parses re-encodes to bytes that parse to an equal message;
- the same input parses for at most one side unless it is an ``ack``.
"""

from __future__ import annotations

import re
import sys

from hardened_launcher.transport.messages import Message, MessageError

CANARY_BYTES = 16
_WORDY_RUN = re.compile(rb"[A-Za-z0-9_.-]{%d,}" % CANARY_BYTES)


def _echoes_input(data: bytes, rendered: str) -> bool:
    for run in _WORDY_RUN.findall(data):
        text = run.decode("ascii")
        for i in range(len(text) - CANARY_BYTES + 1):
            chunk = text[i : i + CANARY_BYTES]
            if chunk in rendered and chunk not in _OWN_WORDS:
                return True
    return False


# Runs the messages themselves contain (field names and hints), not echoes.
_OWN_WORDS = "log_urls_request max_concurrent_runs lease_expires_at envelope_b64"


def test_one_input(data: bytes) -> None:
    parsed: list[Message] = []
    for sender in ("worker", "controlplane"):
        try:
            message = Message.parse(data, sender=sender)
        except MessageError as error:
            refusal = error
        else:
            again = Message.parse(message.to_json(), sender=sender)
            assert again == message, "re-encoding changed the message"
            parsed.append(message)
            continue
        assert refusal.reason == "message_invalid", refusal.reason
        assert refusal.message
        rendered = f"{refusal.message}\n{refusal.hint}\n{refusal.detail}"
        assert not _echoes_input(data, rendered), "a refusal echoed the input"
    if len(parsed) == 2:
        assert parsed[0].type == "ack", "only acks may come from both sides"


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
