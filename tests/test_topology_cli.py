"""`pubsubpy declare --prune [--dry-run] [--yes]` and `pubsubpy topology` (text, JSON, Mermaid), on the real broker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pika
import pytest
from click.testing import CliRunner

import tests.cli_support
from pubsubpy import PubSub
from pubsubpy.cli._commands import build
from tests.conftest import IN_CI, RABBIT_URL, Names
from tests.contract.events import ALL, BookingCreated, BookingUpdated, RoomCleaned

ROOT = Path(__file__).resolve().parent.parent
MMDC = ROOT / "scripts" / "mermaid" / "node_modules" / ".bin" / "mmdc"
PUPPETEER = ROOT / "scripts" / "mermaid" / "puppeteer.json"
APP = "tests.cli_support:app"


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(build(), list(args), input=input, catch_exceptions=False)
    return result.exit_code, result.output


def _versions(rabbit_url: str, names: Names) -> tuple[PubSub, PubSub]:
    """v1 subscribed Booking.* and Room.*; v2 (the CLI's app) only Booking.*."""
    exchange, service = names.exchange(), names.service()
    v1 = PubSub(rabbit_url, schemas=ALL, model_exchange=exchange, service_name=service)

    @v1.subscribe("Booking.*")
    @v1.subscribe("Room.*")
    def on_v1(event: BookingCreated | BookingUpdated | RoomCleaned) -> None: ...

    v1.declare()
    v2 = PubSub(rabbit_url, schemas=ALL, model_exchange=exchange, service_name=service)

    @v2.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None: ...

    tests.cli_support.app = v2
    return v1, v2


def _bindings(exchange: str, queue: str) -> set[str]:
    """The broker's own view (rabbitmqctl), not pubsubpy's ledger."""
    out = subprocess.run(["rabbitmqctl", "list_bindings", "-q", "--no-table-headers", "source_name",
                          "destination_name", "routing_key"], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return {row[2] for row in rows if len(row) == 3 and row[0] == exchange and row[1] == queue}


def test_declare_prune_dry_run_lists_and_changes_nothing(rabbit_url: str, names: Names) -> None:
    v1, v2 = _versions(rabbit_url, names)
    v1.publish_model_event("shop.models.Room", "cleaned", {"number": 1})
    code, out = run("declare", "--app", APP, "--prune", "--dry-run")
    assert code == 0, out
    assert "Room.*" in out and "Booking.*" not in out.split("subscribes:")[1].split("queue")[0]
    assert "holds 1 message(s)" in out and "dry run: nothing removed" in out
    queue = v2.topology().queue.name
    assert _bindings(v2.settings.model_exchange, queue) == {"Booking.*", "Room.*"}


def test_declare_prune_asks_and_a_no_keeps_the_binding(rabbit_url: str, names: Names) -> None:
    _v1, v2 = _versions(rabbit_url, names)
    code, out = run("declare", "--app", APP, "--prune", input="n\n")
    assert code == 1, out
    assert "Remove these 1 binding(s)?" in out and "nothing removed" in out
    assert _bindings(v2.settings.model_exchange, v2.topology().queue.name) == {"Booking.*", "Room.*"}

    code, out = run("declare", "--app", APP, "--prune", input="y\n")
    assert code == 0 and "removed 1 binding(s)" in out, out
    assert _bindings(v2.settings.model_exchange, v2.topology().queue.name) == {"Booking.*"}


def test_declare_prune_yes_removes_only_recorded_stale_bindings(rabbit_url: str, names: Names) -> None:
    _v1, v2 = _versions(rabbit_url, names)
    exchange, queue = v2.settings.model_exchange, v2.topology().queue.name
    connection = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    connection.channel().queue_bind(queue, exchange, routing_key="Audit.#")  # by hand: never pruned
    connection.close()
    code, out = run("declare", "--app", APP, "--prune", "--yes")
    assert code == 0 and "removed 1 binding(s)" in out, out
    assert _bindings(exchange, queue) == {"Booking.*", "Audit.#"}
    code, out = run("declare", "--app", APP, "--prune", "--yes")
    assert code == 0 and "no stale bindings" in out, out
    code, out = run("declare", "--app", APP, "--yes")
    assert code == 2 and "go with --prune" in out


def test_topology_json_matches_the_broker(rabbit_url: str, names: Names) -> None:
    _v1, v2 = _versions(rabbit_url, names)
    v2.publish_model_event("shop.models.Booking", "created", {"id": 1, "guest": "a"})
    v2.publish_model_event("shop.models.Booking", "created", {"id": 2, "guest": "b"})
    queue = v2.topology().queue.name
    connection = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    try:
        channel = connection.channel()
        channel.basic_consume(v2.topology().dead_letter_queue.name, lambda *_: None)  # one consumer on the DLQ
        code, out = run("topology", "--app", APP, "--format", "json")
        passive = channel.queue_declare(queue, passive=True).method
    finally:
        connection.close()
    assert code == 0, out
    view = json.loads(out)
    queues = {q["name"]: q for q in view["queues"]}
    assert queues[queue]["messages"] == passive.message_count == 2
    assert queues[queue]["consumers"] == passive.consumer_count == 0
    assert queues[v2.topology().dead_letter_queue.name]["consumers"] == 1
    assert queues[f"{queue}.ledger"]["role"] == "ledger" and queues[queue]["type"] == "classic"
    assert {q["name"] for q in view["queues"] if q["role"] == "retry"} == {s.name for s in v2.topology().retry_queues}
    listed = {b["pattern"]: b for b in view["bindings"]}
    assert set(listed) == _bindings(v2.settings.model_exchange, queue) == {"Booking.*", "Room.*"}
    assert listed["Room.*"]["stale"] is True and listed["Booking.*"]["handlers"][0].endswith("on_booking")
    assert {e["routing_key"] for e in view["events"]} == {"Booking.created", "Booking.updated", "Room.cleaned"}


def test_topology_text_names_everything(rabbit_url: str, names: Names) -> None:
    _v1, v2 = _versions(rabbit_url, names)
    v2.declare()
    code, out = run("topology", "--app", APP)
    assert code == 0, out
    assert f"exchange {v2.settings.model_exchange} (topic)" in out
    assert "Room.*" in out and "STALE" in out and "on_booking" in out
    assert "0 messages, 0 consumers" in out and ".dead-letters" in out and "TTL 1000 ms" in out


def test_topology_shows_the_event_log_and_declare_prune_never_touches_it(rabbit_url: str, names: Names) -> None:
    _v1, v2 = _versions(rabbit_url, names)
    exchange = v2.settings.model_exchange
    publisher = PubSub(rabbit_url, schemas=ALL, model_exchange=exchange, event_log="3D")
    publisher.publish_model_event("shop.models.Booking", "created", {"id": 1, "guest": "a"})
    publisher.close()
    code, out = run("topology", "--app", APP)
    assert code == 0 and f"#                        -> {exchange}.log: the event log (stream" in out, out
    code, out = run("topology", "--app", APP, "--format", "json")
    assert json.loads(out)["event_log"] == {"name": f"{exchange}.log", "retention": None, "readers": 0}
    code, out = run("declare", "--app", APP, "--prune", "--yes")
    assert code == 0 and "removed 1 binding(s)" in out, out  # Room.*, v1's; never the log's '#'
    assert _bindings(exchange, f"{exchange}.log") == {"#"}
    code, out = run("topology", "--app", APP, "--format", "mermaid")
    assert f'-- "#" --> q_{exchange.replace("-", "_")}_log' in out


@pytest.mark.browser
def test_topology_mermaid_renders_with_mermaid_cli(rabbit_url: str, names: Names, tmp_path: Path) -> None:
    if not (MMDC.exists() and shutil.which("chromium")):
        if IN_CI:
            pytest.fail("mermaid-cli or chromium missing under CI=true: scripts/ensure-node-tools.sh installs them")
        pytest.skip("run scripts/ensure-node-tools.sh for mermaid-cli and Debian's chromium")
    _v1, _v2 = _versions(rabbit_url, names)
    code, out = run("topology", "--app", APP, "--format", "mermaid")
    assert code == 0, out
    assert out.startswith("flowchart LR")
    source, image = tmp_path / "topology.mmd", tmp_path / "topology.svg"
    source.write_text(out)
    proc = subprocess.run([str(MMDC), "-p", str(PUPPETEER), "-i", str(source), "-o", str(image)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    svg = image.read_text()
    assert "Syntax error" not in svg, "mermaid could not parse the flowchart"
    for text in ("Booking.*", "on_booking()", ".dead-letters", "topic exchange"):
        assert text in svg, f"{text!r} missing from the rendered diagram"
