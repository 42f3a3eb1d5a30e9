"""``pubsubpy.lock.json``: the event schemas as deployed, and the check that guards them in CI.

``lock`` writes, for every registered (model, event, version), its JSON Schema,
routing key, compatibility mode and a fingerprint, sorted and stable so the diff
reads well in review. ``check`` compares the current schemas with the lock (the
schemas themselves: the fingerprint is informational, so a pydantic upgrade that
only reorders keys is no break):

- a version in the lock must stay compatible with its locked self;
- a new version must be compatible with the previous one (the backward half is
  waived when an upcaster leads from the previous version: it converts old
  payloads instead);
- a version removed from the code breaks ``backward``/``full``: its messages may
  still be queued, dead-lettered or replayed.

Each event's mode is its class keyword ``compatibility=`` (default ``full``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, cast

from pubsubpy.schemas._base import ModelEvent
from pubsubpy.schemas._compat import Mode, Problem, compare
from pubsubpy.schemas._registry import SchemaRegistry
from pubsubpy.schemas._upcasting import can_upcast

__all__ = ["DEFAULT_LOCK", "check", "lock_document", "read_lock", "write_lock"]

DEFAULT_LOCK = "pubsubpy.lock.json"
_FORMAT = 1

Key = tuple[str, str, int]


def _fingerprint(schema: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]


def _entry(schema: type[ModelEvent]) -> dict[str, Any]:
    model, event = schema.event_key()
    body = schema.model_json_schema()
    return {"model": model, "event": event, "version": schema.__pubsub_version__,
            "routing_key": schema.routing_key(), "compatibility": schema.__pubsub_compatibility__,
            "fingerprint": _fingerprint(body), "schema": body}


def lock_document(registry: SchemaRegistry) -> dict[str, Any]:
    entries = sorted((_entry(s) for s in registry), key=lambda e: (e["model"], e["event"], e["version"]))
    return {"pubsubpy_lock": _FORMAT, "events": entries}


def write_lock(registry: SchemaRegistry, path: str | Path = DEFAULT_LOCK) -> int:
    """Write the lock; returns how many (model, event, version) it holds."""
    document = lock_document(registry)
    Path(path).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return len(document["events"])


def read_lock(path: str | Path = DEFAULT_LOCK) -> dict[Key, dict[str, Any]]:
    document = json.loads(Path(path).read_text())
    if not isinstance(document, dict) or document.get("pubsubpy_lock") != _FORMAT:
        raise ValueError(f"{path} is not a pubsubpy lock file (format {_FORMAT})")
    return {(e["model"], e["event"], int(e["version"])): e for e in document["events"]}


def _label(key: Key) -> str:
    return f"{key[0]}.{key[1]} v{key[2]}"


def _problems(key: Key, what: str, problems: list[Problem], mode: str) -> list[str]:
    return [f"{_label(key)}: {what}: {problem} [{mode}]" for problem in problems]


def check(locked: dict[Key, dict[str, Any]], registry: SchemaRegistry) -> list[str]:
    """One line per breaking change (empty: compatible with the lock)."""
    current: dict[Key, type[ModelEvent]] = {(*s.event_key(), s.__pubsub_version__): s for s in registry}
    lines: list[str] = []
    for key, entry in sorted(locked.items()):
        schema = current.get(key)
        mode = cast(Mode, schema.__pubsub_compatibility__ if schema is not None else entry["compatibility"])
        if schema is None:
            if mode in ("backward", "full"):
                lines.append(f"{_label(key)}: removed, but its messages may still be queued, dead-lettered or "
                             f"replayed; keep the class (and its upcaster) [{mode}]")
            continue
        lines += _problems(key, "changed since the lock", compare(entry["schema"], schema.model_json_schema(), mode),
                           mode)
    for key, schema in sorted(current.items()):
        if key in locked:
            continue
        mode = cast(Mode, schema.__pubsub_compatibility__)
        previous_key = (key[0], key[1], key[2] - 1)
        previous = current.get(previous_key)
        previous_schema = previous.model_json_schema() if previous is not None else \
            locked.get(previous_key, {}).get("schema")
        if previous_schema is None:
            continue  # a new event, or a first version: nothing to be compatible with
        if mode in ("backward", "full") and previous is not None and can_upcast(previous, schema):
            mode_used: Mode = "forward" if mode == "full" else "none"  # the upcaster reads old payloads
        else:
            mode_used = mode
        lines += _problems(key, f"new version against v{key[2] - 1}",
                           compare(previous_schema, schema.model_json_schema(), mode_used), mode)
    return lines
