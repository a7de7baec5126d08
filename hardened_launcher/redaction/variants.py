"""Pure functions: one secret value -> the set of byte strings that must never appear in output.

Nothing here does I/O or keeps state. :func:`variants` is what the redactor masks; the rules that
refuse a value (too short, a common word, too little variety) live in :func:`refusal`, which names
a rule and never repeats the value.

Forms masked for a value ``v`` (each "base form" is encoded by every encoder below):

Base forms
    ``v`` as given; ``v`` with surrounding whitespace stripped; for multi-line values the whole
    value with LF line ends and with CRLF line ends (with and without the trailing newline), and
    each line on its own when it is at least ``MIN_LINE_BYTES`` long and passes
    :func:`refusal` (PEM armour lines such as
    ``-----BEGIN PRIVATE KEY-----`` are public and skipped).

Encoders
    * raw bytes;
    * base64, standard and URL-safe alphabets, of ``v`` *as part of longer encoded text*, at all
      three byte alignments (see :func:`base64_cores`), plus the complete stand-alone encodings
      with and without ``=`` padding;
    * contiguous hex, lower and upper case;
    * percent-encoding with three "safe" sets (none, ``/`` as Python's ``quote`` keeps it, and
      ``!'()*`` as JavaScript's ``encodeURIComponent`` keeps them), space as ``%20`` or ``+``,
      upper- or lower-case hex (each form uses one case throughout);
    * JSON string escaping (``ensure_ascii`` on and off, and with ``/`` escaped as ``\\/``);
    * single-quoted shell escaping (``'`` written as ``'\\''`` or as ``'"'"'``);
    * XML/HTML escaping (``&<>`` only, and with quotes as ``&quot;``/``&#x27;``/``&#39;``/
      ``&apos;``).

Base64 and hex broken over lines (LF or CRLF) are matched by the stream (see
:func:`hardened_launcher.redaction.stream.find_occurrences`), not listed here.

Not covered (documented in docs/redaction.md): encodings nested in each other (base64 of JSON),
mixed-case hex in one percent-encoded form, compression, and
encodings that split the value with other text (a value printed one character per line).

The base64 rule. Base64 maps each 3-byte group to 4 characters of 6 bits. When ``v`` (``n``
bytes) follows ``k`` bytes of other text, its bits start at bit ``8a`` of a group where
``a = k mod 3``. Output character ``j`` of that group sequence covers bits ``[6j, 6j + 6)``; it is
fixed by ``v`` alone exactly when those six bits lie inside ``v``'s bits ``[8a, 8a + 8n)``, i.e.
for ``ceil(8a / 6) <= j < floor((8a + 8n) / 6)``. So for alignment 0 the first ``floor(4n/3)``
characters are fixed; for alignment 1 the first two characters (which mix in the previous byte)
are not and the core starts at character 2; for alignment 2 it starts at character 3. The same
character positions hold for the URL-safe alphabet (it only renames ``+`` and ``/``). Where ``v``
ends the whole text, the trailing partial group is padded with zero bits, so the stand-alone
tail (with and without ``=``) is added too; it extends the core, and the longest form wins.
"""

from __future__ import annotations

import base64
import json
import math

#: Values (and lines of multi-line values) shorter than this many bytes are not masked; the
#: redactor records a warning naming the variable instead. See docs/redaction.md for why 6.
MIN_VALUE_BYTES = 6

#: A line of a multi-line value is masked on its own only from this many bytes: short lines of
#: JSON or YAML documents (``"a": 1``, ``}``) are generic and would wreck unrelated log lines.
#: PEM body lines are 64 bytes. The whole value is always masked.
MIN_LINE_BYTES = 12

#: A value made of fewer distinct bytes than this (``aaaaaaa``, ``--------``, ``00000000``) would
#: eat runs of filler characters in every log; it is refused with a warning.
MIN_DISTINCT_BYTES = 3

#: Words that are common in logs and in configuration. A value equal to one of these
#: (case-insensitively) is refused with a warning: masking it would wreck every log line that
#: uses the word, and a secret that is one of these words is not secret anyway.
COMMON_WORDS: frozenset[bytes] = frozenset(
    w.encode()
    for w in (  # noqa: SIM905  # one readable word list, not 90 quoted items
        "true false null none nil undefined enabled disabled default defaults "
        "password passwd secret secrets token tokens private public "
        "admin administrator root user username guest test testing example sample "
        "localhost 127.0.0.1 0.0.0.0 ::1 http https "
        "production staging development develop master main release latest stable "
        "terraform tofu pulumi ansible kubernetes spacelift docker python "
        "string number object boolean integer unknown changeme letmein qwerty "
        "123456 1234567 12345678 123456789 1234567890 abcdef abcdefg "
        "running started finished success failure failed error warning debug"
    ).split()
)

_PEM_ARMOUR_PREFIXES = (b"-----BEGIN ", b"-----END ")


