"""Parsing of what a run sends to its proxy: the request head, and a TLS ClientHello's SNI.

Both parse bytes from inside the run (untrusted) and are pure, bounded and fuzzed
(``fuzz/egress_request.py``). Anything unexpected is a :class:`RequestSyntaxError`; a request is
never "repaired".

Accepted request forms (RFC 9110/9112):

- ``CONNECT host:port HTTP/1.1`` (authority form; IPv6 literals in brackets);
- ``METHOD http://host[:port]/path HTTP/1.x`` (absolute form, plain HTTP only). The request is
  forwarded in origin form with ``Host`` set from the URL and ``Connection: close``; hop-by-hop
  and ``Proxy-*`` headers are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "MAX_HEADERS",
    "ClientHello",
    "ProxyRequest",
    "RequestSyntaxError",
    "parse_client_hello",
    "parse_request_head",
    "render_origin_request",
]

MAX_HEADERS: Final = 100
MAX_TARGET_CHARS: Final = 8192
_METHOD_RE: Final = re.compile(rb"[A-Z][A-Z0-9_-]{0,31}")
_TOKEN_RE: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE_RE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_TARGET_RE: Final = re.compile(rb"[\x21-\x7e]+")
_PORT_RE: Final = re.compile(r"[0-9]{1,5}")
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
        b"host",
    }
)


class RequestSyntaxError(ValueError):
    """The bytes are not a request (or ClientHello) this proxy accepts."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyRequest:
    """A parsed request head. ``host`` is as written (brackets kept for IPv6)."""

    kind: Literal["connect", "http"]
    method: str
    host: str
    port: int
    path: str
    version: str
    headers: tuple[tuple[bytes, bytes], ...]


def _split_authority(authority: str, *, default_port: int | None) -> tuple[str, int]:
    if "@" in authority:
        raise RequestSyntaxError("credentials in the target are not accepted")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise RequestSyntaxError("unclosed IPv6 literal")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise RequestSyntaxError("junk after the IPv6 literal")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_raw = authority.rpartition(":")
        if not sep:
            host, port_text = authority, None
        else:
            port_text = port_text_raw
    if not host:
        raise RequestSyntaxError("empty host")
    if port_text is None:
        if default_port is None:
            raise RequestSyntaxError("the target has no port")
        return host, default_port
    if not _PORT_RE.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise RequestSyntaxError("the port is not a number from 1 to 65535")
    return host, int(port_text)


def parse_request_head(head: bytes) -> ProxyRequest:
    """Parse a request head that ends with ``\\r\\n\\r\\n`` (the caller bounds its size)."""
    if not head.endswith(b"\r\n\r\n"):
        raise RequestSyntaxError("the head does not end with an empty line")
    lines = head[:-4].split(b"\r\n")
    if len(lines) - 1 > MAX_HEADERS:
        raise RequestSyntaxError(f"more than {MAX_HEADERS} header fields")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise RequestSyntaxError("the request line is not METHOD TARGET VERSION")
    method_b, target_b, version_b = parts
    if not _METHOD_RE.fullmatch(method_b):
        raise RequestSyntaxError("the method is not an upper-case token")
    if version_b not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise RequestSyntaxError("the version is not HTTP/1.0 or HTTP/1.1")
    if len(target_b) > MAX_TARGET_CHARS or not _TARGET_RE.fullmatch(target_b):
        raise RequestSyntaxError("the target is empty, too long or has invalid bytes")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN_RE.fullmatch(name):
            raise RequestSyntaxError("a header line is not NAME: VALUE")
        value = value.strip(b" \t")
        if not _VALUE_RE.fullmatch(value):
            raise RequestSyntaxError("a header value has control characters")
        headers.append((name, value))
    lower = [n.lower() for n, _ in headers]
    if lower.count(b"content-length") > 1 or (
        b"content-length" in lower and b"transfer-encoding" in lower
    ):
        raise RequestSyntaxError("ambiguous message length (Content-Length/Transfer-Encoding)")
    method = method_b.decode("ascii")
    target = target_b.decode("ascii")
    version = version_b.decode("ascii")
    if method == "CONNECT":
        host, port = _split_authority(target, default_port=None)
        return ProxyRequest(
            kind="connect",
            method=method,
            host=host,
            port=port,
            path="",
            version=version,
            headers=tuple(headers),
        )
    if target[:7].lower() != "http://":
        raise RequestSyntaxError("only absolute http:// targets (or CONNECT) are accepted")
    rest = target[7:]
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    authority, path = (rest, "/") if cut < 0 else (rest[:cut], rest[cut:])
    if path.startswith(("?", "#")):
        path = "/" + path
    path = path.split("#", 1)[0]
    host, port = _split_authority(authority, default_port=80)
    return ProxyRequest(
        kind="http",
        method=method,
        host=host,
        port=port,
        path=path,
        version=version,
        headers=tuple(headers),
    )


