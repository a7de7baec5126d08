"""Compile-time refusals: constructs that would mean one thing in OPA and another here.

Read from regorus's AST (``get_ast_as_json``); each refusal names ``file:line:col`` and says how
to write the same thing so that both engines agree. Fail closed: a policy that could allow a run
OPA would deny does not load.

- **Negation over a possibly undefined value.** OPA evaluates the arguments of a call, an
  operator (other than ``==``/``=`` between plain terms), a collection literal, a membership test
  or a reference index *before* the ``not``: when one of them is undefined the whole body fails.
  regorus evaluates them *inside* the ``not`` and makes it true. So ``not regex.match(p,
  input.title)`` with no title is undefined in OPA and true here. Refused when such a position
  holds a reference to ``input``, ``data`` or a rule; binding the value to a local variable first
  (``title := input.title`` then ``not regex.match(p, title)``) means the same in both.
- **Builtins that reach the network or the host** (``http.send``, ``net.lookup_ip_addr``,
  ``opa.runtime``) and builtins the engine does not have: refused by name.
- **All of ``data`` from inside a rule** (``object.get(data, …)``, ``data.<this package>[k]``):
  OPA rejects it as recursion; regorus would evaluate it.
- **Numbers the engine cannot hold as OPA does** (more digits than a double, beyond 64 bits, a
  text OPA keeps such as ``1.0`` where it shows) and **a set beside an object** where their
  order shows (OPA orders objects first).

It also returns rewritten texts (:class:`_Rewriter`): arithmetic operators, ``count``,
``time.format``, ``json.unmarshal`` and ``units.parse`` become calls that mean what OPA means,
with :data:`RUNTIME_MODULE` loaded beside the policy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from hardened_launcher.policy.errors import PolicyCompileError

REFUSED_BUILTINS: Mapping[str, str] = {
    "http.send": "it reaches the network",
    "net.lookup_ip_addr": "it reaches the network (DNS)",
    "opa.runtime": "it reads the host's environment and configuration",
    "rego.metadata.chain": "the engine has no rule metadata",
    "rego.metadata.rule": "the engine has no rule metadata",
    "uuid.parse": "the engine names the variants differently from OPA (nil UUID: NCS here, "
    "Reserved in OPA)",
    "json.match_schema": "the engine gives null where OPA gives [] for no errors",
    "json.patch": "the engine makes a failed operation undefined where OPA fails the evaluation",
    "time.parse_ns": "the engine accepts one digit where a Go layout demands two (use "
    "time.parse_rfc3339_ns)",
    "yaml.unmarshal": "the engine reads YAML 1.2 and OPA YAML 1.1 (`yes` is a string here, "
    "true in OPA)",
}
EXACT_INTEGER = 2**63 - 1  # the engine's integers are exact within 64 bits, OPA's always
MAX_UNSIGNED = 2**64 - 1  # the engine holds unsigned 64-bit integers too
_PLAIN_INTEGER = re.compile(r"0|-?[1-9][0-9]*")  # not -0: OPA keeps that text
_COMPARISONS = frozenset({"Lt", "Le", "Gt", "Ge", "Eq", "Ne"})
_CONSTANT_KEYS = ("String", "RawString", "Number", "Bool", "Null")
_REF_KINDS = ("RefDot", "RefBrack")
_EQUALITY = {("BoolExpr", "Eq"), ("AssignExpr", "Eq")}
_COMPREHENSIONS = ("ArrayCompr", "SetCompr", "ObjectCompr")
_SET_TERMS = ("Set", "SetCompr")
_OBJECT_TERMS = ("Object", "ObjectCompr")
_UNKNOWN_TERMS = ("Var", "RefDot", "RefBrack", "Call")
# Builtins whose value is always a set, and the set operators.
_SET_BUILTINS = frozenset(
    {"union", "intersection", "cast_set", "object.keys", "graph.reachable", "graph.reachable_paths"}
)
_SET_OPERATORS = frozenset({"Union", "Intersection"})


@dataclass(frozen=True)
class Finding:
    file: str
    offset: int
    message: str
    hint: str


def _node(value: object) -> tuple[str, dict[str, object]] | None:
    if isinstance(value, dict) and len(value) == 1:
        kind, inner = next(iter(value.items()))
        if isinstance(kind, str) and isinstance(inner, dict):
            return kind, inner
    return None


def _children(value: object) -> Iterator[object]:
    if isinstance(value, dict):
        yield from value.values()
    elif isinstance(value, list):
        yield from value


def _walk(value: object) -> Iterator[tuple[str, dict[str, object]]]:
    stack = [value]
    while stack:
        current = stack.pop()
        node = _node(current)
        if node is not None:
            yield node
        stack.extend(_children(current))


def _start(inner: Mapping[str, object]) -> int:
    span = inner.get("span")
    if isinstance(span, dict) and isinstance(span.get("start"), int):
        return int(span["start"])
    return 0


def dotted_name(value: object) -> str | None:
    """``a.b.c`` of a Var / RefDot chain, or None for anything else."""
    node = _node(value)
    if node is None:
        return None
    kind, inner = node
    if kind == "Var":
        name = inner.get("value")
        return name if isinstance(name, str) else None
    if kind == "RefDot":
        base = dotted_name(inner.get("refr"))
        field = inner.get("field")
        if base is not None and isinstance(field, list) and field and isinstance(field[-1], str):
            return f"{base}.{field[-1]}"
    return None


def _ref_root(value: object) -> str | None:
    node = _node(value)
    while node is not None and node[0] in _REF_KINDS:
        node = _node(node[1].get("refr"))
    if node is not None and node[0] == "Var":
        name = node[1].get("value")
        return name if isinstance(name, str) else None
    return None


class _Checker:
    def __init__(self, file: str, rule_names: frozenset[str], builtins: frozenset[str]) -> None:
        self.file = file
        self.rule_names = rule_names
        self.builtins = builtins
        self.aliases: set[str] = set()
        self.builtin_roots = frozenset(name.split(".", 1)[0] for name in builtins)
        self.package = ""  # this module's package path, e.g. "spacelift"
        self.findings: list[Finding] = []
        # Names whose value is a set: this module's set rules and functions returning sets
        # (module-wide), and the current rule's variables assigned one.
        self.set_rules: set[str] = set()
        self.set_functions: set[str] = set()
        self.set_variables: set[str] = set()

        self.insertions: list[tuple[int, str]] = []

    def add(self, inner: Mapping[str, object], message: str, hint: str) -> None:
        self.findings.append(Finding(self.file, _start(inner), message, hint))

    # -- undefined values under `not` ------------------------------------------------------

    def _maybe_undefined(self, value: object) -> bool:
        """Does this term hold a reference that can be undefined (outside comprehensions)?"""
        node = _node(value)
        if node is None:
            return any(self._maybe_undefined(child) for child in _children(value))
        kind, inner = node
        if kind in _COMPREHENSIONS:
            return False
        if kind in _REF_KINDS or kind == "Var":
            root = _ref_root(value)
            if root in ("input", "data") and kind in _REF_KINDS:
                return True
            if root is not None and (root in self.rule_names or root in self.aliases):
                return True
        return any(self._maybe_undefined(child) for child in inner.values())

    def _plain(self, value: object) -> bool:
        node = _node(value)
        if node is None:
            return False
        kind, inner = node
        if kind in ("Var", "Number", "String", "RawString", "Bool", "Null"):
            return True
        if kind == "RefDot":
            return self._plain(inner.get("refr"))
        if kind == "RefBrack":
            return self._plain(inner.get("refr")) and not self._maybe_undefined(inner.get("index"))
        return False

    def _guards(self, value: object, out: list[dict[str, object]], *, top: bool) -> bool:
        """Collect the terms OPA evaluates before a `not`; False if one cannot be guarded.

        Below the top of the negated expression, OPA evaluates every reference and every
        nested call first; a rule name used as a value is a reference too.
        """
        node = _node(value)
        if node is None:
            return all(self._guards(child, out, top=top) for child in _children(value))
        kind, inner = node
        if kind in _COMPREHENSIONS:
            return True
        if top and kind in _REF_KINDS:
            return False  # `not a[b]` with a dynamic index: refused, rare
        if kind == "Call":
            if top:
                return all(
                    self._guards(child, out, top=False) for child in _children(inner.get("params"))
                )
            if self._has_wildcard(value):
                return False
            out.append(inner)
            return True
        if kind in _REF_KINDS:
            if self._has_wildcard(value):
                return False
            out.append(inner)
            return True
        if kind == "Var":
            name = inner.get("value")
            if name in self.rule_names or name in self.aliases:
                out.append(inner)
            return True
        return all(self._guards(child, out, top=False) for child in inner.values())

    def _has_wildcard(self, value: object) -> bool:
        return any(k == "Var" and i.get("value") == "_" for k, i in _walk(value))

    def check_negation(self, inner: Mapping[str, object]) -> list[dict[str, object]]:
        """The terms to bind before this `not` so that it means what it means in OPA."""
        expr = inner.get("expr")
        node = _node(expr)
        if node is None:
            return []
        kind, body = node
        if kind in ("Var", *_REF_KINDS) and self._plain(expr):
            return []
        guards: list[dict[str, object]] = []
        if (kind, body.get("op")) in _EQUALITY:
            sides = [body.get(side) for side in ("lhs", "rhs")]
            ok = all(self._plain(side) or self._guards(side, guards, top=False) for side in sides)
        else:
            ok = self._guards(expr, guards, top=True)
        if not ok:
            self.add(
                inner,
                "`not` over an expression with a value that may be undefined: OPA makes the "
                "rule undefined when it is, this engine would make the `not` true",
                "bind the value to a local variable first (`v := input.x` then `not f(v)`), "
                "so that OPA and the launcher agree; a missing value then fails the rule",
            )
        return guards

    def only_inside(
        self,
        inner: Mapping[str, object],
        guards: list[dict[str, object]],
        names: Mapping[str, set[int]],
    ) -> bool:
        """False (refused) if a guard would bind a variable used nowhere but in this `not`.

        OPA refuses such a variable as unsafe; binding it in a guard would make the rule
        iterate instead.
        """
        inside = {id(node) for kind, node in _walk(dict(inner)) if kind == "Var"}
        for term in guards:
            for kind, node in _walk(dict(term)):
                name = node.get("value")
                if kind != "Var" or not isinstance(name, str):
                    continue
                if name in ("input", "data", "_") or name in self.rule_names:
                    continue
                if name in self.aliases or name in self.builtin_roots:
                    continue
                if not names.get(name, set()) - inside:
                    self.add(
                        inner,
                        f"`{name}` is used only under `not`: OPA refuses it as an unsafe variable",
                        f"bind `{name}` before the `not` (e.g. `some {name}, x in …`)",
                    )
                    return False
        return True

    def guard(
        self, inner: Mapping[str, object], guards: list[dict[str, object]], text: str
    ) -> None:
        """Bind each guard term (``_ = term;``) right before the `not`, in the same body."""
        raw = text.encode("utf-8")
        terms: list[str] = []
        for term in guards:
            span = term.get("span")
            if not isinstance(span, dict):
                return
            terms.append(raw[int(span["start"]) : int(span["end"])].decode("utf-8"))
        span = inner.get("span")
        if not isinstance(span, dict):
            return
        start, end = int(span["start"]), _end(inner, raw)
        bind = "".join(f"_ = {t}; " for t in dict.fromkeys(terms))
        before = raw[:start].rstrip()
        if re.search(rb"(^|[^\w.])if$", before):
            self.insertions += [(start, "{ " + bind), (end, " }")]
        else:
            self.insertions.append((start, bind))

    # -- numbers, object literals, values OPA evaluates differently -----------------------

    def check_number(self, inner: Mapping[str, object], parent: str, text: str) -> None:
        """Literals the engine cannot hold as the number (and the text) OPA holds.

        OPA keeps a number as it is written. The engine holds a double or a 64-bit integer,
        which is the same number when the literal is an integer within 64 bits or the shortest
        text of a double; its text (what ``json.marshal`` and ``sprintf`` show) is the same only
        when the literal is written that way (``1``, not ``1.0`` or ``1e3``). Operands of
        arithmetic and comparisons only need the number.
        """
        span = inner.get("span")
        if not isinstance(span, dict):
            return
        raw = text.encode("utf-8")[int(span["start"]) : int(span["end"])].decode("utf-8")
        try:
            exact = Decimal(raw)
        except InvalidOperation:
            return
        integral = exact == exact.to_integral_value()
        written_as_integer = _PLAIN_INTEGER.fullmatch(raw) is not None
        if integral and written_as_integer and not -EXACT_INTEGER - 1 <= exact <= MAX_UNSIGNED:
            self.add(
                inner,
                f"the integer {raw} is beyond 64 bits: OPA keeps it exact, this engine would "
                "round it",
                "keep integers within 64 bits",
            )
        elif integral and not written_as_integer and Decimal(float(exact)) != exact:
            self.add(
                inner,
                f"the number {raw}, written as a float beyond 2^53: OPA keeps it exact, this "
                "engine rounds it to a double",
                "write the integer without a decimal point or an exponent",
            )
        elif not integral and Decimal(repr(float(exact))) != exact:
            self.add(
                inner,
                f"the literal {raw} has more digits than a double holds: OPA keeps it exact, "
                "this engine rounds it",
                "write at most 17 significant digits (the shortest form of the number), or "
                "scale to integers",
            )
        elif parent not in {"ArithExpr", "BoolExpr"} and (
            raw.lstrip("-") != _canonical(exact)
            or "e" in raw.lower()
            or (exact == 0 and raw.startswith("-"))
        ):
            self.add(
                inner,
                f"the number {raw} is not written in its shortest form: OPA keeps the text "
                f"({raw}) for json.marshal and sprintf, this engine prints "
                f"{_canonical(exact)}",
                f"write {_canonical(exact)}"
                if "e" not in _canonical(exact)
                else "scale it (an exponent makes OPA's sprintf print the number as a string)",
            )

    def check_object(self, inner: Mapping[str, object]) -> None:
        """An object literal that can hold one key twice: OPA keeps the first value."""
        fields = inner.get("fields")
        if not isinstance(fields, list) or len(fields) < 2:
            return
        for field_ in fields:
            key = _node(field_[1]) if isinstance(field_, list) and len(field_) == 3 else None
            if key is None or key[0] not in _CONSTANT_KEYS:
                first = fields[0][0] if isinstance(fields[0], list) and fields[0] else None
                self.add(
                    {"span": first} if isinstance(first, dict) else inner,
                    "an object literal with a computed key and other keys: when two keys are "
                    "equal OPA keeps the first value, this engine the last",
                    "build the object with constant keys, or with `object.union` / a "
                    "comprehension over distinct keys",
                )
                return

    def is_set(self, value: object) -> bool:
        """Is this term a set whatever the input: a set literal or comprehension, a set
        operator or builtin, a variable of the current rule assigned one, a set rule of this
        module or a call of a function of this module that returns a set?"""
        node = _node(value)
        if node is None:
            return False
        kind, inner = node
        if kind in _SET_TERMS:
            return True
        if kind == "BinExpr":
            return inner.get("op") in _SET_OPERATORS
        if kind == "Var":
            name = inner.get("value")
            return name in self.set_variables or name in self.set_rules
        if kind == "Call":
            name = dotted_name(inner.get("fcn"))
            return name in _SET_BUILTINS or name in self.set_functions
        return False

    def learn_set_heads(self, rules: object) -> None:
        """This module's set rules (``r contains …``, ``r := {…}``) and set functions."""
        for _ in range(2):  # a rule whose value is another set rule
            for rule in rules if isinstance(rules, list) else []:
                spec = _node(rule)
                head = _node(spec[1].get("head")) if spec is not None else None
                if head is None:
                    continue
                kind, inner = head
                name = dotted_name(inner.get("refr"))
                assign = inner.get("assign")
                value = assign.get("value") if isinstance(assign, dict) else None
                if name is None:
                    continue
                partial_set = kind == "Set" and inner.get("key") is not None
                if partial_set or (kind == "Compr" and self.is_set(value)):
                    self.set_rules.add(name)
                elif kind == "Func" and self.is_set(value):
                    self.set_functions.add(name)

    def learn_set_variables(self, rule: object) -> None:
        """The variables this rule assigns a set to (``s := {…}``, ``s = a | b``)."""
        self.set_variables = set()
        assignments = [
            (inner.get("lhs"), inner.get("rhs"))
            for kind, inner in _walk(rule)
            if kind == "AssignExpr"
        ]
        for _ in range(3):  # chains: a := {1}; b := a; c := b | a
            for lhs, rhs in assignments:
                target = _node(lhs)
                if target is not None and target[0] == "Var" and self.is_set(rhs):
                    name = target[1].get("value")
                    if isinstance(name, str):
                        self.set_variables.add(name)

    def check_ordering(self, kind: str, inner: Mapping[str, object], parent: str) -> None:
        """A set next to an object (or a value that may be one) where their order shows.

        OPA orders objects before sets, the engine sets before objects: ``sort``, a set's
        iteration order and ``<`` differ when both meet. Refused where a set literal sits beside
        an object or an unknown value in one collection literal or ordering comparison; in a set
        literal, an ordering comparison and the array a ``some … in`` iterates, also where the
        set is a term that is one whatever the input (:meth:`is_set`: a variable assigned one,
        a set rule, a set builtin), so that sets reaching a set's order or ``<`` through a
        variable are caught too. (An array literal keeps its order: there only literal sets
        count, as before; ``sort`` is checked at run time.)
        """
        if kind in ("Array", "Set"):
            items = inner.get("items")
            terms = list(items) if isinstance(items, list) else []
        elif kind == "Object":
            fields = inner.get("fields")
            terms = (
                [f[2] for f in fields if isinstance(f, list) and len(f) == 3]
                if isinstance(fields, list)
                else []
            )
        elif kind == "BoolExpr" and inner.get("op") in ("Lt", "Le", "Gt", "Ge"):
            terms = [inner.get("lhs"), inner.get("rhs")]
        else:
            return
        flows = kind in ("Set", "BoolExpr") or (kind == "Array" and parent == "SomeIn")
        kinds = [
            (node[0], self.is_set(term) if flows else node[0] in _SET_TERMS)
            for term in terms
            if (node := _node(term)) is not None
        ]
        sets = sum(is_set for _, is_set in kinds)
        others = sum(
            not is_set and (k in _OBJECT_TERMS or k in _UNKNOWN_TERMS) for k, is_set in kinds
        )
        if sets and others:
            self.add(
                inner,
                "a set beside an object (or a value that may be one) where their order shows: "
                "OPA orders objects before sets, this engine sets before objects",
                "do not sort, compare or collect sets together with objects",
            )

    def check_constant_index(self, kind: str, inner: Mapping[str, object]) -> None:
        """``[1, 2][5]``, ``{"a": 1}.b``: refused by OPA's type checker, undefined here."""
        refr = _node(inner.get("refr"))
        if refr is None or refr[0] not in ("Array", "Object"):
            return
        if kind == "RefDot":
            field_ = inner.get("field")
            key: object = field_[-1] if isinstance(field_, list) and field_ else None
        else:
            index = _node(inner.get("index"))
            if index is None or index[0] not in _CONSTANT_KEYS:
                return
            key = index[1].get("value")
        if refr[0] == "Array":
            items = refr[1].get("items")
            size = len(items) if isinstance(items, list) else 0
            ok = type(key) is int and 0 <= key < size
        else:
            fields = refr[1].get("fields")
            keys = [_node(f[1]) for f in fields] if isinstance(fields, list) else []
            if any(k is None or k[0] not in _CONSTANT_KEYS for k in keys):
                return
            ok = any(k is not None and k[1].get("value") == key for k in keys)
        if not ok:
            self.add(
                inner,
                "a constant index that the literal does not have: OPA refuses it as an "
                "undefined reference, this engine makes it undefined",
                "index the literal with an existing key, or drop the expression",
            )

    def check_value_position(self, kind: str, inner: Mapping[str, object], top: bool) -> None:
        """`x in coll` and `print()` used as values, where OPA and the engine differ."""
        if top:
            return
        if kind == "Membership" and any(
            self._maybe_undefined(inner.get(part)) for part in ("collection", "value", "key")
        ):
            self.add(
                inner,
                "`x in coll` used as a value, with an operand that may be undefined: OPA "
                "makes it undefined, this engine false",
                "bind the operands first (`c := input.x` then `v := k in c`), or test "
                "membership as a condition of its own",
            )
        elif kind == "Call" and dotted_name(inner.get("fcn")) == "print":
            self.add(inner, "print() used as a value: OPA refuses it", "call print on its own")

    def check_some_then_assign(self, query: Mapping[str, object], text: str) -> None:
        """``some x; x := 1``: OPA refuses the redeclaration, the engine would assign."""
        stmts = query.get("stmts")
        declared: set[str] = set()
        raw = text.encode("utf-8")
        for stmt in stmts if isinstance(stmts, list) else []:
            literal = _node(stmt.get("literal")) if isinstance(stmt, dict) else None
            if literal is None:
                continue
            kind, inner = literal
            if kind == "SomeVars":
                spans = inner.get("vars")
                for span in spans if isinstance(spans, list) else []:
                    if isinstance(span, dict) and isinstance(span.get("start"), int):
                        start = int(span["start"])
                        end = int(span["end"]) if isinstance(span.get("end"), int) else start
                        declared.add(raw[start:end].decode("utf-8", errors="replace"))
                continue
            expr = _node(inner.get("expr")) if kind == "Expr" else None
            if expr is None or expr[0] != "AssignExpr" or expr[1].get("op") != "ColEq":
                continue
            for var_kind, var in _walk(expr[1].get("lhs")):
                if var_kind == "Var" and var.get("value") in declared:
                    self.add(
                        var,
                        f"`{var.get('value')}` is declared by `some` and then assigned with "
                        "`:=`: OPA refuses the redeclaration",
                        "drop the `some` declaration, or unify with `=`",
                    )
                    return

    # -- builtins and data ------------------------------------------------------------------

    def check_call(self, inner: Mapping[str, object]) -> None:
        name = dotted_name(inner.get("fcn"))
        if name is None:
            return
        if name in REFUSED_BUILTINS:
            self.add(
                inner,
                f"the builtin `{name}` is refused: {REFUSED_BUILTINS[name]}",
                "a run initialization policy decides from its input and data alone",
            )
            return
        root = name.split(".", 1)[0]
        if name in self.builtins or root == "data" or root in self.aliases:
            return
        if name in self.rule_names or root in self.rule_names or name == "print":
            return
        self.add(
            inner,
            f"the builtin `{name}` is not available in the launcher's engine",
            "docs/policy.md lists the builtins and the differences from OPA",
        )

    def check_legacy_heads(self, rules: object) -> None:
        """v0 ``deny[msg] if { … }`` (future keywords): a set in OPA, an object in regorus."""
        for rule in rules if isinstance(rules, list) else []:
            spec = rule.get("Spec") if isinstance(rule, dict) else None
            head = _node(spec.get("head")) if isinstance(spec, dict) else None
            if head is None or head[0] != "Compr" or head[1].get("assign") is not None:
                continue
            refr = _node(head[1].get("refr"))
            if refr is not None and refr[0] == "RefBrack":
                self.add(
                    head[1],
                    "`name[key] if` in legacy (v0) syntax: OPA makes it a set, this engine an "
                    "object",
                    "write `name contains key if` (with `import future.keywords.contains`), or "
                    "`name[key] { … }` without `if`",
                )

    def check_own_package(self, kind: str, inner: Mapping[str, object], nested: bool) -> None:
        """``data.<this package>`` or ``data.<this package>[k]`` from a rule: recursion to OPA."""
        if kind not in _REF_KINDS or nested or not self.package:
            return
        root, parts = _ref_components({kind: inner})
        if root != "data":
            return
        constant: list[str] = []
        for part in parts:
            if part is None:
                break
            constant.append(part)
        package = self.package.split(".")
        if len(constant) < len(parts) and constant == package[: len(constant)]:
            self.add(
                inner,
                f"`data.{self.package}` read with a variable key from inside the package: "
                "OPA rejects this as recursion",
                "name the rules you need (`data.pkg.rule`), or move them to another package",
            )
        elif (
            len(constant) == len(parts)
            and len(constant) < len(package) + 1
            and (constant == package[: len(constant)] and constant)
        ):
            self.add(
                inner,
                f"all of `data.{'.'.join(constant)}` is read from inside package "
                f"{self.package}: OPA rejects this as recursion",
                "name the rules you need (`data.pkg.rule`)",
            )

    def check_data(self, kind: str, inner: Mapping[str, object], parent_is_ref: bool) -> None:
        if kind == "Var" and inner.get("value") == "data" and not parent_is_ref:
            self.add(
                inner,
                "all of `data` is read from inside a rule: OPA rejects this as recursion",
                "read the document you need by its path, e.g. `data.launcher_policy.x` "
                '(with a default: `object.get(data.launcher_policy, "x", d)`)',
            )


