"""The compatibility check as a table of before/after schemas, and hypothesis checking its verdicts:
whatever it calls compatible really validates the writer's payloads with the reader's model."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import Field, ValidationError, create_model

from pubsubpy import ModelEvent
from pubsubpy.schemas._compat import MODES, compare

OK, BREAKS = True, False

# name: (old fields, new fields, {mode: compatible?})  -- "none" is always compatible
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, bool]]] = {
    "field removed": ({"id": (int, ...), "name": (str, ...)}, {"id": (int, ...)},
                      {"backward": OK, "forward": BREAKS, "full": BREAKS}),
    "required field added": ({"id": (int, ...)}, {"id": (int, ...), "name": (str, ...)},
                             {"backward": BREAKS, "forward": OK, "full": BREAKS}),
    "optional field with a default added": ({"id": (int, ...)}, {"id": (int, ...), "note": (str, "")},
                                            {"backward": OK, "forward": OK, "full": OK}),
    "type changed": ({"id": (int, ...)}, {"id": (str, ...)}, {"backward": BREAKS, "forward": BREAKS, "full": BREAKS}),
    "type widened": ({"id": (int, ...)}, {"id": (int | str, ...)}, {"backward": OK, "forward": BREAKS, "full": BREAKS}),
    "type narrowed": ({"id": (int | str, ...)}, {"id": (int, ...)},
                      {"backward": BREAKS, "forward": OK, "full": BREAKS}),
    "int widened to float": ({"x": (int, ...)}, {"x": (float, ...)},
                             {"backward": OK, "forward": BREAKS, "full": BREAKS}),
    "enum value added": ({"s": (Literal["a", "b"], ...)}, {"s": (Literal["a", "b", "c"], ...)},
                         {"backward": OK, "forward": BREAKS, "full": BREAKS}),
    "enum value removed": ({"s": (Literal["a", "b", "c"], ...)}, {"s": (Literal["a", "b"], ...)},
                           {"backward": BREAKS, "forward": OK, "full": BREAKS}),
    "optional made required": ({"id": (int, ...), "name": (str | None, None)}, {"id": (int, ...), "name": (str, ...)},
                               {"backward": BREAKS, "forward": OK, "full": BREAKS}),
    "required made optional": ({"id": (int, ...), "name": (str, ...)}, {"id": (int, ...), "name": (str | None, None)},
                               {"backward": OK, "forward": BREAKS, "full": BREAKS}),
    "constraint tightened": ({"name": (str, Field(max_length=20))}, {"name": (str, Field(max_length=10))},
                             {"backward": BREAKS, "forward": OK, "full": BREAKS}),
    "constraint loosened": ({"name": (str, Field(max_length=10))}, {"name": (str, Field(max_length=20))},
                            {"backward": OK, "forward": BREAKS, "full": BREAKS}),
    "minimum raised": ({"n": (int, Field(ge=0))}, {"n": (int, Field(ge=5))},
                       {"backward": BREAKS, "forward": OK, "full": BREAKS}),
    "field renamed": ({"id": (int, ...), "name": (str, ...)}, {"id": (int, ...), "title": (str, ...)},
                      {"backward": BREAKS, "forward": BREAKS, "full": BREAKS}),
    "description changed": ({"id": (int, Field(description="the id"))}, {"id": (int, Field(description="its id"))},
                            {"backward": OK, "forward": OK, "full": OK}),
    "list items narrowed": ({"tags": (list[int | str], ...)}, {"tags": (list[int], ...)},
                            {"backward": BREAKS, "forward": OK, "full": BREAKS}),
}


def _model(name: str, fields: dict[str, Any]) -> type[ModelEvent]:
    model: type[ModelEvent] = create_model(name, __base__=ModelEvent, **fields)
    return model


def _schemas(case: str) -> tuple[type[ModelEvent], type[ModelEvent]]:
    old, new, _ = CASES[case]
    return _model("Old", old), _model("New", new)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mode", MODES)
def test_verdict_table(case: str, mode: str) -> None:
    old, new = _schemas(case)
    problems = compare(old.model_json_schema(), new.model_json_schema(), mode)  # type: ignore[arg-type]
    expected = True if mode == "none" else CASES[case][2][mode]
    assert (not problems) is expected, f"{case} in {mode}: {[str(p) for p in problems]}"
    for problem in problems:  # every problem names a field of the event and says why
        assert problem.field and problem.why


def _directions(mode: str) -> list[tuple[str, str]]:
    """(reader, writer) pairs a compatible verdict in ``mode`` promises to work."""
    return {"backward": [("new", "old")], "forward": [("old", "new")],
            "full": [("new", "old"), ("old", "new")]}[mode]


PROMISES = [(case, mode, reader) for case in sorted(CASES) for mode in ("backward", "forward", "full")
            if CASES[case][2][mode] for reader, _writer in _directions(mode)]


_MISSING = object()


def values(annotation: Any) -> st.SearchStrategy[Any]:
    """Small values of a field's type (small, so most fit the table's constraints and few are filtered)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(values(arg) for arg in args))
    if origin is list:
        return st.lists(values(args[0]), max_size=3)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: st.text(max_size=12), int: st.integers(-20, 40), bool: st.booleans(), type(None): st.none(),
        float: st.floats(-1000, 1000, allow_nan=False, allow_infinity=False),
    }
    return simple[annotation]


def payloads(model: type[ModelEvent]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts of the model's fields, each optional field sometimes left out (as a JSON Schema allows); the
    tests keep those the writer's model validates."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, info in model.model_fields.items():
        value = values(info.annotation)
        fields[name] = value if info.is_required() else st.one_of(st.just(_MISSING), value)
    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not _MISSING})


@pytest.mark.parametrize(("case", "mode", "reader_side"), PROMISES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_compatible_verdict_holds_for_generated_payloads(case: str, mode: str, reader_side: str,
                                                          data: st.DataObject) -> None:
    old, new = _schemas(case)
    reader, writer = (new, old) if reader_side == "new" else (old, new)
    assert not compare(old.model_json_schema(), new.model_json_schema(), mode)  # type: ignore[arg-type]
    payload = data.draw(payloads(writer))
    try:
        writer.model_validate(payload)  # a payload the writer allows...
    except ValidationError:
        assume(False)
    reader.model_validate(payload)  # ...the reader reads


BREAKS_IN = [(case, mode) for case in sorted(CASES) for mode in ("backward", "forward") if not CASES[case][2][mode]]


@pytest.mark.parametrize(("case", "mode"), BREAKS_IN)
def test_a_breaking_verdict_has_a_payload_that_breaks(case: str, mode: str) -> None:
    """The other direction: where the check says a mode breaks, some payload the writer allows is refused
    by the reader (found by hypothesis), so the verdicts are not merely cautious."""
    old, new = _schemas(case)
    reader, writer = (new, old) if mode == "backward" else (old, new)
    failures: list[dict[str, Any]] = []

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(payloads(writer))
    def probe(payload: dict[str, Any]) -> None:
        try:
            writer.model_validate(payload)
        except ValidationError:
            return
        try:
            reader.model_validate(payload)
        except ValidationError:
            failures.append(payload)

    probe()
    assert failures, f"{case}: the check says {mode} breaks, but no payload broke it"
