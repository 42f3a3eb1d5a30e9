"""Routing benchmark helpers: a linear scan of compiled regexes, the baseline TopicTrie is measured against.

Each word of a key is written with a leading dot (``a.b`` -> ``.a.b``; the empty
key has no words and stays empty), so a pattern becomes a plain regex:
``*`` -> ``\\.[^.]*``, ``#`` -> ``(?:\\.[^.]*)*``, a word -> ``\\.word``.
"""

from __future__ import annotations

import re


def compile_pattern(pattern: str) -> re.Pattern[str]:
    parts = []
    for word in pattern.split("."):
        if word == "#":
            parts.append(r"(?:\.[^.]*)*")
        elif word == "*":
            parts.append(r"\.[^.]*")
        else:
            parts.append(r"\." + re.escape(word))
    return re.compile("".join(parts))


def regex_key(routing_key: str) -> str:
    return "." + routing_key if routing_key else ""


def regex_matches(compiled: re.Pattern[str], routing_key: str) -> bool:
    return compiled.fullmatch(regex_key(routing_key)) is not None
