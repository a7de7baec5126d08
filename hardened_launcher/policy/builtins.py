"""Builtins registered over (or next to) regorus's own, so that they mean what OPA means.

Each one was found by the differential suite (``tests/differential``: the same policy and input
under the real OPA engine) and reimplements OPA's Go behaviour: code-point offsets, Go's simple
case mapping, ``strings.Count``/``NewReplacer``, Go ``fmt`` (:mod:`.gofmt`), RE2 regular
expressions (:mod:`.rego_regex`), Go's ``time.AddDate`` normalisation, Go's CIDR parsing and
IPv4-mapped addresses, plus builtins regorus lacks (``crypto.*`` hashes and HMACs,
``net.cidr_intersects``/``cidr_merge``/``cidr_contains_matches``, ``array.flatten``).

An exception raised here becomes an evaluation error, which denies the run: every case where OPA
reports an error raises, and messages never carry argument values. regorus cannot hand Python a
set that holds arrays, objects or sets (the call fails, so the run is denied): that is why
``count`` and ``sort``, common over such sets, stay regorus's own, reached through the runtime
module's ``length`` and ``sorted`` (:data:`~hardened_launcher.policy.static_checks.RUNTIME_MODULE`),
which hand a launcher builtin only a string (``hl.strlen``) or a fixed message (``hl.refuse``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import NoReturn
from urllib.parse import quote_plus

from hardened_launcher.ascii_text import is_digits
from hardened_launcher.policy import arith, gofmt, rego_regex
from hardened_launcher.policy.regovalue import sort_values

Builtin = tuple[str, int, Callable[..., object]]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NS = 1_000_000_000
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string")
    return value


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number")
    if isinstance(value, float) and not value.is_integer():
        raise TypeError(f"{what} must be an integer number")
    return int(value)


# -- strings ---------------------------------------------------------------------------------


def strings_count(value: object, search: object) -> int:
    # Go's strings.Count: non-overlapping; "" counts code points + 1 (as Python's str.count)
    return _str(value, "strings.count: operand 1").count(_str(search, "strings.count: operand 2"))


def replace_n(patterns: object, value: object) -> str:
    """Go's strings.NewReplacer over the keys in sorted order: one pass over the UTF-8 bytes,
    earlier keys win; an empty key inserts its replacement between bytes (as OPA does)."""
    if not isinstance(patterns, dict):
        raise TypeError("strings.replace_n: operand 1 must be an object")
    text = _str(value, "strings.replace_n: operand 2").encode("utf-8")
    pairs = [
        (_str(k, "a pattern").encode("utf-8"), _str(patterns[k], "a replacement").encode("utf-8"))
        for k in sorted(patterns)
    ]
    if not pairs:
        return text.decode("utf-8")
    out = bytearray()
    i = last = 0
    previous_empty = False
    while i <= len(text):
        found: tuple[bytes, bytes] | None = None
        for old, new in pairs:
            # Go: no empty match right after an empty match
            if (old or not previous_empty) and text.startswith(old, i):
                found = (old, new)
                break
        previous_empty = found is not None and not found[0]
        if found is None:
            i += 1
            continue
        out += text[last:i] + found[1]
        i += len(found[0])
        last = i
    out += text[last:]
    return out.decode("utf-8", errors="replace")


def _simple_case(char: str, upper: bool) -> str:
    mapped = char.upper() if upper else char.lower()
    if len(mapped) == 1:
        return mapped
    if char == "\u0130":  # İ: Go's unicode.ToLower gives plain i
        return "i"
    title = char.title()
    return title if upper and len(title) == 1 else char


def upper(value: object) -> str:
    text = _str(value, "upper: operand 1")
    if text.isascii():
        return text.upper()
    return "".join(_simple_case(c, upper=True) for c in text)


def lower(value: object) -> str:
    text = _str(value, "lower: operand 1")
    if text.isascii():
        return text.lower()
    return "".join(_simple_case(c, upper=False) for c in text)


def replace(value: object, old: object, new: object) -> str:
    """OPA's replace; an empty ``old`` inserts ``new`` between *bytes*, as OPA does."""
    text = _str(value, "replace: operand 1")
    search = _str(old, "replace: operand 2")
    insert = _str(new, "replace: operand 3")
    if search:
        return text.replace(search, insert)
    joined = insert.encode("utf-8").join(bytes([b]) for b in text.encode("utf-8"))
    return (
        insert.encode("utf-8") + joined + insert.encode("utf-8") if text else insert.encode()
    ).decode("utf-8", errors="replace")


