"""Strict YAML (PyYAML's safe loader): no anchors or aliases (no "billion laughs"), string keys
only, no duplicate keys and bounded nesting. Imported on first use through
:func:`hardened_launcher.bounded_input.load_yaml`, so a process that reads no YAML (an idle
launcher daemon) never loads PyYAML.
"""

from __future__ import annotations

from typing import Any

import yaml

from hardened_launcher.bounded_input import DEFAULT_MAX_DEPTH

__all__ = ["StrictYamlLoader", "load_strict"]


class StrictYamlLoader(yaml.SafeLoader):
    """Safe YAML without anchors or aliases, with string keys, no duplicates and bounded depth.

    Subclasses may set ``max_depth`` and ``what`` (used in messages).
    """

    max_depth: int = DEFAULT_MAX_DEPTH
    what: str = "document"

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: ANN401 - PyYAML's API
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError(f"YAML anchors and aliases are not allowed in a {self.what}")
        event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's stubs
        if getattr(event, "anchor", None) is not None:
            raise yaml.YAMLError(f"YAML anchors and aliases are not allowed in a {self.what}")
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                mark = event.start_mark
                raise yaml.YAMLError(
                    f"the {self.what} nests deeper than {self.max_depth} levels at line "
                    f"{mark.line + 1}, column {mark.column + 1}"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:  # noqa: ANN401
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise yaml.YAMLError("mapping keys must be strings")
            if key in seen:
                raise yaml.YAMLError(f"duplicate key {key[:64]!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_strict(text: str, *, what: str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:  # noqa: ANN401
    """Parse ``text`` with :class:`StrictYamlLoader` (``max_depth``, ``what``);
    ``yaml.YAMLError`` when refused."""
    loader_class = type(
        "_BoundedLoader", (StrictYamlLoader,), {"max_depth": max_depth, "what": what}
    )
    loader = loader_class(text)
    try:
        return loader.get_single_data()
    except RecursionError:  # pragma: no cover - the depth limit stops composing first
        raise yaml.YAMLError(f"the {what} nests too deeply") from None
    finally:
        loader.dispose()
