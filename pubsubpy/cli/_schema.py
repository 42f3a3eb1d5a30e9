"""``pubsubpy schema lock|check|export`` (and ``manage.py pubsub_schema``): the CI gate for event schemas.

``lock`` writes ``pubsubpy.lock.json``; ``check`` exits 1 with one line per
breaking change (see ``pubsubpy.schemas._lockfile``); ``export --format
jsonschema`` prints every registered schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pubsubpy.app import PubSub
from pubsubpy.errors import ConfigurationError
from pubsubpy.schemas._asyncapi import asyncapi_document
from pubsubpy.schemas._base import ModelEvent
from pubsubpy.schemas._catalogue import catalogue_html
from pubsubpy.schemas._lockfile import DEFAULT_LOCK, check, read_lock, write_lock
from pubsubpy.schemas._registry import SchemaRegistry

__all__ = ["check_lock", "export_asyncapi", "export_jsonschema", "register_schema_commands", "write_docs"]

EXIT_BREAKING = 1


def export_jsonschema(registry: SchemaRegistry) -> str:
    out = {f"{s.event_type()}" + (f" v{s.__pubsub_version__}" if s.__pubsub_version__ > 1 else ""):
           {"routing_key": s.routing_key(), "version": s.__pubsub_version__,
            "compatibility": s.__pubsub_compatibility__, "schema": s.model_json_schema()} for s in registry}
    return json.dumps(out, indent=2, sort_keys=True)


def export_asyncapi(app: PubSub, publishes: list[type[ModelEvent]] | None = None) -> str:
    """The service's AsyncAPI 3.0 document as JSON (``publishes``: default ``app.publishes``, else nothing)."""
    settings = app.settings
    sends = publishes if publishes is not None else (app.publishes or [])
    document = asyncapi_document(settings.service_name or "service", settings.model_exchange, settings.amqp_url,
                                 app.registry, sends, app.router.patterns)
    return json.dumps(document, indent=2)


def write_docs(own: str, inputs: list[str], out: str) -> Path:
    """The catalogue page from this service's AsyncAPI document and other services' (``inputs``)."""
    documents = [json.loads(own)]
    for path in inputs:
        try:
            documents.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"--input {path}: not a readable AsyncAPI JSON document ({exc})") from None
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    page = target / "index.html"
    page.write_text(catalogue_html(documents))
    return page


def check_lock(registry: SchemaRegistry, path: str, echo: Callable[[str], None]) -> int:
    """Print the verdict; returns the exit code (1 on a breaking change)."""
    if not Path(path).exists():
        raise ConfigurationError(f"no lock file at {path}: run `pubsubpy schema lock` and commit it")
    try:
        locked = read_lock(path)
    except (ValueError, KeyError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
    problems = check(locked, registry)
    for line in problems:
        echo(line)
    if problems:
        echo(f"{len(problems)} breaking change(s) against {path}")
        return EXIT_BREAKING
    echo(f"compatible with {path} ({len(locked)} locked version(s), {len(registry)} now)")
    return 0


def register_schema_commands(group: click.Group, with_connection: Callable[[Any], Any],
                             load_app: Callable[..., PubSub], run: Callable[[Callable[[], int | None]], None]) -> None:
    @group.command(help="Write the lock file: every (model, event, version) with its JSON Schema.")
    @with_connection
    @click.option("--out", default=DEFAULT_LOCK, show_default=True, help="where to write the lock file")
    def lock(url: str | None, exchange: str | None, service: str | None, app_path: str | None, out: str) -> None:
        def action() -> None:
            count = write_lock(load_app(app_path, url, exchange, service).registry, out)
            click.echo(f"wrote {out}: {count} schema version(s)")

        run(action)

    @group.command(help="Compare the current schemas with the lock; exit 1 on a breaking change (for CI).")
    @with_connection
    @click.option("--lock", "lock_path", default=DEFAULT_LOCK, show_default=True,
                  help="the lock file to check against")
    def check(url: str | None, exchange: str | None, service: str | None, app_path: str | None,
              lock_path: str) -> None:
        run(lambda: check_lock(load_app(app_path, url, exchange, service).registry, lock_path, click.echo))

    @group.command(help="Print the registered schemas.")
    @with_connection
    @click.option("--format", "fmt", type=click.Choice(["jsonschema", "asyncapi"]), default="jsonschema",
                  show_default=True, help="asyncapi: an AsyncAPI 3.0 document of the service")
    def export(url: str | None, exchange: str | None, service: str | None, app_path: str | None, fmt: str) -> None:
        def action() -> None:
            app = load_app(app_path, url, exchange, service)
            click.echo(export_asyncapi(app) if fmt == "asyncapi" else export_jsonschema(app.registry))

        run(action)

    @group.command(help="Write a static HTML event catalogue (one page, no server); --input adds other services' "
                        "`schema export --format asyncapi` documents, for who publishes and who subscribes.")
    @with_connection
    @click.option("--out", required=True, help="directory for index.html")
    @click.option("--input", "inputs", multiple=True, help="another service's AsyncAPI JSON (repeatable)")
    def docs(url: str | None, exchange: str | None, service: str | None, app_path: str | None, out: str,
             inputs: tuple[str, ...]) -> None:
        def action() -> None:
            page = write_docs(export_asyncapi(load_app(app_path, url, exchange, service)), list(inputs), out)
            click.echo(f"wrote {page}")

        run(action)