def _canonical(exact: Decimal) -> str:
    """How the engine (and OPA, for a computed value) writes this number, without its sign."""
    exact = abs(exact)
    if exact == exact.to_integral_value():
        return str(int(exact))
    return repr(float(exact))


def _ref_components(value: object) -> tuple[str | None, list[str | None]]:
    """Root variable and path of a reference; None for a component that is not a constant."""
    parts: list[str | None] = []
    node = _node(value)
    while node is not None and node[0] in _REF_KINDS:
        kind, inner = node
        if kind == "RefDot":
            field = inner.get("field")
            parts.append(field[-1] if isinstance(field, list) and field else None)
        else:
            index = _node(inner.get("index"))
            constant = index is not None and index[0] in ("String", "RawString")
            parts.append(str(index[1].get("value")) if constant and index else None)
        node = _node(inner.get("refr"))
    root = node[1].get("value") if node is not None and node[0] == "Var" else None
    return (root if isinstance(root, str) else None), list(reversed(parts))


def _walk_parents(value: object) -> Iterator[tuple[str, dict[str, object], str]]:
    """Every node with the kind of the nearest node above it ("" at the top)."""
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        current, parent = stack.pop()
        node = _node(current)
        if node is not None:
            yield node[0], node[1], parent
            stack.extend((child, node[0]) for child in _children(node[1]))
        else:
            stack.extend((child, parent) for child in _children(current))


