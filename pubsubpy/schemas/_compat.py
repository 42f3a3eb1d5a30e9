"""Compatibility of two versions of an event schema, compared as JSON Schemas (what pydantic emits).

The question is always "can a *reader* validate every payload a *writer*
produces?". Consumers ignore unknown fields, so a field only the writer has is
fine; a field the reader requires must be required (always sent) by the writer;
every type, enum value and constraint the writer allows must be allowed by the
reader. The modes, as in a schema registry:

- ``backward``: the new schema reads old messages (anything still queued,
  dead-lettered or replayed): reader = new, writer = old.
- ``forward``: the old schema reads new messages (producers deploy first):
  reader = old, writer = new.
- ``full`` (the default): both. ``none``: no check.

So removing a field is safe backward and breaking forward; widening a type,
loosening a constraint or adding an enum value is safe backward and breaking
forward; tightening is the reverse; adding an optional field with a default,
or changing a description, is safe in every mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["MODES", "Mode", "Problem", "compare", "reads"]

Mode = Literal["backward", "forward", "full", "none"]
MODES: tuple[Mode, ...] = ("backward", "forward", "full", "none")

_UPPER = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")
_LOWER = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")
_EXACT = ("pattern", "multipleOf", "format")
_MAX_DEPTH = 32  # nested models deeper than this are not compared further


@dataclass(frozen=True)
class Problem:
    field: str   # "amount", "address.city", "tags[]"; "" for the event itself
    why: str

    def __str__(self) -> str:
        return f"field {self.field}: {self.why}" if self.field else self.why


def compare(old: dict[str, Any], new: dict[str, Any], mode: Mode) -> list[Problem]:
    """What breaks when ``old`` becomes ``new`` under ``mode`` (empty: compatible)."""
    problems: list[Problem] = []
    if mode in ("backward", "full"):
        problems += [Problem(p.field, f"{p.why} (backward: the new schema cannot read old messages)")
                     for p in reads(new, old)]
    if mode in ("forward", "full"):
        problems += [Problem(p.field, f"{p.why} (forward: the old schema cannot read new messages)")
                     for p in reads(old, new)]
    return problems


def reads(reader: dict[str, Any], writer: dict[str, Any]) -> list[Problem]:
    """Why ``reader`` cannot validate some payload ``writer`` allows (empty: it can read them all)."""
    return list(_Compare(reader, writer).objects(reader, writer, "", 0))


class _Compare:
    def __init__(self, reader_root: dict[str, Any], writer_root: dict[str, Any]) -> None:
        self.roots = (reader_root, writer_root)

    def _resolve(self, node: dict[str, Any], side: int) -> dict[str, Any]:
        seen = 0
        while "$ref" in node and seen < _MAX_DEPTH:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            node = {**self.roots[side].get("$defs", {}).get(name, {}), **{k: v for k, v in node.items() if k != "$ref"}}
            seen += 1
        return node

    def _variants(self, node: dict[str, Any], side: int) -> tuple[list[dict[str, Any]], bool]:
        """The non-null alternatives of ``node`` and whether null is allowed."""
        node = self._resolve(node, side)
        options = node.get("anyOf") or node.get("oneOf")
        if options:
            variants: list[dict[str, Any]] = []
            nullable = False
            for option in options:
                inner, inner_null = self._variants(option, side)
                variants += inner
                nullable = nullable or inner_null
            return variants, nullable
        kind = node.get("type")
        if isinstance(kind, list):
            rest = {k: v for k, v in node.items() if k != "type"}
            return [{**rest, "type": t} for t in kind if t != "null"], "null" in kind
        if kind == "null":
            return [], True
        return [node], False

    def objects(self, reader: dict[str, Any], writer: dict[str, Any], path: str, depth: int) -> Iterator[Problem]:
        if depth > _MAX_DEPTH:
            return
        r_props: dict[str, Any] = reader.get("properties", {})
        w_props: dict[str, Any] = writer.get("properties", {})
        r_required, w_required = set(reader.get("required", [])), set(writer.get("required", []))
        for name in sorted(r_props):
            where = f"{path}.{name}" if path else name
            if name in r_required and name not in w_props:
                yield Problem(where, "required by the reader, missing from the writer (added as required, "
                                     "removed, or renamed)")
                continue
            if name in r_required and name not in w_required:
                yield Problem(where, "required by the reader, optional for the writer (a message may lack it)")
            if name in w_props:
                yield from self.values(r_props[name], w_props[name], where, depth + 1)

    def values(self, reader: dict[str, Any], writer: dict[str, Any], path: str, depth: int) -> Iterator[Problem]:
        r_variants, r_null = self._variants(reader, 0)
        w_variants, w_null = self._variants(writer, 1)
        if w_null and not r_null:
            yield Problem(path, "may be null for the writer, not for the reader")
        if not r_variants and not r_null:
            return
        if any(not variant for variant in r_variants):  # the reader accepts anything
            return
        for w in w_variants:
            attempts = [list(self.single(r, w, path, depth)) for r in r_variants]
            if any(not problems for problems in attempts):
                continue
            if len(attempts) == 1:
                yield from attempts[0]
            else:
                yield Problem(path, f"the writer's {_describe(w)} matches none of the reader's "
                                    f"{' | '.join(_describe(r) for r in r_variants)}")

    def single(self, reader: dict[str, Any], writer: dict[str, Any], path: str, depth: int) -> Iterator[Problem]:
        r_type, w_type = reader.get("type"), writer.get("type")
        if r_type is not None and r_type != w_type and not (r_type == "number" and w_type == "integer"):
            yield Problem(path, f"type {w_type or 'any'} -> {r_type} (narrowed or changed)")
            return
        r_enum = _allowed(reader)
        if r_enum is not None:
            w_enum = _allowed(writer)
            if w_enum is None:
                yield Problem(path, f"the reader allows only {sorted(map(repr, r_enum))}, the writer any value")
            elif w_enum - r_enum:
                yield Problem(path, f"enum value(s) {sorted(map(repr, w_enum - r_enum))} not accepted by the reader")
        for key in _UPPER:
            if key in reader and (key not in writer or writer[key] > reader[key]):
                yield Problem(path, f"{key} {writer.get(key, 'unbounded')} -> {reader[key]} (tightened)")
        for key in _LOWER:
            if key in reader and (key not in writer or writer[key] < reader[key]):
                yield Problem(path, f"{key} {writer.get(key, 'unbounded')} -> {reader[key]} (tightened)")
        for key in _EXACT:
            if key in reader and reader[key] != writer.get(key):
                yield Problem(path, f"{key} {writer.get(key, 'none')!r} -> {reader[key]!r} (changed)")
        if r_type == "array" and "items" in reader:
            yield from self.values(reader["items"], writer.get("items", {}), f"{path}[]", depth + 1)
        if r_type == "object" or "properties" in reader:
            yield from self.objects(reader, writer, path, depth + 1)


def _allowed(node: dict[str, Any]) -> set[Any] | None:
    if "const" in node:
        return {_hashable(node["const"])}
    if "enum" in node:
        return {_hashable(value) for value in node["enum"]}
    return None


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, (dict, list)) else value


def _describe(node: dict[str, Any]) -> str:
    if "enum" in node:
        return f"enum {node['enum']!r}"
    return str(node.get("type", "any"))
