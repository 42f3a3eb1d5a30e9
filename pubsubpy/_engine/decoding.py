"""Reading a body: JSON depth first, then strict JSON, then the schema.

``read`` returns the payload or raises ``Refused`` with the reason and the text
the dead letter carries (``decode_error`` or ``validation_error``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pydantic_core
from pydantic import ValidationError

from pubsubpy._jsondepth import nesting_exceeds
from pubsubpy.messages import Reason
from pubsubpy.schemas import ModelEvent

__all__ = ["Refused", "read", "read_dict"]


class Refused(Exception):
    """The body cannot be read as the message claims: dead-letter it with ``reason``."""

    def __init__(self, reason: Reason, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


def read_dict(body: bytes, max_depth: int) -> dict[str, Any]:
    """The body as a JSON object, for a key with no schema (a ``dict`` handler)."""
    if nesting_exceeds(body, max_depth):
        raise Refused(Reason.DECODE_ERROR, f"body nests deeper than max_json_depth={max_depth}")
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Refused(Reason.DECODE_ERROR, f"body is not UTF-8 JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Refused(Reason.DECODE_ERROR, f"body is JSON {type(value).__name__}, not an object")
    return value


def read(body: bytes, schema: type[ModelEvent], max_depth: int, version: int) -> ModelEvent:
    """The body validated by ``schema`` (``version`` is what arrived, named when it differs)."""
    if nesting_exceeds(body, max_depth):
        raise Refused(Reason.DECODE_ERROR, f"body nests deeper than max_json_depth={max_depth}")
    if b"NaN" in body or b"Infinity" in body:
        problem = _strict_json_problem(body)
        if problem:
            raise Refused(Reason.DECODE_ERROR, f"body is not valid JSON: {problem}")
    try:
        return schema.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(err["type"] == "json_invalid" for err in errors):
            raise Refused(Reason.DECODE_ERROR, f"body is not UTF-8 JSON: {errors[0]['msg']}") from None
        if len(errors) == 1 and errors[0]["type"] == "model_type" and not errors[0]["loc"]:
            raise Refused(Reason.DECODE_ERROR, "body is JSON but not an object") from None
        read_as = "" if version == schema.__pubsub_version__ else \
            f" (version {version} arrived, read as version {schema.__pubsub_version__})"
        raise Refused(Reason.VALIDATION_ERROR, f"{schema.__qualname__}{read_as}: {exc}") from None


def _strict_json_problem(body: bytes) -> str | None:
    """pydantic's parser accepts NaN/Infinity tokens; a strict parse tells them from text inside strings."""
    try:
        pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        return f"{exc} (NaN and Infinity are not JSON)"
    return None


def _refuse_constant(name: str) -> Callable[[], None]:
    raise ValueError(f"{name} is not valid JSON")
