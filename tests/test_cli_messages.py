"""What the pubsubpy command says, and its exit codes, on memory:// (issue 24, items 6 and 7)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import click
import pytest
from click.testing import CliRunner

import tests.cli_support
from pubsubpy import PubSub
from pubsubpy._facade import replace_default
from pubsubpy.cli._commands import build
from tests.contract.events import ALL, BOOKING

APP = "tests.cli_support:app"


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(build(), list(args), input=input, env=env, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(autouse=True)
def own_default() -> Iterator[None]:
    """Each test starts with an unconfigured default instance (a command without --app configures it)."""
    old = replace_default(PubSub.unconfigured())
    yield
    replace_default(old)


@pytest.fixture
def app() -> Iterator[PubSub]:
    """A memory:// app with the contract schemas, one failing handler, and ``tests.cli_support.app`` set."""
    app = PubSub(f"memory://cli-{uuid4().hex[:8]}", schemas=ALL, model_exchange="cli-models",  # type: ignore[arg-type]
                 service_name="cli-billing", max_attempts=1, retry_delay=0)

    @app.subscribe("Booking.*")
    def on_booking(event: dict[str, object]) -> None:
        raise RuntimeError("broken handler")

    tests.cli_support.app = app
    yield app
    tests.cli_support.app = None
    app.close()


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


def test_every_option_has_help_and_shows_its_default() -> None:
    missing, hidden_default = [], []
    for name, command in _commands(build()):
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            if not param.help:
                missing.append(f"{name} {param.opts[0]}")
            has_default = param.default is not None and str(param.default) != "Sentinel.UNSET"  # click 8.3+
            if has_default and not param.is_flag and not param.show_default:
                hidden_default.append(f"{name} {param.opts[0]}")
    assert missing == [] and hidden_default == []


@pytest.mark.parametrize("command", [[], ["dlq"], ["dlq", "replay"], ["schema", "check"], ["declare"],
                                     ["publish"], ["demo"]])
def test_dash_h_is_help_everywhere(command: list[str]) -> None:
    code, out = run(*command, "-h")
    assert code == 0 and "Usage:" in out and "-h, --help" in out


def test_url_help_names_its_environment_variable_and_defaults_show() -> None:
    code, out = run("drain", "-h")
    assert code == 0
    assert "env var: PUBSUBPY_URL" in out and "default: 60.0" in out and "--max-messages" in out
    code, out = run("declare", "-h")
    assert "--timeout" in out and "default: 60.0" in out


def test_url_with_app_is_a_usage_error_naming_both(app: PubSub) -> None:
    code, out = run("dlq", "list", "--app", APP, "--url", "memory://")
    assert code == 2
    assert "--url cannot be used with --app" in out
    code, out = run("dlq", "list", "--app", APP, "--url", "memory://", "--service", "x")
    assert code == 2 and "--url and --service cannot be used with --app" in out


def test_url_from_the_environment_with_app_is_fine(app: PubSub) -> None:
    code, out = run("dlq", "list", "--app", APP, env={"PUBSUBPY_URL": "memory://"})
    assert code == 0 and "no dead letters" in out


def test_app_module_without_attribute_lists_the_pubsubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"cli_two_apps_{uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent("""
        from pubsubpy import PubSub
        from pubsubpy.aio import AsyncPubSub
        billing = PubSub("memory://", service_name="billing")
        shipping = AsyncPubSub("memory://", service_name="shipping")
        _private = PubSub("memory://")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out = run("dlq", "list", "--app", module)
    assert code == 2
    assert f"error: --app {module}: name the PubSub to use: --app {module}:billing, --app {module}:shipping" in out
    code, out = run("dlq", "list", "--app", f"{module}:nothing")
    assert code == 2 and f"has no attribute 'nothing'; it has {module}:billing, {module}:shipping" in out


def test_app_module_without_any_pubsub_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"cli_no_app_{uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out = run("dlq", "list", "--app", module)
    assert code == 2
    assert (f"error: --app {module}: module {module} defines no PubSub or AsyncPubSub object and does not call "
            f"pubsubpy.init(); use --app {module}:ATTRIBUTE") in out


def test_app_module_calling_init_uses_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"cli_init_{uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        f'import pubsubpy\nbus = pubsubpy.init("memory://{module}", service_name="init-service")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out = run("declare", "--app", module)
    assert code == 0 and "queue init-service.events" in out


def test_app_import_error_is_a_configuration_error() -> None:
    code, out = run("dlq", "list", "--app", "no_such_module_here:app")
    assert code == 2
    assert "error: --app no_such_module_here:app: cannot import module 'no_such_module_here'" in out
    assert f"(working directory {os.getcwd()})" in out
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in out