def _queries(value: object) -> Iterator[Mapping[str, object]]:
    """Every query (a list of statements) in a rule, comprehensions and `every` included."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if isinstance(current.get("stmts"), list):
                yield current
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def _statement_tops(rule: object) -> set[int]:
    """ids of the expressions that are a whole statement (or a whole `not`)."""
    tops: set[int] = set()
    for kind, inner in _walk(rule):
        if kind in ("Expr", "NotExpr"):
            expr = _node(inner.get("expr"))
            if expr is not None:
                tops.add(id(expr[1]))
    return tops


def _inner_refs(module: object) -> set[int]:
    """ids of reference nodes that are part of a longer reference."""
    inner: set[int] = set()
    for kind, node in _walk(module):
        if kind in _REF_KINDS:
            refr = _node(node.get("refr"))
            if refr is not None and refr[0] in _REF_KINDS:
                inner.add(id(refr[1]))
    return inner


def _ref_parents(module: object) -> set[int]:
    """ids of Var nodes that are the root of a reference (``data`` in ``data.x``)."""
    roots: set[int] = set()
    for kind, inner in _walk(module):
        if kind in _REF_KINDS:
            refr = _node(inner.get("refr"))
            if refr is not None and refr[0] == "Var":
                roots.add(id(refr[1]))
    return roots


RUNTIME_PACKAGE = "hl_runtime"
RUNTIME_FILE = "<launcher runtime>/hl_runtime.rego"
# Functions the rewritten policies call; read as Rego v1 (see :class:`_Rewriter`).
RUNTIME_MODULE = """package hl_runtime

