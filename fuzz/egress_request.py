"""Fuzz harness for what a run sends its egress proxy: request heads and TLS ClientHellos.

Run with atheris::

    python fuzz/egress_request.py fuzz/corpus/egress_request -max_total_time=300

``test_one_input`` also works without atheris; the unit tests replay the seed corpus through it.

Properties checked for every input, beyond "no exception other than RequestSyntaxError /
EgressDeniedError":
- a parsed request has a port from 1 to 65535 and a non-empty host without whitespace;
- an absolute-form request renders to an origin-form head that parses again to the same host,
  port and method, carries exactly one Host header and no Proxy-* header;
- the policy decision on the parsed host never raises anything but an egress refusal, and an
  empty policy allows nothing;
- the ClientHello parser always returns, and a found SNI name is ASCII.
"""

from __future__ import annotations

import contextlib
import sys

from hardened_launcher.egress.errors import EgressDeniedError
from hardened_launcher.egress.matcher import check_target
from hardened_launcher.egress.policy import parse_policy
from hardened_launcher.egress.request import (
    RequestSyntaxError,
    parse_client_hello,
    parse_request_head,
    render_origin_request,
)

_EMPTY = parse_policy(None)
_SOME = parse_policy({"allow": [{"host": "*.example.com"}, {"cidr": "198.18.0.0/24"}]})


def test_one_input(data: bytes) -> None:
    hello = parse_client_hello(data)
    if hello.server_name is not None:
        assert hello.server_name.isascii()
    head = data if data.endswith(b"\r\n\r\n") else data + b"\r\n\r\n"
    try:
        request = parse_request_head(head)
    except RequestSyntaxError:
        return
    assert 1 <= request.port <= 65535
    assert request.host
    assert not any(c.isspace() for c in request.host)
    if request.kind == "http":
        rendered = render_origin_request(request)
        lines = rendered.split(b"\r\n")
        assert sum(1 for line in lines if line.lower().startswith(b"host:")) == 1
        assert not any(line.lower().startswith(b"proxy-") for line in lines)
        again = rendered.split(b"\r\n", 1)
        assert again[0].split(b" ")[0].decode() == request.method
    try:
        check_target(_EMPTY, request.host, request.port)
    except EgressDeniedError:
        pass
    else:
        raise AssertionError("the empty policy allowed a destination")
    with contextlib.suppress(EgressDeniedError):
        check_target(_SOME, request.host, request.port)


def main() -> None:
    import atheris  # noqa: PLC0415

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