def refusal(value: bytes) -> str | None:
    """Why ``value`` is not masked (a rule name, never the value), or ``None`` to mask it."""
    core = value.strip()
    if len(core) < MIN_VALUE_BYTES:
        return f"shorter than {MIN_VALUE_BYTES} bytes"
    if len(set(core)) < MIN_DISTINCT_BYTES:
        return f"fewer than {MIN_DISTINCT_BYTES} distinct bytes"
    if core.lower() in COMMON_WORDS:
        return "a common word"
    return None


def base64_cores(value: bytes) -> set[bytes]:
    """Base64 text fixed by ``value`` alone at each alignment, in both alphabets, both tails."""
    n = len(value)
    out: set[bytes] = set()
    for a in range(3):
        encoded = base64.b64encode(b"\0" * a + value)
        first = math.ceil(8 * a / 6)
        fixed_end = (8 * a + 8 * n) // 6
        tails = (encoded[first:fixed_end], encoded[first:], encoded[first:].rstrip(b"="))
        for form in tails:
            if form:
                out.add(form)
                out.add(form.translate(_URLSAFE))
    return out


_URLSAFE = bytes.maketrans(b"+/", b"-_")


_ALWAYS_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
_PERCENT_SAFE_SETS = (b"", b"/", b"!'()*")


def _percent_table(safe: bytes, *, plus: bool, upper: bool) -> tuple[bytes, ...]:
    # Byte -> its percent-encoded form, as urllib's quote (plus=False) or quote_plus (True).
    escape = b"%%%02X" if upper else b"%%%02x"
    return tuple(
        bytes((b,))
        if b in _ALWAYS_SAFE or b in safe
        else b"+"
        if plus and b == 0x20
        else escape % b
        for b in range(256)
    )


# One table per form, built once: a table lookup per byte is ~10x faster than urllib's quote,
# and this runs for every value when a redactor is built.
_PERCENT_TABLES = tuple(
    _percent_table(safe, plus=plus, upper=upper)
    for safe in _PERCENT_SAFE_SETS
    for plus in (False, True)
    for upper in (True, False)
)


def _percent_forms(value: bytes) -> set[bytes]:
    """``quote``/``quote_plus`` of ``value`` with each safe set, in upper- and lower-case hex."""
    return {b"".join([table[b] for b in value]) for table in _PERCENT_TABLES}


def _json_forms(value: bytes) -> set[bytes]:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return set()
    out: set[bytes] = set()
    for ascii_only in (True, False):
        body = json.dumps(text, ensure_ascii=ascii_only)[1:-1].encode("utf-8")
        out.add(body)
        out.add(body.replace(b"/", b"\\/"))
    return out


def _shell_forms(value: bytes) -> set[bytes]:
    return {value.replace(b"'", b"'\\''"), value.replace(b"'", b"'\"'\"'")}


def _xml_forms(value: bytes) -> set[bytes]:
    base = value.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;")
    out = {base}
    for dq in (b"&quot;", b"&#34;"):
        for sq in (b"&#x27;", b"&#39;", b"&apos;"):
            out.add(base.replace(b'"', dq).replace(b"'", sq))
    return out


def hex_forms(value: bytes) -> set[bytes]:
    """Contiguous hex of ``value``, lower and upper case (``xxd -p``, ``hexdump``, ``.hex()``)."""
    lower = value.hex().encode("ascii")
    return {lower, lower.upper()}


def encodings(form: bytes) -> set[bytes]:
    """Every single-layer encoding of ``form`` that the redactor masks (raw included)."""
    out = {form}
    out |= base64_cores(form)
    out |= hex_forms(form)
    out |= _percent_forms(form)
    out |= _json_forms(form)
    out |= _shell_forms(form)
    out |= _xml_forms(form)
    return out


def base_forms(value: bytes) -> set[bytes]:
    """The value as given, stripped, and for multi-line values LF/CRLF wholes and single lines."""
    forms = {value}
    stripped = value.strip()
    if stripped:
        forms.add(stripped)
    if b"\n" in value or b"\r" in value:
        lf = value.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        for whole in (lf, lf.strip(b"\n"), lf.rstrip(b"\n")):
            forms.add(whole)
            forms.add(whole.replace(b"\n", b"\r\n"))
        for raw_line in lf.split(b"\n"):
            line = raw_line.strip()
            if (
                len(line) < MIN_LINE_BYTES
                or line.startswith(_PEM_ARMOUR_PREFIXES)
                or refusal(line) is not None
            ):
                continue
            forms.add(line)
    forms.discard(b"")
    return forms


def variants(value: bytes) -> set[bytes]:
    """All byte patterns to mask for ``value`` (empty if :func:`refusal` refuses it).

    Encoded forms of a masked value are kept only when they are at least ``MIN_VALUE_BYTES``
    long, which every form of an accepted value is except for degenerate cases.
    """
    if refusal(value) is not None:
        return set()
    out: set[bytes] = set()
    for form in base_forms(value):
        out |= encodings(form)
    return {p for p in out if len(p) >= MIN_VALUE_BYTES}
