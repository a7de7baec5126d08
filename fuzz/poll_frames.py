"""Fuzz harness for the long-poll frame format (``hardened_launcher.transport.poll_wire``).

Run with atheris (``pip install .[fuzz]``)::

    python fuzz/poll_frames.py fuzz/corpus/poll_frames -max_total_time=300

``test_one_input`` also works without atheris; the unit tests replay the seed corpus through it.

Properties checked for every input, beyond "no exception other than FrameError":
- an accepted body is canonical: encoding its frames gives the same bytes back;
- no frame is empty or longer than the largest message, and there are at most MAX_FRAMES;
- every frame that parses as a message through the control plane's session is judged without
  any other exception (the path a POST /v1/messages body takes).
"""

from __future__ import annotations

import sys

from hardened_launcher.transport.messages import MAX_MESSAGE_BYTES
from hardened_launcher.transport.poll_wire import (
    MAX_FRAMES,
    FrameError,
    decode_frames,
    encode_frames,
)
from hardened_launcher.transport.session import Session
from hardened_launcher.transport.topics import WorkerAddress, from_worker_topic

_SESSION = Session(side="controlplane", namespace="spacelift")
_TOPIC = from_worker_topic("spacelift", WorkerAddress(pool_id="pool-a", worker_id="w1"))


def _decode(data: bytes) -> list[bytes] | FrameError:
    try:
        return decode_frames(data)
    except FrameError as exc:
        return exc


def test_one_input(data: bytes) -> None:
    frames = _decode(data)
    if isinstance(frames, FrameError):
        assert frames.reason == "poll_frames_invalid"
        return
    assert encode_frames(frames) == data
    assert len(frames) <= MAX_FRAMES
    for frame in frames:
        assert 0 < len(frame) <= MAX_MESSAGE_BYTES
        _SESSION.incoming(_TOPIC, frame, now=0.0)


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
