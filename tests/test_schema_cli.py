"""`pubsubpy schema lock|check|export`: the CI gate, end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from pydantic import Field

import pubsubpy
import tests.cli_support
from pubsubpy import ModelEvent, PubSub
from pubsubpy.cli._commands import build

PARCEL = "post.models.Parcel"
APP = "tests.cli_support:app"


class SentV1(ModelEvent, model=PARCEL, event="sent", register=False):
    id: int
    weight_g: int = Field(ge=0)


class SentV1Compatible(ModelEvent, model=PARCEL, event="sent", register=False):
    id: int
    weight_g: int = Field(ge=0, description="grams")
    note: str = ""  # optional with a default: safe in every mode


class SentV1Broken(ModelEvent, model=PARCEL, event="sent", register=False):
    id: int
    weight_kg: float  # renamed and retyped: breaks both ways


class SentV2(ModelEvent, model=PARCEL, event="sent", version=2, register=False):
    id: int
    weight_g: int = Field(ge=0)
    carrier: str  # required: v2 alone cannot read v1 messages...


@pubsubpy.upcaster(SentV1, SentV2)
def carrier(old: SentV1) -> SentV2:  # ...but the upcaster converts them, so only forward is checked
    return SentV2(id=old.id, weight_g=old.weight_g, carrier="unknown")


class LooseV1(ModelEvent, model="post.models.Label", event="printed", compatibility="backward", register=False):
    id: int


class LooseV1Removed(ModelEvent, model="post.models.Label", event="printed", compatibility="backward",
                     register=False):
    pass  # removing a field: safe backward (the declared mode), breaking forward


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build(), list(args), catch_exceptions=False)
    return result.exit_code, result.output


def use(*schemas: type[ModelEvent]) -> None:
    tests.cli_support.app = PubSub("memory://", schemas=list(schemas))


def test_lock_then_check_compatible_and_breaking_changes(tmp_path: Path) -> None:
    lock = str(tmp_path / "pubsubpy.lock.json")
    use(SentV1, LooseV1)
    code, out = run("schema", "lock", "--app", APP, "--out", lock)
    assert code == 0 and "2 schema version(s)" in out, out
    document = json.loads(Path(lock).read_text())
    assert [(e["model"], e["version"], e["compatibility"]) for e in document["events"]] == [
        ("post.models.Label", 1, "backward"), (PARCEL, 1, "full")]
    assert all(e["fingerprint"].startswith("sha256:") and e["schema"]["properties"] for e in document["events"])
    assert run("schema", "check", "--app", APP, "--lock", lock)[0] == 0

    use(SentV1Compatible, LooseV1Removed)
    code, out = run("schema", "check", "--app", APP, "--lock", lock)
    assert code == 0 and "compatible with" in out, out

    use(SentV1Broken, LooseV1)
    code, out = run("schema", "check", "--app", APP, "--lock", lock)
    assert code == 1, out
    assert "post.models.Parcel.sent v1: changed since the lock: field weight_g" in out and "[full]" in out
    assert "backward" in out and "forward" in out and "breaking change(s)" in out

    use(LooseV1)  # the Parcel event's only version removed
    code, out = run("schema", "check", "--app", APP, "--lock", lock)
    assert code == 1 and "post.models.Parcel.sent v1: removed" in out, out


def test_a_new_version_is_checked_against_the_previous_one(tmp_path: Path) -> None:
    lock = str(tmp_path / "lock.json")
    use(SentV1)
    run("schema", "lock", "--app", APP, "--out", lock)
    use(SentV1, SentV2)
    code, out = run("schema", "check", "--app", APP, "--lock", lock)
    assert code == 0, out  # carrier is required in v2, but the upcaster reads v1; forward holds

    class SentV2Narrow(ModelEvent, model=PARCEL, event="sent", version=2, register=False):
        id: int
        weight_g: str  # old consumers (v1) cannot read it

    use(SentV1, SentV2Narrow)
    code, out = run("schema", "check", "--app", APP, "--lock", lock)
    assert code == 1 and "post.models.Parcel.sent v2: new version against v1: field weight_g" in out, out


def test_check_without_a_lock_says_how_to_make_one(tmp_path: Path) -> None:
    use(SentV1)
    code, out = run("schema", "check", "--app", APP, "--lock", str(tmp_path / "missing.json"))
    assert code == 2 and "pubsubpy schema lock" in out


def test_export_jsonschema_lists_every_version() -> None:
    use(SentV1, SentV2)
    code, out = run("schema", "export", "--app", APP, "--format", "jsonschema")
    assert code == 0
    exported = json.loads(out)
    assert set(exported) == {f"{PARCEL}.sent", f"{PARCEL}.sent v2"}
    assert exported[f"{PARCEL}.sent v2"]["schema"]["required"] == ["id", "weight_g", "carrier"]
