"""The ``pubsubpy`` command's click group: demo, declare, publish, topology, drain, worker, replay, dlq, schema,
ordered.

Connection options are shared by every command and read from the environment
when not given: ``PUBSUBPY_URL``, ``PUBSUBPY_EXCHANGE``, ``PUBSUBPY_SERVICE``.
``--app module:attribute`` imports your handlers and a ``PubSub`` instance
(``--app module`` alone: the default instance its ``init()`` call configured);
``--url``, ``--exchange`` or ``--service`` on the command line with ``--app`` is
a usage error. Exit codes: 0 done, 1 the work failed (e.g. messages
dead-lettered with ``--fail-on-dead-letters``), 2 usage or configuration error,
3 broker unreachable.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import click
from click.core import ParameterSource

import pubsubpy
from pubsubpy.app import PubSub
from pubsubpy.errors import (
    BrokerUnavailable,
    ConfigurationError,
    MessageTooLarge,
    PayloadValidationError,
    PubSubError,
    TransportError,
    UnknownEventType,
)
from pubsubpy.settings import SettingsOptions

EXIT_FAILED, EXIT_USAGE, EXIT_BROKER = 1, 2, 3
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "show_default": True}


def _given_on_command_line(*names: str) -> list[str]:
    """The options among ``names`` (parameter names) given explicitly on the command line."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return []
    return [f"--{name}" for name in names if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]


def _pubsubs(module: Any) -> dict[str, Any]:
    from pubsubpy.aio import AsyncPubSub

    return {name: value for name, value in sorted(vars(module).items())
            if not name.startswith("_") and isinstance(value, (PubSub, AsyncPubSub))}


def _import_app_module(app: str, module_name: str) -> Any:
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, ".")
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # an ImportError, or whatever the module raised while importing
        raise ConfigurationError(f"--app {app}: cannot import module {module_name!r} (working directory "
                                 f"{os.getcwd()}): {type(exc).__name__}: {exc}") from None


def _load_app(app: str | None, url: str | None, exchange: str | None, service: str | None) -> PubSub:
    options: SettingsOptions = {}
    if exchange is not None:
        options["model_exchange"] = exchange
    if service is not None:
        options["service_name"] = service
    if app:
        clashing = _given_on_command_line("url", "exchange", "service")
        if clashing:
            raise click.UsageError(f"{' and '.join(clashing)} cannot be used with --app: the PubSub that --app "
                                   f"names brings its own settings (drop {', '.join(clashing)}, or --app)")
        module_name, _, attribute = app.partition(":")
        module = _import_app_module(app, module_name)
        found = _pubsubs(module)
        if attribute:
            if not hasattr(module, attribute):
                others = f"; it has {', '.join(f'{module_name}:{n}' for n in found)}" if found else ""
                raise ConfigurationError(f"--app {app}: module {module_name} has no attribute {attribute!r}{others}")
            value = getattr(module, attribute)
            from pubsubpy.aio import AsyncPubSub

            if isinstance(value, AsyncPubSub):
                return value.sync  # the same subscriptions and settings; the commands wait on threads
            if not isinstance(value, PubSub):
                raise ConfigurationError(f"--app {app}: {attribute} is a {type(value).__name__}, "
                                         "not a PubSub or an AsyncPubSub")
            return value
        default = pubsubpy.get_default()
        if found and not all(value is default for value in found.values()):
            choices = ", ".join(f"--app {module_name}:{name}" for name in found)
            raise ConfigurationError(f"--app {app}: name the PubSub to use: {choices}")
        if not default.configured:
            raise ConfigurationError(f"--app {app}: module {module_name} defines no PubSub or AsyncPubSub object "
                                     f"and does not call pubsubpy.init(); use --app {module_name}:ATTRIBUTE")
        return default
    default = pubsubpy.get_default()
    if not default.configured:
        default.configure(amqp_url=url or None, **options)  # None: PUBSUBPY_URL, else memory://
    return default


def run_action(action: Callable[[], int | None]) -> None:
    """Run a command's work: exit with its code, or with the code of the error it raised."""
    try:
        code = action()
    except BrokerUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BROKER)
    except ConfigurationError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except (TransportError, PubSubError) as exc:
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(code or 0)


