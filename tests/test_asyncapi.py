"""`pubsubpy schema export --format asyncapi`: an AsyncAPI 3.0 document the official parser accepts."""

from __future__ import annotations

import datetime as dt
import enum
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field

import tests.cli_support
from pubsubpy import ModelEvent, PubSub
from pubsubpy.cli._commands import build
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = ROOT / "scripts" / "asyncapi" / "validate.mjs"


class Carrier(str, enum.Enum):
    POST = "post"
    COURIER = "courier"


class Address(BaseModel):
    street: str
    city: str = Field(description="where it goes")


class ParcelSent(ModelEvent, model="post.models.Parcel", event="sent", register=False):
    """A parcel left the depot."""

    id: int
    carrier: Carrier
    to: Address
    sent_at: dt.datetime


class ParcelSentV2(ModelEvent, model="post.models.Parcel", event="sent", version=2, register=False):
    id: int
    carrier: Carrier
    to: Address
    sent_at: dt.datetime
    tracking: str = ""


class ParcelLost(ModelEvent, model="post.models.Parcel", event="lost", register=False):
    id: int


class LabelPrinted(ModelEvent, model="post.models.Label", event="printed", register=False):
    id: int


def _export() -> dict[str, object]:
    app = PubSub("amqp://user:s3cret@broker.example:5671/%2F", schemas=[ParcelSent, ParcelSentV2, ParcelLost,
                 LabelPrinted], service_name="post", model_exchange="models", publishes=[ParcelSentV2, ParcelLost])

    @app.subscribe("Parcel.*")  # a wildcard: expands to every registered Parcel key
    def on_parcel(event: ModelEvent) -> None: ...

    tests.cli_support.app = app
    result = CliRunner().invoke(build(), ["schema", "export", "--app", "tests.cli_support:app", "--format", "asyncapi"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    document: dict[str, object] = json.loads(result.output)
    return document


def test_the_document_describes_channels_messages_and_operations() -> None:
    doc = _export()
    assert doc["asyncapi"] == "3.0.0"
    channels = doc["channels"]
    assert isinstance(channels, dict)
    assert {c["address"] for c in channels.values()} == {"Parcel.sent", "Parcel.lost", "Label.printed"}
    assert set(channels["Parcel.sent"]["messages"]) == {"post.models.Parcel.sent.v1", "post.models.Parcel.sent.v2"}
    assert channels["Parcel.sent"]["bindings"]["amqp"]["exchange"]["name"] == "models"
    operations = doc["operations"]
    assert isinstance(operations, dict)
    sends = {op["channel"]["$ref"] for op in operations.values() if op["action"] == "send"}
    receives = {op["channel"]["$ref"] for op in operations.values() if op["action"] == "receive"}
    assert sends == {"#/channels/Parcel.sent", "#/channels/Parcel.lost"}
    assert receives == {"#/channels/Parcel.sent", "#/channels/Parcel.lost"}, "Parcel.* expands; Label is not ours"
    text = json.dumps(doc)
    assert "$defs" not in text, "pydantic's $defs moved into components/schemas"
    schemas = doc["components"]["schemas"]  # type: ignore[index]
    assert {"Address", "Carrier", "ParcelSent.v1", "ParcelSentV2.v2"} <= set(schemas)
    message = doc["components"]["messages"]["post.models.Parcel.sent.v1"]  # type: ignore[index]
    assert message["headers"]["properties"]["pubsubpy-schema-version"]["type"] == "integer"
    assert doc["servers"]["broker"] == {"host": "broker.example:5671", "protocol": "amqp",  # type: ignore[index]
                                        "description": "RabbitMQ; events go to the topic exchange 'models'"}


@pytest.mark.browser
def test_the_official_asyncapi_parser_accepts_it(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (VALIDATOR.parent / "node_modules" / "@asyncapi" / "parser").exists():
        if IN_CI:
            pytest.fail("node or @asyncapi/parser missing under CI=true: scripts/ensure-node-tools.sh installs it")
        pytest.skip("run scripts/ensure-node-tools.sh for the AsyncAPI parser")
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(_export()))
    proc = subprocess.run([node, str(VALIDATOR), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 error(s)" in proc.stdout