def render_origin_request(request: ProxyRequest) -> bytes:
    """The head to send upstream for an absolute-form request: origin form, our Host header,
    ``Connection: close``, no hop-by-hop or ``Proxy-*`` headers."""
    named = {
        name.strip().lower()
        for key, value in request.headers
        if key.lower() == b"connection"
        for name in value.split(b",")
    }
    host = request.host if request.port == 80 else f"{request.host}:{request.port}"
    out = [f"{request.method} {request.path} {request.version}".encode("ascii")]
    out.append(b"Host: " + host.encode("ascii"))
    for key, value in request.headers:
        low = key.lower()
        if low in _HOP_BY_HOP or low in named or low.startswith(b"proxy-"):
            continue
        out.append(key + b": " + value)
    out.append(b"Connection: close")
    return b"\r\n".join(out) + b"\r\n\r\n"


# ---------------------------------------------------------------------------------------------
# TLS ClientHello (peeked, never terminated)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHello:
    """What a peek at the first bytes of a tunnel found.

    ``complete`` is false while more bytes are needed; ``is_tls`` is false when the bytes are
    not a TLS handshake at all; ``server_name`` is the SNI host name (``None``: none sent).
    """

    complete: bool
    is_tls: bool = True
    server_name: str | None = None


_NEED_MORE: Final = ClientHello(complete=False)
_NOT_TLS: Final = ClientHello(complete=True, is_tls=False)
MAX_CLIENT_HELLO_BYTES: Final = 64 * 1024


def _handshake_bytes(data: bytes) -> bytes | None:
    """The handshake bytes carried by the TLS records at the start of ``data`` (the last record
    may be incomplete), or ``None`` when ``data`` does not start with a handshake record."""
    out = bytearray()
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 5]
        if header[0] != 22 or (len(header) >= 2 and header[1] != 3):
            return None if offset == 0 else bytes(out)
        if len(header) < 5:
            break
        length = int.from_bytes(header[3:5], "big")
        if length == 0 or length > 16384 + 2048:
            return None
        out += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
    return bytes(out)


def parse_client_hello(data: bytes) -> ClientHello:
    """Find the SNI host name in the first bytes of a TLS connection, if they are complete."""
    if len(data) > MAX_CLIENT_HELLO_BYTES:
        return _NOT_TLS
    hs = _handshake_bytes(data)
    if hs is None:
        return _NOT_TLS
    if len(hs) < 4:
        return _NEED_MORE
    if hs[0] != 1:
        return _NOT_TLS
    length = int.from_bytes(hs[1:4], "big")
    if len(hs) < 4 + length:
        return _NEED_MORE if len(data) < MAX_CLIENT_HELLO_BYTES else _NOT_TLS
    body = hs[4 : 4 + length]
    try:
        return ClientHello(complete=True, server_name=_server_name(body))
    except (IndexError, RequestSyntaxError):
        return _NOT_TLS


def _take(body: bytes, pos: int, size: int) -> tuple[bytes, int]:
    if pos + size > len(body):
        raise RequestSyntaxError("truncated ClientHello")
    return body[pos : pos + size], pos + size


def _vector(body: bytes, pos: int, length_bytes: int) -> tuple[bytes, int]:
    raw, pos = _take(body, pos, length_bytes)
    return _take(body, pos, int.from_bytes(raw, "big"))


def _server_name(body: bytes) -> str | None:
    pos = 2 + 32  # legacy_version, random
    _, pos = _vector(body, pos, 1)  # session id
    _, pos = _vector(body, pos, 2)  # cipher suites
    _, pos = _vector(body, pos, 1)  # compression methods
    if pos == len(body):
        return None
    extensions, pos = _vector(body, pos, 2)
    if pos != len(body):
        raise RequestSyntaxError("junk after the extensions")
    epos = 0
    found: str | None = None
    seen: set[int] = set()
    while epos < len(extensions):
        kind_raw, epos = _take(extensions, epos, 2)
        data, epos = _vector(extensions, epos, 2)
        kind = int.from_bytes(kind_raw, "big")
        if kind in seen:
            raise RequestSyntaxError("duplicate extension")
        seen.add(kind)
        if kind != 0:
            continue
        names, end = _vector(data, 0, 2)
        if end != len(data):
            raise RequestSyntaxError("junk after server_name")
        npos = 0
        while npos < len(names):
            name_type, npos = _take(names, npos, 1)
            name, npos = _vector(names, npos, 2)
            if name_type == b"\x00":
                if found is not None:
                    raise RequestSyntaxError("two host names in server_name")
                try:
                    found = name.decode("ascii")
                except UnicodeDecodeError:
                    raise RequestSyntaxError("server_name is not ASCII") from None
    return found
