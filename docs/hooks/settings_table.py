"""MkDocs hook: the table of every setting, generated from ``pubsubpy.settings.Settings.model_fields``.

A page line that is exactly ``<!-- settings-table -->`` becomes a table with one row per field of
``Settings``, in declaration order: its name and type, its default, and its documentation followed by its
bounds (pydantic's ``ge``/``gt``/``le``/``lt``). The documentation is the field's docstring (the string literal
right under the field in ``pubsubpy/settings.py``, read with griffe), else its ``Field(description=...)``.
Adding a field to
``Settings`` therefore adds its row without editing a page; a field with neither text is a warning, which
``mkdocs build --strict`` makes fatal.
"""

from __future__ import annotations

import enum
import logging
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
import griffe
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

MARKER = "<!-- settings-table -->"
ROOT = Path(__file__).resolve().parents[2]

log = logging.getLogger("mkdocs.plugins.pubsubpy.settings_table")


def _type_name(annotation: Any) -> str:
    """``str | None``, ``"classic" / "quorum"``: the field's type as the reader writes it."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " / ".join(f'`"{value}"`' for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return "`" + " | ".join(_plain(arg) for arg in typing.get_args(annotation)) + "`"
    return f"`{_plain(annotation)}`"


def _plain(annotation: Any) -> str:
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    value = field.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool) or value is None:
        return f"`{value}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, int) and value >= 10_000:
        return f"`{value:_}`"  # as Python reads it
    return f"`{value!r}`"


def _bounds(field: FieldInfo) -> str:
    """pydantic's ``ge``/``gt``/``le``/``lt`` constraints of the field, as ``≥ 1, ≤ 100``."""
    found = []
    for item in field.metadata:
        for kind, attribute, symbol in ((annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"),
                                        (annotated_types.Le, "le", "≤"), (annotated_types.Lt, "lt", "<")):
            if isinstance(item, kind):
                bound = getattr(item, attribute)
                found.append(f"{symbol} {bound:,}" if isinstance(bound, int) else f"{symbol} {bound}")
    return ", ".join(found)


def _docstrings() -> dict[str, str]:
    module = griffe.load("pubsubpy.settings", search_paths=[str(ROOT)], docstring_parser=None)
    settings = module["Settings"]
    found = {}
    for name, member in settings.members.items():
        if member.docstring is not None:
            found[name] = member.docstring.value
    return found


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def settings_table() -> str:
    from pubsubpy.settings import Settings

    docstrings = _docstrings()
    rows = ["| setting | default | what it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        text = docstrings.get(name) or field.description or ""
        if not text:
            log.warning("settings table: Settings.%s has no docstring and no description: document it in "
                        "pubsubpy/settings.py (a string right under the field)", name)
        bounds = _bounds(field)
        rows.append(f"| `{name}`<br>{_type_name(field.annotation)} | {_default(field)} | {_cell(text)}"
                    + (f" <small>Bounds: {bounds}.</small>" if bounds else "") + " |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return "\n".join(settings_table() if line.strip() == MARKER else line for line in markdown.splitlines())