def test_app_raising_while_imported_is_a_configuration_error(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"cli_broken_{uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("import json\nraise RuntimeError('settings missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out = run("topology", "--app", f"{module}:app")
    assert code == 2 and f"cannot import module '{module}'" in out and "RuntimeError: settings missing" in out


def _dead_letters(app: PubSub, count: int) -> None:
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(count)])
    assert app.drain(timeout=10).dead_lettered == count


def test_replay_everything_asks_first(app: PubSub) -> None:
    _dead_letters(app, 2)
    code, out = run("dlq", "replay", "--app", APP, input="n\n")
    assert code == 1
    assert "Replay every dead letter of cli-billing to its handlers? [y/N]" in out and "nothing replayed" in out
    assert app.dead_letter_count() == 2
    code, out = run("dlq", "replay", "--app", APP, input="y\n")
    assert code == 0 and "replayed 2 dead letter(s)" in out
    assert app.dead_letter_count() == 0


def test_replay_with_yes_or_a_filter_does_not_ask(app: PubSub) -> None:
    _dead_letters(app, 1)
    code, out = run("dlq", "replay", "--app", APP, "--yes")
    assert code == 0 and "Replay every" not in out and "replayed 1" in out
    assert app.drain(timeout=10).dead_lettered == 1  # the handler still fails
    code, out = run("dlq", "replay", "--app", APP, "--reason", "handler_error")
    assert code == 0 and "Replay every" not in out and "replayed 1" in out


def test_declare_takes_a_timeout(app: PubSub) -> None:
    code, out = run("declare", "--app", APP, "--timeout", "5")
    assert code == 0 and "declared exchange cli-models" in out
    code, out = run("declare", "--app", APP, "--timeout", "0")
    assert code == 2 and "0.1" in out


def test_publish_prints_the_message_id(app: PubSub) -> None:
    code, out = run("publish", BOOKING, "created", '{"id": 7, "guest": "Ada"}', "--app", APP)
    assert code == 0, out
    message_id = out.strip()
    assert len(message_id) >= 16 and "\n" not in message_id
    app.drain(timeout=10)
    assert [letter.message_id for letter in app.list_dead_letters()] == [message_id]


def test_publish_refuses_what_publish_model_event_refuses(app: PubSub) -> None:
    code, out = run("publish", BOOKING, "created", '{"id": 7,', "--app", APP)
    assert code == 2 and "error: JSON is not valid JSON: Expecting" in out
    code, out = run("publish", BOOKING, "created", '{"id": "seven", "guest": 3, "extra": 1}', "--app", APP)
    assert code == 2
    assert "error: PayloadValidationError: payload for BookingCreated is invalid: 3 field error(s)" in out
    assert "  id: Input should be a valid integer" in out
    assert "  guest: Input should be a valid string" in out
    assert "  extra: Extra inputs are not permitted" in out
    assert "nothing was sent" in out
    code, out = run("publish", BOOKING, "exploded", "{}", "--app", APP)
    assert code == 2 and "error: UnknownEventType: no schema is registered for model" in out
    assert app.dead_letter_count() == 0 and app.drain(timeout=5).messages == 0


@pytest.mark.parametrize(("args", "expected"), [
    pytest.param(["schema", "export", "--app", APP], 0, id="0-done"),
    pytest.param(["dlq", "show", "no-such-id", "--app", APP], 1, id="1-work-failed"),
    pytest.param(["dlq", "purge", "--app", APP], 1, id="1-declined-prompt"),
    pytest.param(["dlq", "list", "--app", APP, "--url", "memory://"], 2, id="2-usage"),
    pytest.param(["dlq", "list", "--app", "no_such_module_here:app"], 2, id="2-configuration"),
    pytest.param(["publish", BOOKING, "created", '{"id": "x"}', "--app", APP], 2, id="2-invalid-payload"),
    pytest.param(["dlq", "list", "--url", "amqp://guest:guest@127.0.0.1:1/%2F", "--service", "x", "--timeout", "5"],
                 3, id="3-broker-unreachable"),
])
def test_exit_codes(app: PubSub, args: list[str], expected: int) -> None:
    code, out = run(*args, input="n\n")
    assert code == expected, out


def test_python_dash_m_runs_the_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "pubsubpy", "-h"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Usage: python -m pubsubpy" in proc.stdout and "publish" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "pubsubpy", "demo"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "demo OK" in proc.stdout


def test_demo_shows_every_field_error_a_plain_handler_name_and_its_settings() -> None:
    code, out = run("demo")
    assert code == 0 and "demo OK" in out
    assert "refused before sending: PayloadValidationError: payload for DemoBookingCreated is invalid: " \
           "2 field error(s)" in out
    assert "id: Input should be a valid integer" in out and "nights: Field required" in out
    assert "handler=pubsubpy.cli._demo.on_booking\n" in out and "<locals>" not in out
    assert "max_attempts=2, retry_delay=0" in out
    assert "with the defaults, max_attempts=3 and retry_delay=1 s, it is retried after retry_delay on a later " \
           "drain" in out