def indexof(value: object, search: object) -> int:
    text = _str(value, "indexof: operand 1")
    needle = _str(search, "indexof: operand 2")
    if not needle:
        raise ValueError("indexof: empty search character")
    return text.find(needle)


def indexof_n(value: object, search: object) -> list[int]:
    text = _str(value, "indexof_n: operand 1")
    needle = _str(search, "indexof_n: operand 2")
    if not needle:
        raise ValueError("indexof_n: empty search character")
    found: list[int] = []
    at = text.find(needle)
    while at >= 0:
        found.append(at)
        at = text.find(needle, at + 1)
    return found


def substring(value: object, start: object, length: object) -> str:
    text = _str(value, "substring: operand 1")
    first = _int(start, "substring: operand 2")
    size = _int(length, "substring: operand 3")
    if first < 0:
        raise ValueError("substring: negative offset")
    if first >= len(text):
        return ""
    if size < 0 or first + size > len(text):
        return text[first:]
    return text[first : first + size]


def trace(note: object) -> bool:
    _str(note, "trace: operand 1")
    return True


# -- collections -----------------------------------------------------------------------------


def array_slice(array: object, start: object, stop: object) -> list[object]:
    if not isinstance(array, list):
        raise TypeError("array.slice: operand 1 must be an array")
    first = max(_int(start, "array.slice: operand 2"), 0)
    last = min(_int(stop, "array.slice: operand 3"), len(array))
    return array[first:last] if first < last else []


def array_flatten(array: object) -> list[object]:
    if not isinstance(array, list):
        raise TypeError("array.flatten: operand 1 must be an array")
    out: list[object] = []
    for item in array:
        if isinstance(item, list):
            out.extend(item)
        else:
            out.append(item)
    return out


def _json_ready(value: object) -> object:
    if isinstance(value, set | frozenset):
        return [_json_ready(v) for v in sort_values(value)]
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("json.marshal: object keys must be strings")
        return {k: _json_ready(v) for k, v in value.items()}
    return value