minus(a, b) := hl.arith.minus(a, b) if is_number(a) else := a - b

length(x) := hl.strlen(x) if is_string(x) else := count(x)

time_format(x) := hl.time_trim(x, time.format(hl.time_layout(x)))

json_unmarshal(x) := json.unmarshal(hl.json_number_texts(x))

units_parse(x) := hl.units_integral(units.parse(x))

sorted(x) := sort(x) if not nested_set(x) else := sort(x) if not nested_object(x) else := hl.refuse(
	"sort: a value holding both sets and objects sorts differently in OPA (objects first)",
)

nested_set(x) if {
	walk(x, [path, value])
	count(path) > 0
	is_set(value)
}

nested_object(x) if {
	walk(x, [path, value])
	count(path) > 0
	is_object(value)
}
"""
_ARITH_CALLS = {
    "Add": "hl.arith.plus",
    "Sub": f"data.{RUNTIME_PACKAGE}.minus",
    "Mul": "hl.arith.mul",
    "Div": "hl.arith.div",
    "Mod": "hl.arith.rem",
}
_RENAMED_CALLS = {
    "count": f"data.{RUNTIME_PACKAGE}.length",
    "time.format": f"data.{RUNTIME_PACKAGE}.time_format",
    "json.unmarshal": f"data.{RUNTIME_PACKAGE}.json_unmarshal",
    "units.parse": f"data.{RUNTIME_PACKAGE}.units_parse",
    "sort": f"data.{RUNTIME_PACKAGE}.sorted",
}
_NOT_NUMBERS = ("String", "RawString", "Bool", "Null", "Array", "Object", "ArrayCompr")


class _Rewriter:
    """Arithmetic operators and a few builtins rewritten into calls that mean what OPA means.

    ``a + b`` becomes ``hl.arith.plus(a, b)`` (OPA's exact arithmetic, :mod:`arith`), ``a - b``
    ``data.hl_runtime.minus(a, b)`` (numbers there, set difference as before), ``count(x)``
    ``data.hl_runtime.length(x)`` (code points for strings) and ``time.format(x)`` a call that
    refuses layouts the engine formats differently. Spans come from the engine's AST; an
    operator's span covers its operands' parentheses, a string literal's span omits its quotes.
    """

    def __init__(self, checker: _Checker, raw: bytes, rule_names: frozenset[str]) -> None:
        self.checker = checker
        self.raw = raw
        self.rule_names = rule_names
        self.found: list[tuple[int, int, str]] = []

    def _target(self, kind: str, inner: Mapping[str, object]) -> bool:
        if kind == "ArithExpr":
            return inner.get("op") in _ARITH_CALLS
        if kind == "Call":
            name = dotted_name(inner.get("fcn"))
            root = (name or "").split(".", 1)[0]
            return name in _RENAMED_CALLS and root not in self.rule_names
        return False

    def _span(self, inner: Mapping[str, object]) -> tuple[int, int]:
        span = inner.get("span")
        if not isinstance(span, dict):
            raise TypeError("no span")
        return int(span["start"]), int(span["end"])

    def edits(self, value: object) -> list[tuple[int, int, str]]:
        """(start, end, replacement) for every rewrite in this subtree, outermost first."""
        node = _node(value)
        if node is None:
            return [edit for child in _children(value) for edit in self.edits(child)]
        kind, inner = node
        if kind == "ArithExpr" and self._target(kind, inner):
            start, end = self._span(inner)
            return [(start, end, self._render_arith(inner))]
        found: list[tuple[int, int, str]] = []
        if kind == "Call" and self._target(kind, inner):
            fcn = _node(inner.get("fcn"))
            if fcn is None:
                raise ValueError("no function")
            start, end = self._span(fcn[1])
            found.append((start, end, _RENAMED_CALLS[dotted_name(inner.get("fcn")) or ""]))
            return found + self.edits(inner.get("params"))
        return found + [edit for child in _children(inner) for edit in self.edits(child)]

    def _render_arith(self, inner: Mapping[str, object]) -> str:
        rendered: list[str] = []
        for operand in (inner.get("lhs"), inner.get("rhs")):
            node = _node(operand)
            if node is None:
                raise ValueError("no operand")
            if node[0] in _NOT_NUMBERS:
                raise _NotANumberError(node[1])
            start, end = self._span(node[1])
            if node[0] in ("String", "RawString"):
                start, end = start - 1, end + 1
            inside = [(s - start, e - start, t) for s, e, t in self.edits(operand)]
            rendered.append(apply_edits_bytes(self.raw[start:end], inside))
        return f"{_ARITH_CALLS[str(inner.get('op'))]}({rendered[0]}, {rendered[1]})"

    def rewrite(self, rule: object) -> None:
        try:
            self.found.extend(self.edits(rule))
        except _NotANumberError as exc:
            self.checker.add(
                exc.inner,
                "arithmetic on a value that is not a number: OPA's type checker refuses it",
                "arithmetic takes numbers (and `-` sets)",
            )
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            self.checker.add(
                next(iter(rule.values()), {}) if isinstance(rule, dict) else {},
                "this rule could not be prepared to mean what it means in OPA",
                "split its expressions into simpler statements, and report it",
            )


class _NotANumberError(Exception):
    def __init__(self, inner: Mapping[str, object]) -> None:
        super().__init__("not a number")
        self.inner = inner


def apply_edits_bytes(raw: bytes, edits: list[tuple[int, int, str]]) -> str:
    """Apply (start, end, replacement) edits given in byte offsets; insertions have start == end
    (an insertion at a replaced range's end goes after the replacement)."""
    out: list[bytes] = []
    at = 0
    for start, end, piece in sorted(edits, key=lambda e: (e[0], e[1])):
        if start < at:
            raise ValueError("overlapping edits")
        out.append(raw[at:start])
        out.append(piece.encode("utf-8"))
        at = end
    out.append(raw[at:])
    return b"".join(out).decode("utf-8")


def check_modules(
    modules: list[dict[str, Any]],
    *,
    rule_names: frozenset[str],
    builtins: frozenset[str],
    texts: Mapping[str, str],
    legacy_files: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Raise :class:`PolicyCompileError` for the first refused construct, with file:line:col.

    Returns the files that need negation guards or rewritten operators (:class:`_Rewriter`),
    rewritten (same lines; columns after an edit shift), to be loaded instead of the originals
    together with :data:`RUNTIME_MODULE`.
    """
    findings: list[Finding] = []
    rewritten: dict[str, str] = {}
    for module in modules:
        source = module.get("source")
        file = str(source.get("file", "?")) if isinstance(source, dict) else "?"
        ast = module.get("ast", {})
        checker = _Checker(file, rule_names, builtins)
        imports = ast.get("imports", []) if isinstance(ast, dict) else []
        for entry in imports if isinstance(imports, list) else []:
            alias = entry.get("as") if isinstance(entry, dict) else None
            if isinstance(alias, dict) and isinstance(alias.get("start"), int):
                raw = texts.get(file, "").encode("utf-8")
                checker.aliases.add(raw[int(alias["start"]) : int(alias.get("end", 0))].decode())
            name = dotted_name(entry.get("refr")) if isinstance(entry, dict) else None
            if name:
                checker.aliases.add(name.rsplit(".", 1)[-1])
        if file in legacy_files:
            checker.check_legacy_heads(ast.get("rules") if isinstance(ast, dict) else None)
        package_ref = ast.get("package", {}).get("refr") if isinstance(ast, dict) else None
        checker.package = dotted_name(package_ref) or ""
        if checker.package.split(".", 1)[0] == RUNTIME_PACKAGE and isinstance(ast, dict):
            checker.add(
                ast.get("package", {}),
                f"package {RUNTIME_PACKAGE} is the launcher's own",
                "name the package something else",
            )
        nested_refs = _inner_refs(ast.get("rules") if isinstance(ast, dict) else None)
        roots = _ref_parents(ast.get("rules") if isinstance(ast, dict) else None)
        rules = ast.get("rules") if isinstance(ast, dict) else None
        text = texts.get(file, "")
        rewriter = _Rewriter(checker, text.encode("utf-8"), rule_names)
        for query in _queries(rules):
            checker.check_some_then_assign(query, text)
        checker.learn_set_heads(rules)
        for rule in rules if isinstance(rules, list) else []:
            checker.learn_set_variables(rule)
            tops = _statement_tops(rule)
            for kind, inner, parent in _walk_parents(rule):
                if kind == "Number":
                    checker.check_number(inner, parent, text)
                elif kind == "Object":
                    checker.check_object(inner)
                if kind in ("Array", "Set", "Object", "BoolExpr"):
                    checker.check_ordering(kind, inner, parent)
                elif kind in ("Membership", "Call"):
                    checker.check_value_position(kind, inner, id(inner) in tops)
                elif kind in _REF_KINDS:
                    checker.check_constant_index(kind, inner)
            names: dict[str, set[int]] = {}
            for kind, inner in _walk(rule):
                if kind == "Var" and isinstance(inner.get("value"), str):
                    names.setdefault(str(inner["value"]), set()).add(id(inner))
            for kind, inner in _walk(rule):
                if kind == "NotExpr":
                    guards = checker.check_negation(inner)
                    if guards and checker.only_inside(inner, guards, names):
                        checker.guard(inner, guards, texts.get(file, ""))
                elif kind == "Call":
                    checker.check_call(inner)
                checker.check_data(kind, inner, id(inner) in roots)
                checker.check_own_package(kind, inner, id(inner) in nested_refs)
            rewriter.rewrite(rule)
        findings.extend(checker.findings)
        edits = [(offset, offset, piece) for offset, piece in checker.insertions]
        if edits or rewriter.found:
            rewritten[file] = apply_edits_bytes(text.encode("utf-8"), edits + rewriter.found)
    if findings:
        first = min(findings, key=lambda f: (f.file, f.offset))
        where = _location(texts.get(first.file, ""), first.offset)
        raise PolicyCompileError(
            f"{first.file}:{where}: {first.message}",
            hint=first.hint,
            reason="policy_compile_error",
        )
    return rewritten


def _end(inner: Mapping[str, object], raw: bytes) -> int:
    """The end of an expression: its last term's, past a closing quote (string spans omit it)."""
    end = 0
    quoted = False
    for kind, node in _walk(dict(inner)):
        span = node.get("span")
        if isinstance(span, dict) and isinstance(span.get("end"), int):
            node_end = int(span["end"])
            if node_end > end or (node_end == end and kind in ("String", "RawString")):
                end = node_end
                quoted = kind in ("String", "RawString")
    if quoted and end < len(raw) and raw[end : end + 1] in (b'"', b"`"):
        end += 1
    return end


def _location(text: str, offset: int) -> str:
    data = text.encode("utf-8")[:offset]
    line = data.count(b"\n") + 1
    col = len(data[data.rfind(b"\n") + 1 :].decode("utf-8", errors="replace")) + 1
    return f"{line}:{col}"