def _build(extra: Iterable[click.Command]) -> click.Group:
    connection = [
        click.option("--url", envvar="PUBSUBPY_URL", show_envvar=True,
                     help="amqp://user:pass@host:5672/vhost or memory:// (not with --app)"),
        click.option("--exchange", envvar="PUBSUBPY_EXCHANGE", show_envvar=True,
                     help="model exchange (default: models; not with --app)"),
        click.option("--service", envvar="PUBSUBPY_SERVICE", show_envvar=True,
                     help="service name: names its queues (not with --app)"),
        click.option("--app", "app_path", envvar="PUBSUBPY_APP", show_envvar=True,
                     help="module:attribute of your PubSub (or AsyncPubSub) to import, with its handlers; "
                          "a module alone if it calls pubsubpy.init()"),
    ]

    def with_connection(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(connection):
            func = option(func)
        return func

    @click.group(help="pubsubpy: typed model events over RabbitMQ.", context_settings=CONTEXT_SETTINGS)
    @click.version_option(pubsubpy.__version__)
    def cli() -> None:
        pass

    @cli.command(help="Publish, drain and dead-letter a few events (memory:// unless --url).")
    @click.option("--url", default="memory://", show_default=True, help="the broker to run the demo on")
    def demo(url: str) -> None:
        from pubsubpy.cli._demo import run_demo

        run_action(lambda: run_demo(url, click.echo))

    @cli.command(help="Create the exchange, queues and bindings for a service now (at deploy time). Only adds; "
                      "--prune also removes bindings pubsubpy made that this version no longer subscribes.")
    @with_connection
    @click.option("--prune", is_flag=True, help="list stale bindings, ask, remove them")
    @click.option("--dry-run", is_flag=True, help="with --prune: only list, change nothing")
    @click.option("--yes", is_flag=True, help="with --prune: do not ask")
    @click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
                  help="seconds for connecting, declaring and listing stale bindings")
    def declare(url: str | None, exchange: str | None, service: str | None, app_path: str | None, prune: bool,
                dry_run: bool, yes: bool, timeout: float) -> None:
        from pubsubpy.cli._pruning import declare_and_prune
        from pubsubpy.deadline import Deadline

        if (dry_run or yes) and not prune:
            raise click.UsageError("--dry-run and --yes go with --prune")

        def action() -> int:
            app = _load_app(app_path, url, exchange, service)
            deadline = Deadline.after(timeout)
            if not dry_run:
                app.declare(deadline=deadline)  # connecting and declaring, bounded; declaring again is a no-op
            return declare_and_prune(app, prune=prune, dry_run=dry_run, yes=yes, echo=click.echo,
                                     confirm=lambda q: click.confirm(q, default=False),
                                     timeout=max(deadline.remaining(), 0.1))

        run_action(action)

    @cli.command(help="Publish one event, validated like publish_model_event (needs its schema: --app); "
                      "prints the message id. A payload its schema refuses exits 2 with every field error.")
    @with_connection
    @click.argument("model")
    @click.argument("event")
    @click.argument("payload", metavar="JSON")
    @click.option("--version", "event_version", type=click.IntRange(min=1), default=None,
                  help="a registered version of the event (default: the newest)")
    def publish(url: str | None, exchange: str | None, service: str | None, app_path: str | None, model: str,
                event: str, payload: str, event_version: int | None) -> None:
        from pubsubpy.cli._demo import error_lines

        def action() -> int:
            try:
                obj = json.loads(payload)
            except ValueError as exc:
                click.echo(f"error: JSON is not valid JSON: {exc}", err=True)
                return EXIT_USAGE
            app = _load_app(app_path, url, exchange, service)
            try:
                message_id = app.publish_model_event(model, event, obj, version=event_version)
            except (PayloadValidationError, UnknownEventType, MessageTooLarge) as exc:
                lines = error_lines(exc)
                click.echo(f"error: {type(exc).__name__}: {lines[0]}", err=True)
                for line in lines[1:]:
                    click.echo(line, err=True)
                click.echo("nothing was sent", err=True)
                return EXIT_USAGE
            click.echo(message_id)
            return 0

        run_action(action)

    @cli.command(help="Show the service's exchange, bindings, queues (depth, consumers) and handlers.")
    @with_connection
    @click.option("--format", "fmt", type=click.Choice(["text", "json", "mermaid"]), default="text",
                  show_default=True, help="mermaid: a flowchart for docs (render it with mermaid-cli)")
    @click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
                  help="seconds for reading the broker, connecting included")
    def topology(url: str | None, exchange: str | None, service: str | None, app_path: str | None, fmt: str,
                 timeout: float) -> None:
        from pubsubpy.cli._topology_view import describe, render

        def action() -> None:
            app = _load_app(app_path, url, exchange, service)
            click.echo(render(describe(app, app.publishes, timeout=timeout), fmt))

        run_action(action)

    @cli.command(help="Consume everything outstanding for the service, then exit.")
    @with_connection
    @click.option("--max-messages", type=click.IntRange(min=1), default=None,
                  help="stop after this many messages (default: when the queue is empty)")
    @click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
                  help="seconds for the whole drain, connecting and declaring included")
    @click.option("--fail-on-dead-letters", is_flag=True, help="exit 1 if anything was dead-lettered")
    def drain(url: str | None, exchange: str | None, service: str | None, app_path: str | None,
              max_messages: int | None, timeout: float, fail_on_dead_letters: bool) -> None:
        def action() -> int:
            app = _load_app(app_path, url, exchange, service)
            shown = [0]

            def progress(result: pubsubpy.DrainResult) -> None:
                if result.messages - shown[0] >= 1000:
                    shown[0] = result.messages
                    click.echo(f"  ... {result.messages} messages", err=True)

            result = app.drain(max_messages=max_messages, timeout=timeout, on_message=progress)
            click.echo(str(result))
            return EXIT_FAILED if fail_on_dead_letters and result.dead_lettered else 0

        run_action(action)

    @cli.command(help="Consume until SIGTERM/SIGINT: a long-running worker (reconnects on its own).")
    @with_connection
    @click.option("--concurrency", type=click.IntRange(min=1, max=1000), default=1, show_default=True,
                  help="handlers running at once, on threads (for I/O-bound handlers)")
    @click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None,
                  help="serve Prometheus /metrics and a /healthz readiness probe on this port "
                       "(needs pubsubpy-events[prometheus])")
    @click.option("--backfill", default=None, help="first start of a service: replay the event log from this "
                                                   "far back (7d, or an ISO time), then go live with no gap")
    def worker(url: str | None, exchange: str | None, service: str | None, app_path: str | None,
               concurrency: int, metrics_port: int | None, backfill: str | None) -> None:
        from pubsubpy._worker import exit_code
        from pubsubpy.aio._worker import run_worker

        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

        def action() -> int:
            app = _load_app(app_path, url, exchange, service)
            server = None
            if metrics_port is not None:
                from pubsubpy.telemetry._server import serve_metrics

                server = serve_metrics(app, metrics_port)
            try:
                result = run_worker(app, concurrency, backfill)  # an event loop too, for async def handlers
            finally:
                if server is not None:
                    server.close()
            click.echo(str(result))
            return exit_code(result)

        run_action(action)

    from pubsubpy.cli._replay import register_replay_command

    register_replay_command(cli, with_connection, _load_app, run_action)

    @cli.group(help="Dead letters: list, show, replay, purge.", context_settings=CONTEXT_SETTINGS)
    def dlq() -> None:
        pass

    from pubsubpy.cli._dlq import register_dlq_commands

    register_dlq_commands(dlq, with_connection, _load_app, run_action)

    @cli.group(help="Schema contracts: lock the deployed schemas, check changes against them, export them.",
               context_settings=CONTEXT_SETTINGS)
    def schema() -> None:
        pass

    from pubsubpy.cli._schema import register_schema_commands

    register_schema_commands(schema, with_connection, _load_app, run_action)

    @cli.group(help="Ordered handlers: reset a key's stale guard.", context_settings=CONTEXT_SETTINGS)
    def ordered() -> None:
        pass

    from pubsubpy.cli._ordered import register_ordered_commands

    register_ordered_commands(ordered, with_connection, _load_app, run_action)

    for command in extra:
        cli.add_command(command)
    return cli


def build(extra: Iterable[click.Command] = ()) -> click.Group:
    """The ``pubsubpy`` command; ``extra`` adds commands (``manage.py pubsub`` adds relay and outbox)."""
    return _build(extra)