def json_marshal(value: object) -> str:
    """Go's encoding/json: sorted keys, no spaces, ``< > &`` and U+2028/9 escaped."""
    text = json.dumps(_json_ready(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


# -- encoding --------------------------------------------------------------------------------

_HEX = re.compile(r"%[0-9A-Fa-f]{2}")


def urlquery_encode(value: object) -> str:
    return quote_plus(_str(value, "urlquery.encode: operand 1"), safe="")


def urlquery_decode(value: object) -> str:
    text = _str(value, "urlquery.decode: operand 1")
    raw = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%":
            if not _HEX.match(text, i):
                raise ValueError("urlquery.decode: invalid URL escape")
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
            continue
        raw.extend(b" " if char == "+" else char.encode("utf-8"))
        i += 1
    return raw.decode("utf-8", errors="replace")


def glob_quote_meta(value: object) -> str:
    text = _str(value, "glob.quote_meta: operand 1")
    return "".join("\\" + c if c in "*?\\[]{}" else c for c in text)


_BYTE_UNITS = {
    "": 1,
    **{f"{p}b": 1000**n for n, p in enumerate("kmgtpe", start=1)},
    **{p: 1000**n for n, p in enumerate("kmgtpe", start=1)},
    **{f"{p}ib": 1024**n for n, p in enumerate("kmgtpe", start=1)},
    **{f"{p}i": 1024**n for n, p in enumerate("kmgtpe", start=1)},
}
_BYTES = re.compile(r"^(-?[0-9]*(?:\.[0-9]*)?)(.*)$")


def units_parse_bytes(value: object) -> int:
    text = _str(value, "units.parse_bytes: operand 1").lower()
    if " " in text:
        raise ValueError("units.parse_bytes: spaces not allowed in resource strings")
    found = _BYTES.match(text)
    number, unit = found.groups() if found else ("", text)
    if number in ("", ".", "-", "-."):
        raise ValueError("units.parse_bytes: no byte amount provided")
    if unit not in _BYTE_UNITS:
        raise ValueError("units.parse_bytes: byte unit not recognized")

    return int(Decimal(number) * _BYTE_UNITS[unit])


# -- numbers ---------------------------------------------------------------------------------

_JSON_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")


def to_number(value: object) -> int | float:
    """OPA's to_number: a string must be a JSON number literal (no spaces, no ``+``, no hex)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if not isinstance(value, str):
        raise TypeError("to_number: operand 1 must be a null, boolean, number or string")
    found = _JSON_NUMBER.match(value)
    if found is None:
        raise ValueError("to_number: invalid number literal")
    if found.group(2) is None and found.group(3) is None:
        if value == "-0":
            raise ValueError("to_number: OPA keeps the text -0, the engine cannot")
        number = int(value)
        if not INT64_MIN <= number < 2**64:
            # OPA keeps it exact; a rounded float here could compare differently: fail closed
            raise ValueError("to_number: the integer is beyond 64 bits")
        return number
    result = float(value)
    if result in (float("inf"), float("-inf")):
        raise ValueError("to_number: value out of range")
    if not _canonical_text(value):
        # OPA keeps the text ("0.10", "1e3") for json.marshal and sprintf; the engine cannot
        raise ValueError("to_number: a number not in its shortest form (write 0.1, not 0.10)")
    return result


def _rounding(name: str, rounded: Callable[[float], int]) -> Callable[[object], int | float]:
    def rounding(value: object) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name}: operand 1 must be a number")
        if isinstance(value, int):
            return value
        if -1 < value < 0:
            # OPA's ceil/floor of a number in (-1, 0) give 1 and 0 (a bug); an error here
            # denies the run instead of disagreeing with `opa test` either way
            raise ValueError(f"{name}: a number in (-1, 0) rounds differently in OPA")
        if not math.isfinite(value):
            raise ValueError(f"{name}: operand 1 must be finite")
        result = rounded(value)
        # beyond 64 bits the engine takes the (integral, exact) float, not a Python int
        return result if INT64_MIN <= result <= INT64_MAX else value

    return rounding


def _canonical_text(text: str) -> bool:
    """Is ``text`` how the engine writes the number it reads from it (so OPA, which keeps the
    text, shows the same)? ``1``, ``0.5``; not ``1.0``, ``0.50``, ``1e3``."""
    if _PLAIN_INTEGER.fullmatch(text):
        return True
    number = float(text)
    return "e" not in text.lower() and not number.is_integer() and repr(number) == text


_PLAIN_INTEGER = re.compile(r"0|-?[1-9][0-9]*")  # not -0: OPA keeps that text


def json_number_texts(value: object) -> object:
    """``json.unmarshal``'s argument, refused when it holds a number OPA would keep as written
    and the engine would not (``1.0``, ``0.10``, ``1e3``, beyond 64 bits); other text is passed
    on unchanged for the engine's own parser (and its errors)."""
    if not isinstance(value, str):
        return value

    def number(text: str) -> object:
        if not _canonical_text(text):
            raise ValueError(
                "json.unmarshal: a number not in its shortest form (such as 1.0 or 1e3): OPA "
                "keeps its text, the engine cannot"
            )
        if _PLAIN_INTEGER.fullmatch(text) and not INT64_MIN <= int(text) < 2**64:
            raise ValueError("json.unmarshal: an integer beyond 64 bits")
        return None

    try:
        json.loads(value, parse_float=number, parse_int=number)
    except json.JSONDecodeError:
        return value
    except RecursionError:
        raise ValueError("json.unmarshal: nested too deeply") from None
    return value


def units_integral(value: object) -> object:
    """``units.parse``'s result: OPA writes a non-integral one with ten decimals (``0.0015000000``
    for ``1.5m``), which the engine cannot show: refused."""
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(
            "units.parse: a result that is not a whole number is written differently by OPA"
        )
    return value


# -- semver ----------------------------------------------------------------------------------

_IDENTIFIERS = re.compile(r"^[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*$")
_GO_INT = re.compile(r"^[+-]?[0-9]+$")


def _semver(value: str) -> tuple[tuple[int, int, int], list[str]] | None:
    """OPA's (coreos go-semver) parse: optional ``v``, ``+meta``, ``-pre``, three integers."""
    text = value.removeprefix("v")
    text, _, metadata = text.partition("+")
    text, _, prerelease = text.partition("-")
    parts = text.split(".", 2)
    if len(parts) != 3:
        return None
    for identifier in (prerelease, metadata):
        if identifier and not _IDENTIFIERS.match(identifier):
            return None
    if not all(
        len(part) <= 20 and _GO_INT.match(part) and abs(int(part)) < 2**63 for part in parts
    ):
        return None
    major, minor, patch = (int(part) for part in parts)
    return (major, minor, patch), prerelease.split(".") if prerelease else []


def semver_is_valid(value: object) -> bool:
    return isinstance(value, str) and _semver(value) is not None


def _compare_prerelease(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return (not a) - (not b)  # no pre-release sorts after any pre-release
    for x, y in zip(a, b, strict=False):
        x_num, y_num = is_digits(x), is_digits(y)
        if x_num and y_num:  # by value, without int(): an identifier may be any length
            x_key, y_key = x.lstrip("0"), y.lstrip("0")
            order = ((len(x_key), x_key) > (len(y_key), y_key)) - (
                (len(x_key), x_key) < (len(y_key), y_key)
            )
        elif x_num or y_num:
            order = -1 if x_num else 1
        else:
            order = (x > y) - (x < y)
        if order:
            return order
    return (len(a) > len(b)) - (len(a) < len(b))


def semver_compare(a: object, b: object) -> int:
    first = _semver(_str(a, "semver.compare: operand 1"))
    second = _semver(_str(b, "semver.compare: operand 2"))
    if first is None or second is None:
        raise ValueError("semver.compare: invalid semantic version")
    if first[0] != second[0]:
        return -1 if first[0] < second[0] else 1
    return _compare_prerelease(first[1], second[1])


# -- crypto ----------------------------------------------------------------------------------


def _digest(name: str) -> Callable[[object], str]:
    def digest(value: object) -> str:
        data = _str(value, f"crypto.{name}: operand 1").encode("utf-8")
        return hashlib.new(name, data).hexdigest()

    return digest


def _hmac(name: str) -> Callable[[object, object], str]:
    def mac(value: object, key: object) -> str:
        data = _str(value, f"crypto.hmac.{name}: operand 1").encode("utf-8")
        secret = _str(key, f"crypto.hmac.{name}: operand 2").encode("utf-8")
        return hmac.new(secret, data, name).hexdigest()

    return mac


def hmac_equal(a: object, b: object) -> bool:
    first = _str(a, "crypto.hmac.equal: operand 1").encode("utf-8")
    second = _str(b, "crypto.hmac.equal: operand 2").encode("utf-8")
    return hmac.compare_digest(first, second)


# -- time ------------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.ASCII
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _checked_ns(value: int, what: str) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{what}: time outside of valid range")
    return value


def parse_rfc3339_ns(value: object) -> int:
    """Go's time.Parse(time.RFC3339, …): upper-case T and Z only, seconds below 60."""
    text = _str(value, "time.parse_rfc3339_ns: operand 1")
    found = _RFC3339.match(text)
    if found is None:
        raise ValueError("time.parse_rfc3339_ns: cannot parse the time")
    year, month, day, hour, minute, second = (int(found.group(n)) for n in range(1, 7))
    fraction = found.group(7) or ""
    zone = found.group(8)
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise ValueError("time.parse_rfc3339_ns: day or month out of range")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError("time.parse_rfc3339_ns: hour, minute or second out of range")
    offset = 0
    if zone != "Z":
        zone_hours, zone_minutes = int(zone[1:3]), int(zone[4:6])
        if zone_hours > 24 or zone_minutes > 60:  # Go's own bounds
            raise ValueError("time.parse_rfc3339_ns: time zone offset out of range")
        offset = (zone_hours * 3600 + zone_minutes * 60) * (-1 if zone[0] == "-" else 1)
    days = (dt.date(year, month, day) - dt.date(1970, 1, 1)).days
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
    nanos = int(fraction[1:10].ljust(9, "0")) if fraction else 0
    return _checked_ns(seconds * NS + nanos, "time.parse_rfc3339_ns")


def add_date(ns: object, years: object, months: object, days: object) -> int:
    """Go's Time.AddDate in UTC: month and day overflow normalise (Jan 31 + 1 month = Mar 2)."""
    stamp = _int(ns, "time.add_date: operand 1")
    seconds, nanos = divmod(stamp, NS)
    moment = _EPOCH + dt.timedelta(seconds=seconds)
    month_index = moment.month - 1 + _int(months, "time.add_date: operand 3")
    year = moment.year + _int(years, "time.add_date: operand 2") + month_index // 12
    month = month_index % 12 + 1
    if not 1 <= year <= 9999:
        raise ValueError("time.add_date: time outside of valid range")
    first = dt.date(year, month, 1)
    offset_days = moment.day - 1 + _int(days, "time.add_date: operand 4")
    day_count = (first - dt.date(1970, 1, 1)).days + offset_days
    clock = moment.hour * 3600 + moment.minute * 60 + moment.second
    return _checked_ns((day_count * 86400 + clock) * NS + nanos, "time.add_date")


# -- net -------------------------------------------------------------------------------------


def _unmap(network: IPNetwork) -> IPNetwork:
    if isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None and network.prefixlen >= 96:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96), strict=False)
    return network


def _parse_cidr(text: str, what: str) -> IPNetwork:
    if "/" not in text or "%" in text or text != text.strip():
        raise ValueError(f"{what}: invalid CIDR address")
    try:
        return _unmap(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ValueError(f"{what}: invalid CIDR address") from None


def _parse_cidr_or_ip(text: str, what: str) -> IPNetwork:
    if "/" in text:
        return _parse_cidr(text, what)
    if "%" in text or text != text.strip():
        raise ValueError(f"{what}: invalid IP address")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{what}: invalid IP address") from None
    return _unmap(ipaddress.ip_network(address))


def _within(inner: IPNetwork, outer: IPNetwork) -> bool:
    if inner.version != outer.version:
        return False
    return inner.subnet_of(outer)  # type: ignore[arg-type]  # same version checked above


def cidr_contains(cidr: object, what: object) -> bool:
    outer = _parse_cidr(_str(cidr, "net.cidr_contains: operand 1"), "net.cidr_contains")
    inner = _parse_cidr_or_ip(_str(what, "net.cidr_contains: operand 2"), "net.cidr_contains")
    return _within(inner, outer)


def cidr_intersects(a: object, b: object) -> bool:
    first = _parse_cidr(_str(a, "net.cidr_intersects: operand 1"), "net.cidr_intersects")
    second = _parse_cidr(_str(b, "net.cidr_intersects: operand 2"), "net.cidr_intersects")
    return first.version == second.version and first.overlaps(second)


def _classful(address: ipaddress.IPv4Address) -> ipaddress.IPv4Network:
    """Go's IP.DefaultMask, which OPA's net.cidr_merge applies to a bare address."""
    first = int(address) >> 24
    prefix = 8 if first < 0x80 else 16 if first < 0xC0 else 24
    return ipaddress.IPv4Network((address, prefix), strict=False)


def cidr_merge(values: object) -> set[str]:
    if not isinstance(values, list | set | frozenset):
        raise TypeError("net.cidr_merge: operand 1 must be an array or a set")
    networks: list[IPNetwork] = []
    for value in values:
        text = _str(value, "net.cidr_merge: an element")
        if "/" in text:
            networks.append(_parse_cidr(text, "net.cidr_merge"))
            continue
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise ValueError("net.cidr_merge: invalid IP address") from None
        if not isinstance(address, ipaddress.IPv4Address):
            raise TypeError("net.cidr_merge: an IPv6 address needs a prefix length")
        networks.append(_classful(address))
    merged: set[str] = set()
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    merged.update(str(n) for n in ipaddress.collapse_addresses(v4))
    merged.update(str(n) for n in ipaddress.collapse_addresses(v6))
    return merged


def _cidr_items(value: object, what: str) -> list[tuple[object, str]]:
    if isinstance(value, str):
        return [(value, value)]
    if isinstance(value, list):
        items: list[tuple[object, object]] = list(enumerate(value))
    elif isinstance(value, set | frozenset):
        items = [(v, v) for v in value]
    elif isinstance(value, dict):
        items = list(value.items())
    else:
        raise TypeError(f"{what} must be a string, array, set or object")
    out: list[tuple[object, str]] = []
    for key, item in items:
        first = item[0] if isinstance(item, list) and item else item
        out.append((key, _str(first, f"{what}: an element")))
    return out


def cidr_contains_matches(cidrs: object, values: object) -> set[tuple[object, object]]:
    outer = [
        (k, _parse_cidr(v, "net.cidr_contains_matches"))
        for k, v in _cidr_items(cidrs, "net.cidr_contains_matches: operand 1")
    ]
    inner = [
        (k, _parse_cidr_or_ip(v, "net.cidr_contains_matches"))
        for k, v in _cidr_items(values, "net.cidr_contains_matches: operand 2")
    ]
    return {(ko, ki) for ko, o in outer for ki, i in inner if _within(i, o)}


def _cidr_contains_matches(cidrs: object, values: object) -> set[object]:
    # regorus turns a Python tuple into an array; a set of pairs as OPA returns
    return set(cidr_contains_matches(cidrs, values))


def code_points(value: object) -> int:
    """``count`` of a string as OPA counts it: code points (the engine counts a character
    outside the BMP twice). Called through ``data.hl_runtime.length`` for strings only."""
    return len(_str(value, "count"))


_LAYOUT_ZONE_NAME = re.compile(r"MST")
_LAYOUT_TRIMMED_FRACTION = re.compile(r"[.,]9")


def time_layout(value: object) -> object:
    """``time.format``'s argument, refused when its layout is one the engine formats otherwise:
    a zone abbreviation (``MST``: OPA prints ``JST``, the engine ``+09:00``) or a fraction that
    drops trailing zeros (``.999``: the engine keeps them)."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[2], str):
        layout = value[2]
        if _LAYOUT_ZONE_NAME.search(layout):
            raise ValueError(
                "time.format: a layout with a zone abbreviation (MST) is formatted differently "
                "in OPA; use -0700 or Z07:00"
            )
        if _LAYOUT_TRIMMED_FRACTION.search(layout):
            raise ValueError(
                "time.format: a fraction that drops trailing zeros (.999) is formatted "
                "differently in OPA; use .000"
            )
    return value


_NANO_FRACTION = re.compile(r"\.([0-9]+)(?=(Z|[+-][0-9]{2}:[0-9]{2})$)")


def time_trim(value: object, formatted: object) -> str:
    """``time.format``'s result with Go's RFC 3339 fraction (``.999999999``: trailing zeros
    dropped, no dot for a whole second) where the layout is that default; the engine keeps
    three, six or nine digits."""
    text = _str(formatted, "time.format")
    layout = value[2] if isinstance(value, list) and len(value) == 3 else "RFC3339Nano"
    if layout != "RFC3339Nano":
        return text

    def trimmed(found: re.Match[str]) -> str:
        digits = found.group(1).rstrip("0")
        return f".{digits}" if digits else ""

    return _NANO_FRACTION.sub(trimmed, text, count=1)


def refuse(message: object) -> NoReturn:
    """Fail the evaluation with a fixed message from the launcher's runtime module."""
    raise ValueError(_str(message, "refuse"))


BUILTINS: tuple[Builtin, ...] = (
    ("hl.refuse", 1, refuse),
    ("hl.strlen", 1, code_points),
    ("hl.time_layout", 1, time_layout),
    ("hl.time_trim", 2, time_trim),
    ("hl.json_number_texts", 1, json_number_texts),
    ("hl.units_integral", 1, units_integral),
    *arith.EXTENSIONS,
    ("sprintf", 2, gofmt.sprintf),
    ("strings.count", 2, strings_count),
    ("strings.replace_n", 2, replace_n),
    ("upper", 1, upper),
    ("lower", 1, lower),
    ("replace", 3, replace),
    ("indexof", 2, indexof),
    ("indexof_n", 2, indexof_n),
    ("substring", 3, substring),
    ("trace", 1, trace),
    ("array.slice", 3, array_slice),
    ("array.flatten", 1, array_flatten),
    ("json.marshal", 1, json_marshal),
    ("urlquery.encode", 1, urlquery_encode),
    ("urlquery.decode", 1, urlquery_decode),
    ("glob.quote_meta", 1, glob_quote_meta),
    ("units.parse_bytes", 1, units_parse_bytes),
    ("to_number", 1, to_number),
    ("ceil", 1, _rounding("ceil", math.ceil)),
    ("sum", 1, arith.opa_sum),
    ("product", 1, arith.opa_product),
    ("floor", 1, _rounding("floor", math.floor)),
    ("semver.is_valid", 1, semver_is_valid),
    ("semver.compare", 2, semver_compare),
    ("crypto.md5", 1, _digest("md5")),
    ("crypto.sha1", 1, _digest("sha1")),
    ("crypto.sha256", 1, _digest("sha256")),
    ("crypto.hmac.md5", 2, _hmac("md5")),
    ("crypto.hmac.sha1", 2, _hmac("sha1")),
    ("crypto.hmac.sha256", 2, _hmac("sha256")),
    ("crypto.hmac.sha512", 2, _hmac("sha512")),
    ("crypto.hmac.equal", 2, hmac_equal),
    ("time.parse_rfc3339_ns", 1, parse_rfc3339_ns),
    ("time.add_date", 4, add_date),
    ("net.cidr_contains", 2, cidr_contains),
    ("net.cidr_intersects", 2, cidr_intersects),
    ("net.cidr_merge", 1, cidr_merge),
    ("net.cidr_contains_matches", 2, _cidr_contains_matches),
    ("regex.match", 2, rego_regex.match),
    ("regex.is_valid", 1, rego_regex.is_valid),
    ("regex.split", 2, rego_regex.split),
    ("regex.find_n", 3, rego_regex.find_n),
    ("regex.find_all_string_submatch_n", 3, rego_regex.find_all_string_submatch_n),
    ("regex.replace", 3, rego_regex.replace),
    ("regex.template_match", 4, rego_regex.template_match),
)
