"""OPA's ``sprintf``: Go's ``fmt.Sprintf`` over the argument conversion OPA applies.

OPA turns each element of the argument array into a Go value first: a number that is an integer
within int64 becomes ``int64``; another number becomes ``float64``; a string stays a ``string``;
anything else (booleans, null, arrays, objects, sets) becomes the *string* of its Rego text. Then
Go's ``fmt`` rules apply, including its in-band error texts (``%!d(string=x)``, ``%!s(MISSING)``,
``%!(EXTRA string=b)``, ``%!(NOVERB)``). This module reimplements the verbs for those three Go
types: ``v s q x X d b o O c U e E f F g G T`` with the flags ``+ - # 0 space``, width,
precision, ``*`` and explicit argument indexes ``[n]``. Hexadecimal and binary float formats
(``%x`` of a float, ``%b``) raise ``ValueError``: the run is denied rather than formatted
differently from OPA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from hardened_launcher.policy.regovalue import go_quote_body as _quote_body
from hardened_launcher.policy.regovalue import rego_text

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

GoValue = int | float | str


@dataclass
class _Spec:
    plus: bool = False
    minus: bool = False
    sharp: bool = False
    zero: bool = False
    space: bool = False
    width: int | None = None
    prec: int | None = None


def go_arguments(values: list[object]) -> list[GoValue]:
    converted: list[GoValue] = []
    for value in values:
        if isinstance(value, bool) or value is None:
            converted.append(rego_text(value))
        elif isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise ValueError("sprintf: integers beyond 64 bits are not supported")
            converted.append(value)
        elif isinstance(value, float):
            converted.append(int(value) if value.is_integer() and abs(value) < 2**63 else value)
        elif isinstance(value, str):
            converted.append(value)
        else:
            converted.append(rego_text(value))
    return converted


def _type_name(value: GoValue) -> str:
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "string"


def _pad(text: str, spec: _Spec, *, zero_ok: bool = True) -> str:
    if spec.width is None or len(text) >= spec.width:
        return text
    fill = spec.width - len(text)
    if spec.minus:
        return text + " " * fill
    if spec.zero and zero_ok:
        return "0" * fill + text
    return " " * fill + text


def _sign(negative: bool, spec: _Spec) -> str:
    if negative:
        return "-"
    if spec.plus:
        return "+"
    if spec.space:
        return " "
    return ""


def _format_int(value: int, verb: str, spec: _Spec) -> str:
    if verb == "c":
        return _pad(_rune(value), spec)
    if verb == "q":
        char = _rune(value)
        return _pad(_quote_char(char, ascii_only=spec.plus), spec)
    if verb == "U":
        text = f"U+{value & (2**64 - 1):04X}"  # Go formats the rune as unsigned
        if spec.sharp and 0 <= value <= 0x10FFFF and chr(value).isprintable():
            text += f" '{chr(value)}'"
        return _pad(text, spec)
    negative = value < 0
    magnitude = -value if negative else value
    base = {"d": 10, "v": 10, "b": 2, "o": 8, "O": 8, "x": 16, "X": 16}[verb]
    digits = _digits(magnitude, base, upper=verb == "X")
    prec = spec.prec
    if prec is not None:
        if prec == 0 and magnitude == 0:
            digits = ""
        digits = digits.rjust(prec, "0")
    elif spec.zero and spec.width is not None and not spec.minus:
        room = spec.width - (1 if negative or spec.plus or spec.space else 0)
        if spec.sharp and verb in "xXb":
            room -= 2
        digits = digits.rjust(room, "0")
    prefix = ""
    if verb == "O":
        prefix = "0o"
    elif spec.sharp:
        if verb == "b":
            prefix = "0b"
        elif verb == "o" and not digits.startswith("0"):
            prefix = "0"
        elif verb == "x":
            prefix = "0x"
        elif verb == "X":
            prefix = "0X"
    return _pad(_sign(negative, spec) + prefix + digits, spec, zero_ok=False)


def _rune(value: int) -> str:
    """Go's rune conversion: surrogates and values beyond Unicode become U+FFFD."""
    if 0 <= value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF:
        return chr(value)
    return "\ufffd"


def _digits(value: int, base: int, *, upper: bool) -> str:
    if base == 10:
        return str(value)
    text = format(value, {2: "b", 8: "o", 16: "x"}[base])
    return text.upper() if upper else text


