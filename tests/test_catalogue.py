"""`pubsubpy schema docs`: a one-page HTML event catalogue, checked in headless Chromium (Debian's)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import tests.cli_support
from pubsubpy import ModelEvent, PubSub
from pubsubpy.cli._commands import build
from tests.conftest import IN_CI
from tests.test_asyncapi import LabelPrinted, ParcelLost, ParcelSent, ParcelSentV2

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT / "scripts" / "mermaid" / "page-check.mjs"
APP = "tests.cli_support:app"


def _service(name: str, publishes: list[type[ModelEvent]], patterns: list[str]) -> PubSub:
    app = PubSub("memory://", schemas=[ParcelSent, ParcelSentV2, ParcelLost, LabelPrinted], service_name=name,
                 publishes=publishes)
    for pattern in patterns:
        app.subscribe(pattern)(_any)
    return app


def _any(event: ModelEvent) -> None: ...


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build(), list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _catalogue(tmp_path: Path) -> Path:
    tests.cli_support.app = _service("shipping", [], ["Parcel.sent"])
    code, out = run("schema", "export", "--app", APP, "--format", "asyncapi")
    assert code == 0
    other = tmp_path / "shipping.asyncapi.json"
    other.write_text(out)
    tests.cli_support.app = _service("post", [ParcelSentV2, ParcelLost, LabelPrinted], ["Label.*"])
    code, out = run("schema", "docs", "--app", APP, "--out", str(tmp_path / "site"), "--input", str(other))
    assert code == 0, out
    return tmp_path / "site" / "index.html"


def test_the_page_has_every_event_field_version_and_who_sends_it(tmp_path: Path) -> None:
    page = _catalogue(tmp_path).read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page, "no script, no CDN"
    for text in ("Parcel.sent", "Parcel.lost", "Label.printed", "post.models.Parcel.sent v1",
                 "post.models.Parcel.sent v2", "tracking", "sent_at", "to.city", "where it goes", "&quot;courier&quot;",
                 "published by post; subscribed by shipping", "published by post; subscribed by post"):
        assert text in page, text
    example = page.split("Example payload:</p><pre>", 1)[1].split("</pre>", 1)[0]
    assert json.loads(example.replace("&quot;", '"'))  # the example is JSON


@pytest.mark.browser
def test_the_page_renders_in_chromium_without_console_errors(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not shutil.which("chromium") or not (CHECKER.parent / "node_modules" / "puppeteer").exists():
        if IN_CI:
            pytest.fail("node, chromium or puppeteer missing under CI=true: scripts/ensure-node-tools.sh installs them")
        pytest.skip("run scripts/ensure-node-tools.sh for chromium and puppeteer")
    page = _catalogue(tmp_path)
    shot = tmp_path / "catalogue.png"
    proc = subprocess.run([node, str(CHECKER), page.as_uri(), str(shot)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    for text in ("Parcel.sent", "Parcel.lost", "Label.printed", "id", "carrier", "to", "sent_at", "tracking",
                 "published by post; subscribed by shipping"):
        assert text in report["text"], text
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
