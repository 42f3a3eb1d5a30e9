"""Dead letters as text: a table for people, JSON for scripts (shared by the CLI and Django commands)."""

from __future__ import annotations

from typing import Any

from pubsubpy.deadletters import DeadLetter

__all__ = ["letter_json", "letters_table"]


def letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "message_id": letter.message_id, "routing_key": letter.routing_key, "event_type": letter.event_type,
        "reason": letter.reason, "error": letter.error, "handler": letter.handler, "queue": letter.queue,
        "attempts": letter.attempts,
        "dead_lettered_at": letter.dead_lettered_at.isoformat() if letter.dead_lettered_at else None,
        "payload": letter.payload, "body": letter.body.decode("utf-8", "replace"),
        "headers": {k: v if isinstance(v, str | int | float | bool | type(None)) else repr(v)
                    for k, v in letter.headers.items()},
    }


def letters_table(letters: list[DeadLetter]) -> str:
    rows = [("MESSAGE ID", "ROUTING KEY", "REASON", "ATTEMPTS", "HANDLER", "ERROR")]
    for letter in letters:
        rows.append((letter.message_id, letter.routing_key, letter.reason, str(letter.attempts),
                     (letter.handler or "-")[-40:], (letter.error or "-").splitlines()[0][:60]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
