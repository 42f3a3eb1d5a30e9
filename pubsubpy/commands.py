"""The ``pubsubpy`` command's click group: demo, declare, topology, drain, worker, dlq, schema.

Connection options are shared by every command and read from the environment
when not given: ``PUBSUBPY_URL``, ``PUBSUBPY_EXCHANGE``, ``PUBSUBPY_SERVICE``.
``--app module[:attribute]`` imports your handlers (and a ``PubSub`` instance,
or the module's ``init()`` call). Exit codes: 0 done, 1 the work failed
(e.g. messages dead-lettered with ``--fail-on-dead-letters``), 2 usage or
configuration error, 3 broker unreachable.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

import pubsubpy
from pubsubpy.app import PubSub
from pubsubpy.errors import BrokerUnavailable, ConfigurationError, PubSubError, TransportError
from pubsubpy.settings import SettingsOptions

EXIT_FAILED, EXIT_USAGE, EXIT_BROKER = 1, 2, 3


def _load_app(app: str | None, url: str | None, exchange: str | None, service: str | None) -> PubSub:
    options: SettingsOptions = {}
    if exchange is not None:
        options["model_exchange"] = exchange
    if service is not None:
        options["service_name"] = service
    if app:
        module_name, _, attribute = app.partition(":")
        sys.path.insert(0, ".")
        module = importlib.import_module(module_name)
        if attribute:
            found = getattr(module, attribute)
            from pubsubpy.aio import AsyncPubSub

            if isinstance(found, AsyncPubSub):
                return found.sync  # the same subscriptions and settings; the commands wait on threads
            if not isinstance(found, PubSub):
                raise ConfigurationError(f"--app {app}: {attribute} is a {type(found).__name__}, "
                                         "not a PubSub or an AsyncPubSub")
            return found
    default = pubsubpy.get_default()
    if not default.configured:
        default.configure(amqp_url=url or None, **options)  # None: PUBSUBPY_URL, else memory://
    return default


def _run(action: Callable[[], int | None]) -> None:
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


def _build() -> click.Group:
    connection = [
        click.option("--url", envvar="PUBSUBPY_URL", help="amqp://user:pass@host:5672/vhost or memory://"),
        click.option("--exchange", envvar="PUBSUBPY_EXCHANGE", help="model exchange (default: models)"),
        click.option("--service", envvar="PUBSUBPY_SERVICE", help="service name: names its queues"),
        click.option("--app", "app_path", envvar="PUBSUBPY_APP", help="module[:PubSub attribute] to import"),
    ]

    def with_connection(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(connection):
            func = option(func)
        return func

    @click.group(help="pubsubpy: typed model events over RabbitMQ.")
    @click.version_option(pubsubpy.__version__)
    def cli() -> None:
        pass

    @cli.command(help="Publish, drain and dead-letter a few events (memory:// unless --url).")
    @click.option("--url", default="memory://", show_default=True)
    def demo(url: str) -> None:
        from pubsubpy.demo import run_demo

        _run(lambda: run_demo(url, click.echo))

    @cli.command(help="Create the exchange, queues and bindings for a service now (at deploy time). Only adds; "
                      "--prune also removes bindings pubsubpy made that this version no longer subscribes.")
    @with_connection
    @click.option("--prune", is_flag=True, help="list stale bindings, ask, remove them")
    @click.option("--dry-run", is_flag=True, help="with --prune: only list, change nothing")
    @click.option("--yes", is_flag=True, help="with --prune: do not ask")
    def declare(url: str | None, exchange: str | None, service: str | None, app_path: str | None, prune: bool,
                dry_run: bool, yes: bool) -> None:
        from pubsubpy.pruning import declare_and_prune

        if (dry_run or yes) and not prune:
            raise click.UsageError("--dry-run and --yes go with --prune")
        _run(lambda: declare_and_prune(_load_app(app_path, url, exchange, service), prune=prune, dry_run=dry_run,
                                       yes=yes, echo=click.echo, confirm=lambda q: click.confirm(q, default=False)))

    @cli.command(help="Show the service's exchange, bindings, queues (depth, consumers) and handlers.")
    @with_connection
    @click.option("--format", "fmt", type=click.Choice(["text", "json", "mermaid"]), default="text",
                  show_default=True, help="mermaid: a flowchart for docs (render it with mermaid-cli)")
    @click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
    def topology(url: str | None, exchange: str | None, service: str | None, app_path: str | None, fmt: str,
                 timeout: float) -> None:
        from pubsubpy.topology_view import describe, render

        _run(lambda: click.echo(render(describe(_load_app(app_path, url, exchange, service), timeout=timeout), fmt)))

    @cli.command(help="Consume everything outstanding for the service, then exit.")
    @with_connection
    @click.option("--max-messages", type=click.IntRange(min=1), default=None)
    @click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True)
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

        _run(action)

    @cli.command(help="Consume until SIGTERM/SIGINT: a long-running worker (reconnects on its own).")
    @with_connection
    @click.option("--concurrency", type=click.IntRange(min=1, max=1000), default=1, show_default=True,
                  help="handlers running at once, on threads (for I/O-bound handlers)")
    @click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None,
                  help="serve Prometheus /metrics and a /healthz readiness probe on this port "
                       "(needs pubsubpy-events[prometheus])")
    def worker(url: str | None, exchange: str | None, service: str | None, app_path: str | None,
               concurrency: int, metrics_port: int | None) -> None:
        from pubsubpy.aio.worker import run_worker
        from pubsubpy.worker import exit_code

        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

        def action() -> int:
            app = _load_app(app_path, url, exchange, service)
            server = None
            if metrics_port is not None:
                from pubsubpy.telemetry.server import serve_metrics

                server = serve_metrics(app, metrics_port)
            try:
                result = run_worker(app, concurrency)  # an event loop too, for async def handlers
            finally:
                if server is not None:
                    server.close()
            click.echo(str(result))
            return exit_code(result)

        _run(action)

    @cli.group(help="Dead letters: list, show, replay, purge.")
    def dlq() -> None:
        pass

    from pubsubpy.dlq_cli import register_dlq_commands

    register_dlq_commands(dlq, with_connection, _load_app, _run)

    @cli.group(help="Schema contracts: lock the deployed schemas, check changes against them, export them.")
    def schema() -> None:
        pass

    from pubsubpy.schema_cli import register_schema_commands

    register_schema_commands(schema, with_connection, _load_app, _run)

    return cli


def build() -> click.Group:
    return _build()