def _shortest(value: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits and the decimal point position (Go's digs.d/dp)."""
    exact = Decimal(repr(abs(value))).as_tuple()
    exponent = int(exact.exponent)
    digits = "".join(map(str, exact.digits)).lstrip("0") or "0"
    point = len("".join(map(str, exact.digits)).lstrip("0")) + exponent
    stripped = digits.rstrip("0") or "0"
    return stripped, point if digits != "0" else 1


def _exp_form(digits: str, point: int, prec: int, *, upper: bool) -> str:
    mantissa = digits[0] + ("." + digits[1:].ljust(prec, "0")[:prec] if prec > 0 else "")
    exp = point - 1 if digits != "0" else 0
    mark = "E" if upper else "e"
    return f"{mantissa}{mark}{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _format_float(value: float, verb: str, spec: _Spec) -> str:
    if math.isinf(value) or math.isnan(value):
        raise ValueError("sprintf: infinite or NaN numbers are not supported")
    negative = math.copysign(1.0, value) < 0
    if spec.sharp and verb != "v":
        # Go's alternate float forms (kept trailing zeros, a bare point, padded hex digits)
        # are not reproduced: an error denies the run rather than print something else
        raise ValueError(f"sprintf: %#{verb} is not supported for floats")
    if verb in "xXb":
        if spec.prec is not None:
            raise ValueError(f"sprintf: %{verb} with a precision is not supported for floats")
        body = _float_binary(abs(value)) if verb == "b" else _float_hex(abs(value), verb == "X")
        return _pad(_sign(negative, spec) + body, spec, zero_ok=False)
    magnitude = abs(value)
    upper = verb in "EFG"
    lower = verb.lower()
    if lower == "v":
        lower = "g"
    if lower == "e":
        body = format(magnitude, f".{6 if spec.prec is None else spec.prec}e")
        body = body.upper() if upper else body
    elif lower == "f":
        body = format(magnitude, f".{6 if spec.prec is None else spec.prec}f")
    else:
        body = _format_g(magnitude, spec.prec, upper=upper)
    sign = _sign(negative, spec)
    if spec.zero and spec.width is not None and not spec.minus:
        body = body.rjust(spec.width - len(sign), "0")
    return _pad(sign + body, spec, zero_ok=False)


def _float_hex(magnitude: float, upper: bool) -> str:
    """Go's %x of a float64: shortest hex mantissa, exponent with at least two digits."""
    if magnitude == 0:
        text = "0x0p+00"
    else:
        mantissa, exponent = magnitude.hex().removeprefix("0x").split("p")
        mantissa = mantissa.rstrip("0").rstrip(".")
        exp = int(exponent)
        text = f"0x{mantissa}p{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return text.upper() if upper else text


def _float_binary(magnitude: float) -> str:
    """Go's %b of a float64: integer mantissa, ``p``, binary exponent."""
    if magnitude == 0:
        return "0p-1074"
    fraction, exponent = math.frexp(magnitude)
    mantissa = int(fraction * 2**53)
    exp = exponent - 53
    if exp < -1074:
        mantissa >>= -1074 - exp
        exp = -1074
    return f"{mantissa}p{'-' if exp < 0 else '+'}{abs(exp)}"


def _format_g(magnitude: float, prec: int | None, *, upper: bool) -> str:
    if prec is None:
        digits, point = _shortest(magnitude)
        eprec = 6
        exp = point - 1 if digits != "0" else 0
        if exp < -4 or exp >= eprec:
            return _exp_form(digits, point, len(digits) - 1, upper=upper)
        return _fixed(digits, point, max(len(digits) - point, 0))
    prec = max(prec, 1)
    rounded = Decimal(format(magnitude, f".{prec - 1}e")).as_tuple()
    exponent = int(rounded.exponent)
    raw = "".join(map(str, rounded.digits))
    digits = raw.rstrip("0") or "0"
    point = len(raw) + exponent if magnitude != 0 else 1
    eprec = prec
    if eprec > len(digits) and len(digits) >= point:
        eprec = len(digits)
    exp = point - 1
    if exp < -4 or exp >= eprec:
        return _exp_form(digits, point, len(digits) - 1, upper=upper)
    return _fixed(digits, point, max(len(digits) - point, 0))


def _fixed(digits: str, point: int, decimals: int) -> str:
    if point <= 0:
        whole = "0"
        frac = "0" * (-point) + digits
    elif point >= len(digits):
        whole = digits + "0" * (point - len(digits))
        frac = ""
    else:
        whole, frac = digits[:point], digits[point:]
    frac = frac.ljust(decimals, "0")[:decimals]
    return whole + ("." + frac if decimals > 0 else "")


def _quote_char(char: str, *, ascii_only: bool = False) -> str:
    return "'" + _quote_body(char, "'", ascii_only=ascii_only) + "'"


def _format_string(value: str, verb: str, spec: _Spec) -> str:
    if verb in "sv":
        text = value if spec.prec is None else value[: spec.prec]
        return _pad(text, spec)
    if verb == "q":
        text = value if spec.prec is None else value[: spec.prec]
        if spec.sharp and "`" not in text and all(c.isprintable() or c == "\t" for c in text):
            return _pad("`" + text + "`", spec)
        return _pad('"' + _quote_body(text, '"', ascii_only=spec.plus) + '"', spec)
    data = value.encode("utf-8")
    if spec.prec is not None:
        data = data[: spec.prec]
    pieces = [format(b, "02X" if verb == "X" else "02x") for b in data]
    prefix = ("0X" if verb == "X" else "0x") if spec.sharp else ""
    if spec.space:
        text = " ".join(prefix + p for p in pieces)
    else:
        text = prefix + "".join(pieces) if pieces else ""
    return _pad(text, spec)


_VERBS = {
    "int64": set("vdboOxXcqU"),
    "float64": set("veEfFgGxXb"),
    "string": set("vsqxX"),
}


def _value_text(value: GoValue) -> str:
    if isinstance(value, float):
        text = _format_g(abs(value), None, upper=False)
        return text if value >= 0 else "-" + text
    return str(value)


def _format_one(value: GoValue, verb: str, spec: _Spec) -> str:
    kind = _type_name(value)
    if verb == "v" and (spec.plus or spec.sharp):
        # Go: %+v and %#v are struct/Go-syntax forms; for these types only %#v of a string
        # differs (quoted), and neither adds a sign.
        quoted = spec.sharp and isinstance(value, str)
        spec = _Spec(
            minus=spec.minus, zero=spec.zero, space=spec.space, width=spec.width, prec=spec.prec
        )
        if quoted:
            return _format_string(value, "q", spec) if isinstance(value, str) else ""
    if verb == "T":
        return _format_string(kind, "s", spec)
    if verb not in _VERBS[kind]:
        if isinstance(value, int):
            shown = _format_int(value, "d", spec)
        elif isinstance(value, float):
            shown = _format_float(value, "g", spec)
        else:
            shown = _format_string(value, "s", spec)
        return f"%!{verb}({kind}={shown})"
    if isinstance(value, int):
        return _format_int(value, verb, spec)
    if isinstance(value, float):
        return _format_float(value, verb, spec)
    return _format_string(value, verb, spec)


#: Go's ``tooLarge``: a width, precision or index past this is refused (``*`` arguments too).
_TOO_LARGE = 1_000_000


def _parsenum(fmt: str, start: int, end: int) -> tuple[int, bool, int]:
    """Go's ``parsenum``: ASCII digits at ``start`` → (number, present, position after them).
    A number past :data:`_TOO_LARGE` consumes the rest of the format: (0, False, end)."""
    if start >= end:
        return 0, False, end
    num = 0
    present = False
    i = start
    while i < end and "0" <= fmt[i] <= "9":
        if num > _TOO_LARGE:
            return 0, False, end  # "crazy long number": Go gives up on the verb
        num = num * 10 + ord(fmt[i]) - 48
        present = True
        i += 1
    return num, present, i


def _parse_arg_number(fmt: str, position: int) -> tuple[int, int, bool]:
    """Go's ``parseArgNumber`` of ``fmt[position:]`` (which starts with ``[``): (index,
    characters taken, well formed). Without a closing bracket only the ``[`` is taken."""
    if len(fmt) - position < 3:
        return 0, 1, False
    close = fmt.find("]", position + 1)
    if close < 0:
        return 0, 1, False
    number, ok, after = _parsenum(fmt, position + 1, close)
    if not ok or after != close:
        return 0, close - position + 1, False
    return number - 1, close - position + 1, True


@dataclass
class _State:
    """What Go's ``pp`` keeps across one ``Sprintf``: argument order and this verb's index."""

    reordered: bool = False
    good_arg_num: bool = True


def _arg_number(state: _State, arg: int, fmt: str, i: int, count: int) -> tuple[int, int, bool]:
    """Go's ``argNumber``: an explicit ``[n]`` at ``i`` → (argument, position, found)."""
    if i >= len(fmt) or fmt[i] != "[":
        return arg, i, False
    state.reordered = True
    index, taken, ok = _parse_arg_number(fmt, i)
    if ok and 0 <= index < count:
        return index, i + taken, True
    state.good_arg_num = False
    return arg, i + taken, ok


def _int_from_arg(values: list[GoValue], arg: int) -> tuple[int, bool, int]:
    """Go's ``intFromArg``: the ``*`` argument → (number, is an int, next argument)."""
    if arg >= len(values):
        return 0, False, arg
    value = values[arg]
    if isinstance(value, int) and not -_TOO_LARGE <= value <= _TOO_LARGE:
        return 0, False, arg + 1  # too large
    if isinstance(value, int):
        return value, True, arg + 1
    return 0, False, arg + 1


def go_sprintf(fmt: str, values: list[GoValue]) -> str:
    """Go's ``fmt.Sprintf`` (``doPrintf``), its parse of each verb step by step."""
    out: list[str] = []
    state = _State()
    arg = 0
    i = 0
    end = len(fmt)
    count = len(values)
    while i < end:
        state.good_arg_num = True
        start = i
        while i < end and fmt[i] != "%":
            i += 1
        out.append(fmt[start:i])
        if i >= end:
            break
        i += 1
        spec = _Spec()
        while i < end and fmt[i] in "+-# 0":
            flag = fmt[i]
            spec.plus |= flag == "+"
            spec.minus |= flag == "-"
            spec.sharp |= flag == "#"
            spec.zero |= flag == "0" and not spec.minus
            spec.space |= flag == " "
            i += 1
        if spec.minus:
            spec.zero = False

        arg, i, after_index = _arg_number(state, arg, fmt, i, count)
        if i < end and fmt[i] == "*":
            i += 1
            width, present, arg = _int_from_arg(values, arg)
            if not present:
                out.append("%!(BADWIDTH)")
            if width < 0:
                spec.minus, spec.zero, width = True, False, -width
            spec.width = width if present else None
            after_index = False
        else:
            width, present, i = _parsenum(fmt, i, end)
            spec.width = width if present else None
            if after_index and present:  # "%[3]2d"
                state.good_arg_num = False

        if i + 1 < end and fmt[i] == ".":
            i += 1
            if after_index:  # "%[3].2d"
                state.good_arg_num = False
            arg, i, after_index = _arg_number(state, arg, fmt, i, count)
            if i < end and fmt[i] == "*":
                i += 1
                prec, present, arg = _int_from_arg(values, arg)
                if prec < 0:  # a negative precision makes no sense
                    prec, present = 0, False
                if not present:
                    out.append("%!(BADPREC)")
                spec.prec = prec if present else None
                after_index = False
            else:
                prec, present, i = _parsenum(fmt, i, end)
                spec.prec = prec if present else 0

        if not after_index:
            arg, i, after_index = _arg_number(state, arg, fmt, i, count)

        if i >= end:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":  # takes no argument, ignores width and precision
            out.append("%")
        elif not state.good_arg_num:
            out.append(f"%!{verb}(BADINDEX)")
        elif arg >= count:
            out.append(f"%!{verb}(MISSING)")
        else:
            out.append(_format_one(values[arg], verb, spec))
            arg += 1
    if not state.reordered and arg < count:
        extra = ", ".join(f"{_type_name(v)}={_value_text(v)}" for v in values[arg:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _simple(fmt: str, values: list[object]) -> str | None:
    """The common case fast: only ``%s`` of strings, ``%d``/``%v`` of int64s/strings, ``%%``."""
    parts = fmt.split("%")
    out = [parts[0]]
    used = 0
    k = 1
    while k < len(parts):
        piece = parts[k]
        if not piece:
            if k + 1 >= len(parts):
                return None  # a trailing %: NOVERB
            out += ("%", parts[k + 1])
            k += 2
            continue
        verb = piece[0]
        if used >= len(values):
            return None
        value = values[used]
        if type(value) is str and verb in "sv":
            out.append(value)
        elif type(value) is str and verb == "q":
            out.append('"' + _quote_body(value, '"') + '"')
        elif type(value) is int and verb in "dv" and INT64_MIN <= value <= INT64_MAX:
            out.append(str(value))
        else:
            return None
        out.append(piece[1:])
        used += 1
        k += 1
    return "".join(out) if used == len(values) else None


def sprintf(fmt: object, values: object) -> str:
    if not isinstance(fmt, str):
        raise TypeError("sprintf: operand 1 must be a string")
    if not isinstance(values, list):
        raise TypeError("sprintf: operand 2 must be an array")
    simple = _simple(fmt, values)
    if simple is not None:
        return simple
    return go_sprintf(fmt, go_arguments(values))
