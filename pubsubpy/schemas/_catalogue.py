"""``pubsubpy schema docs``: a static HTML event catalogue, one page, no server, no CDN, no script.

Built from AsyncAPI documents (``_asyncapi.py``): this service's, plus any other
services' exported documents, so the page says who publishes and who
subscribes each event. Per event: its routing key, versions, fields (type,
required, constraints, description) and an example payload.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["catalogue_html"]

_CONSTRAINTS = ("minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern",
                "format", "minItems", "maxItems")


@dataclass
class _Event:
    address: str
    versions: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)  # title -> (payload, doc)
    publishers: set[str] = field(default_factory=set)
    subscribers: set[str] = field(default_factory=set)


def _resolve(node: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    for _ in range(32):
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node
        target: Any = doc
        for part in ref.lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        node = target if isinstance(target, dict) else {}
    return node


def _type(node: dict[str, Any], doc: dict[str, Any]) -> str:
    ref = node.get("$ref")
    name = ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None
    node = _resolve(node, doc)
    if "enum" in node:
        return (f"{name}: " if name else "") + " | ".join(json.dumps(v) for v in node["enum"])
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        return " | ".join(_type(option, doc) for option in options)
    kind = node.get("type", "any")
    if kind == "array":
        return f"list[{_type(node.get('items', {}), doc)}]"
    if kind == "object" and name:
        return name
    return str(kind) + (f" ({node['format']})" if "format" in node else "")


def _example(node: dict[str, Any], doc: dict[str, Any], depth: int = 0) -> Any:
    node = _resolve(node, doc)
    if "default" in node:
        return node["default"]
    if "enum" in node:
        return node["enum"][0]
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        return _example(next((o for o in options if o.get("type") != "null"), options[0]), doc, depth)
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        if depth > 8:
            return {}
        return {name: _example(sub, doc, depth + 1) for name, sub in node.get("properties", {}).items()}
    if kind == "array":
        return [_example(node.get("items", {}), doc, depth + 1)]
    if kind == "integer":
        return int(node.get("minimum", 1))
    if kind == "number":
        return float(node.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if node.get("format") == "date-time":
        return "2026-11-29T12:00:00Z"
    return "text"


def _collect(documents: Iterable[dict[str, Any]]) -> dict[str, _Event]:
    events: dict[str, _Event] = {}
    for doc in documents:
        service = str(doc.get("info", {}).get("x-pubsubpy-service") or doc.get("info", {}).get("title", "?"))
        channels: dict[str, Any] = doc.get("channels", {})
        for channel in channels.values():
            event = events.setdefault(channel["address"], _Event(channel["address"]))
            for message_ref in channel.get("messages", {}).values():
                message = _resolve(message_ref, doc)
                event.versions.setdefault(message.get("title", message.get("name", "?")),
                                          (message.get("payload", {}), doc))
        for operation in doc.get("operations", {}).values():
            address = _resolve(operation.get("channel", {}), doc).get("address")
            if address in events:
                (events[address].publishers if operation.get("action") == "send"
                 else events[address].subscribers).add(service)
    return events


def _rows(schema: dict[str, Any], doc: dict[str, Any], prefix: str, depth: int) -> list[str]:
    required = set(schema.get("required", []))
    rows = []
    for name, node in schema.get("properties", {}).items():
        resolved = _resolve(node, doc)
        limits = ", ".join(f"{key} {resolved[key]}" for key in _CONSTRAINTS if key in resolved)
        rows.append(f"<tr><td><code>{html.escape(prefix + name)}</code></td><td>{html.escape(_type(node, doc))}</td>"
                    f"<td>{'yes' if name in required else 'no'}</td><td>{html.escape(limits)}</td>"
                    f"<td>{html.escape(str(resolved.get('description', node.get('description', ''))))}</td></tr>")
        if "properties" in resolved and depth < 8:  # a nested model: its fields, dotted
            rows += _rows(resolved, doc, f"{prefix}{name}.", depth + 1)
    return rows


def _fields(payload: dict[str, Any], doc: dict[str, Any]) -> str:
    rows = _rows(_resolve(payload, doc), doc, "", 0)
    return ("<table><thead><tr><th>field</th><th>type</th><th>required</th><th>constraints</th>"
            f"<th>description</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #1d2330; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.5rem; border-bottom: 1px solid #ccd; }
h3 { font-size: 1rem; margin-bottom: .3rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e4e6ee; vertical-align: top; }
pre { background: #f4f5f9; padding: .6rem; overflow-x: auto; font-size: .85rem; }
.who { font-size: .9rem; color: #444; } nav a { margin-right: .8rem; }
"""


def catalogue_html(documents: Iterable[dict[str, Any]], title: str = "Event catalogue") -> str:
    events = _collect(list(documents))
    nav = " ".join(f'<a href="#{html.escape(a)}">{html.escape(a)}</a>' for a in sorted(events))
    sections = []
    for address in sorted(events):
        event = events[address]
        who = (f"published by {html.escape(', '.join(sorted(event.publishers)) or 'no known service')}; "
               f"subscribed by {html.escape(', '.join(sorted(event.subscribers)) or 'no known service')}")
        versions = []
        for name, (payload, doc) in sorted(event.versions.items()):
            example = json.dumps(_example(payload, doc), indent=2, default=str)
            versions.append(f"<h3>{html.escape(name)}</h3>{_fields(payload, doc)}"
                            f"<p>Example payload:</p><pre>{html.escape(example)}</pre>")
        sections.append(f'<section id="{html.escape(address)}"><h2>{html.escape(address)}</h2>'
                        f'<p class="who">{who}</p>{"".join(versions)}</section>')
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>"
            f"{''.join(sections)}</body></html>\n")
