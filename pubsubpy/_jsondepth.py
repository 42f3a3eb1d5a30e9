"""How deeply a JSON body nests, checked before any parser sees it.

Python's ``json`` gives up on deep nesting at a depth that changed between
3.10 and 3.13, and pydantic-core stops at its own limit; checking
``max_json_depth`` first makes the verdict (``decode_error``) the same on every
supported Python. Strings are blanked before counting, so brackets inside them
never count.
"""

from __future__ import annotations

import re

__all__ = ["nesting_exceeds"]

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def nesting_exceeds(body: bytes, limit: int) -> bool:
    """True when arrays/objects in ``body`` nest deeper than ``limit`` (the top-level object is depth 1)."""
    if body.count(b"{") + body.count(b"[") <= limit:
        return False  # the common case, at C speed: too few brackets to be that deep
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', body)):
        if match.group() in (b"{", b"["):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
