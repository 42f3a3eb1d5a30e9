"""``Settings``: everything ``init()`` / ``PubSub(...)`` accepts, validated up front.

A bad value is a ``ConfigurationError`` naming the field and the value. The
broker URL's password never appears in ``repr``, logs or errors: use
``display_url``.

``pubsubpy._credentials.resolve_url`` picks the URL when none is given
(``PUBSUBPY_URL``, else ``memory://``) and fills in a password from
``PUBSUBPY_PASSWORD_FILE``.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import warnings
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from typing_extensions import TypedDict

from pubsubpy.errors import ConfigurationError

__all__ = ["InsecureTLSWarning", "Settings", "SettingsOptions", "has_password", "memory_name", "redact_url",
           "split_urls", "url_scheme"]

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_MEMORY_URL = re.compile(r"^memory://(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,99})?/?$", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/vh`` -> ``amqp://user:***@host/vh``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def split_urls(amqp_url: str) -> list[str]:
    """The comma-separated URLs of ``amqp_url`` (failover), as the transport splits them."""
    return [url.strip() for url in amqp_url.split(",") if url.strip()]


def url_scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def memory_name(url: str) -> str | None:
    """The broker name of ``memory://NAME`` (every ``PubSub`` naming it in a process shares that broker);
    None for plain ``memory://`` (a private broker) and for any other URL."""
    match = _MEMORY_URL.match(url)
    return match.group("name") if match else None


def has_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def _caller_level() -> int:
    """``warnings.warn``'s stacklevel for the first frame outside pubsubpy and pydantic: the user's call."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("pubsubpy", "pydantic"):
        frame, level = frame.f_back, level + 1
    return level


class InsecureTLSWarning(UserWarning):
    """Emitted for each ``Settings`` made with ``tls_verify=False``: the connection is encrypted, but the broker
    is not authenticated, so anyone between the client and the broker can pose as it. Filter it in a test
    set-up with ``warnings.simplefilter("ignore", InsecureTLSWarning)``; in production set ``tls_ca_file``."""


def _readable_file(field: str, path: str | None) -> str | None:
    """``path`` if it names a file this process can read; else a ValueError naming ``field`` and the fix."""
    if path is None:
        return None
    if not path:
        raise ValueError(f"{field} is an empty string: give the path of a PEM file, or leave it unset (None)")
    if not os.path.exists(path):
        raise ValueError(f"{field} {path!r} does not exist: give the path of a PEM file")
    if os.path.isdir(path):
        raise ValueError(f"{field} {path!r} is a directory: give the path of a PEM file in it")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{field} {path!r} cannot be read ({exc.strerror or type(exc).__name__}): make it "
                         "readable by the user pubsubpy runs as") from None
    return path


# Keyword arguments of init() / PubSub(...) that are not Settings fields: a typo of one is suggested too.
_OTHER_ARGUMENTS = ("schemas", "transport", "inbox", "publishes", "middleware")


def close_option(name: str, known: Iterable[str]) -> str | None:
    """The known option ``name`` most likely misspells (difflib), or None."""
    matches = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _unknown_option(name: str) -> str:
    """An unknown option, and the one it probably misspells (its value is never echoed: it may be a URL)."""
    guess = close_option(name, [*Settings.model_fields, *_OTHER_ARGUMENTS])
    return f"{name}: unknown option" + (f" (did you mean {guess!r}?)" if guess else
                                        " (the Settings reference lists every option)")


class Settings(BaseModel):
    """Every option of a ``PubSub``, validated when it is made (frozen afterwards).

    ``init()``, ``PubSub(...)`` and ``AsyncPubSub(...)`` build one from their keyword arguments; read it back
    as ``app.settings``. Unknown options are refused. Use ``Settings.build(**options)`` to get a
    ``ConfigurationError`` (naming each bad field and value, never the URL's password) instead of pydantic's
    ``ValidationError``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    amqp_url: str = Field(default="memory://", repr=False)
    """The broker: ``amqp://user:password@host:5672/vhost``, ``amqps://...`` (TLS, port 5671 by default), or
    ``memory://`` (the in-process broker; ``memory://NAME`` is shared by every ``PubSub`` naming it). Several
    comma-separated URLs are tried in order (failover). Not given: ``$PUBSUBPY_URL``, else ``memory://``; a URL
    naming a user without a password takes it from the file ``$PUBSUBPY_PASSWORD_FILE``. The password never
    appears in reprs, logs or errors (``display_url``)."""

    model_exchange: str = "models"
    """The topic exchange events are published to and bound from (durable). 1-200 characters, not
    starting with ``amq.``."""

    service_name: str | None = None
    """Names this service's queues (``<service>.events``, ``<service>.dead-letters``...): every process
    of one service shares them and competes for their messages, each service gets its own copy of every event.
    Required to drain, run a worker, declare or read dead letters; a publish-only process may leave it unset.
    1-100 letters, digits, ``_``, ``.`` or ``-``."""

    require_schemas: bool = True
    """``False`` allows publishing and handling schema-less events (plain dicts, handlers annotated
    ``dict``) for (model, event) pairs with no registered ``ModelEvent``."""

    max_attempts: int = Field(default=3, ge=1, le=100)
    """How many times a handler runs on one message before it is dead-lettered as ``handler_error``
    (``@subscribe(..., max_attempts=N)`` overrides it per handler)."""

    retry_delay: float = Field(default=1.0, ge=0, le=86_400, description="seconds before the first retry")
    """Seconds before a failed handler's first retry; each further retry waits twice as long, up to
    ``retry_delay_max``. Deferrals of unknown keys use it too (at least 0.1 s, doubling up to a minute)."""

    retry_delay_max: float = Field(default=300.0, ge=0, le=86_400)
    """The longest pause between two retries, in seconds (exponential backoff stops growing here)."""

    pause_probe_delay: float = Field(default=5.0, gt=0, le=3600)
    """Seconds a paused consumer waits before its first probe (a handler raised one of its ``pause_on``
    exceptions: its dependency is down); each failed probe doubles it, up to ``pause_probe_delay_max``."""

    pause_probe_delay_max: float = Field(default=60.0, gt=0, le=86_400)
    """The longest wait between two probes of a paused consumer, in seconds."""

    breaker_failure_share: float = Field(default=0.0, ge=0, le=1)
    """The service-wide breaker: pause the consumer, as ``pause_on`` does, when at least this share of the
    messages of the last ``breaker_window`` seconds failed in a handler (retried or dead-lettered by a
    handler error), once ``breaker_min_runs`` were handled in it. ``0`` (the default): off; ``0.5`` is a
    reasonable start."""

    breaker_window: float = Field(default=30.0, gt=0, le=3600)
    """The window, in seconds, over which the service-wide breaker counts failures."""

    breaker_min_runs: int = Field(default=20, ge=1, le=1_000_000)
    """Messages the window must hold before the service-wide breaker may trip."""

    retry_jitter: bool = True
    """Spread retries: each draws its delay from four retry queues per backoff step, from the step's delay
    down to 5/8 of it (``d * (1 - k/8)``, ``k`` = 0..3), so a burst that failed together does not come back
    together. ``False``: exactly the step's delay (one queue per step)."""

    consumer_timeout: float = Field(default=1800.0, gt=0, le=7 * 86_400)
    """The broker's ``consumer_timeout`` in seconds (RabbitMQ's default is 30 minutes): a message unacked for
    longer closes the channel. An ``ordered=True`` handler's retries wait in the message's lane, unacked, so
    they stop at half of it: the message is then dead-lettered and its key goes on."""

    prefetch: int = Field(default=1000, ge=1, le=65_535)
    """How many unacknowledged messages the broker sends a consumer ahead (``basic.qos``). Unset, a
    worker (``run()``, ``pubsubpy worker``) prefetches ``4 x concurrency`` instead."""

    max_message_size: int = Field(default=1_048_576, ge=1, le=128 * 1_048_576)
    """The largest body in bytes (default 1 MiB): checked before sending (``MessageTooLarge``) and on
    receipt (dead letter ``too_large``, never parsed)."""

    max_json_depth: int = Field(default=64, ge=1, le=128, description="deeper bodies are a decode_error")
    """The deepest JSON nesting accepted, checked before any parser: deeper is a
    ``PayloadValidationError`` when publishing and a ``decode_error`` dead letter when consuming (at most 128,
    below pydantic-core's own limit, so the verdict is the same on every supported Python)."""

    shutdown_timeout: float = Field(default=30.0, gt=0, le=3600, description="worker: in-flight handlers' grace")
    """Seconds a stopping worker, or a drain at its deadline, waits for running handlers to finish;
    past it, or on a second signal, it exits at once (code 1) and their messages go back unacked."""

    unknown_key_window: float = Field(
        default=900.0, ge=0, le=7 * 86_400,
        description="seconds a key no handler here subscribes goes back for another version before unknown_event")
    """Seconds a message whose routing key no handler here subscribes (or whose schema is not
    registered here) is deferred through the retry queues, waiting for another version of the service during a
    rolling deploy, before it is dead-lettered as ``unknown_event``. ``0`` dead-letters at once."""

    queue_type: Literal["classic", "quorum"] = "classic"
    """``"quorum"`` for clusters: replicated service, retry and dead-letter queues, dead-lettering at
    least once. ``"classic"``: single-node queues (the dead-letter and retry queues lazy before RabbitMQ 3.12)."""

    delivery_limit: int = Field(default=20, ge=1, description="quorum queues: broker-side redelivery cap")
    """Quorum queues: the broker-side cap on redeliveries of one message (``x-delivery-limit``), a
    backstop against a message that kills its consumer every time; past it the broker dead-letters it as
    ``delivery_limit``. What counts as a delivery depends on the RabbitMQ version (see Supported versions)."""

    shards: int = Field(default=0, ge=0, le=1024)
    """Ordered subscriptions across worker processes: their events go through ``<service>.shards`` (an
    ``x-consistent-hash`` exchange on the ordering key) into ``shards`` queues ``<service>.shard.N``, each
    consumed by one live worker at a time. 0 (the default): ordered subscriptions share the service queue,
    and keep their order within one worker process only. See the ordering page."""

    shards_version: int = Field(default=1, ge=1, le=1000)
    """The generation of the shard queues. To change ``shards``, raise it by one with the new count: ``declare``
    adds the new generation (``<service>.shards.v2``, ``<service>.shard.v2.N``) and moves the ordered patterns'
    bindings to it, and workers finish the previous generation's queues before they consume the new ones, so
    every key keeps its order (see the ordering page)."""

    event_log: str | None = Field(default=None, pattern=r"^[1-9][0-9]{0,5}(Y|M|D|h|m|s)$")
    """Keep every event published to ``model_exchange`` in the stream ``<exchange>.log`` for this long (RabbitMQ's
    ``x-max-age``: ``"7D"``, ``"12h"``, ``"30m"``; units ``Y M D h m s``), so a service that starts late, or
    rebuilds a read model, replays its history (``replay()``, ``pubsubpy replay``, ``pubsubpy worker
    --backfill``). Set on the publishing side: the first publish or ``declare()`` declares the stream and binds
    it with ``#``; from then on a publish is confirmed only once the log stored it too. ``None`` (the default):
    no log. See the replay how-to for sizing."""

    event_log_bytes: int | None = Field(default=None, ge=1_000_000)
    """A cap on the event log's size on disk, in bytes (``x-max-length-bytes``): the oldest events go first once
    it is reached, whatever their age. ``None``: age alone (``event_log``) bounds it."""

    on_unroutable: Literal["ignore", "warn", "raise"] = "warn"
    """What a publish does when no queue is bound for its routing key: ``"ignore"``, ``"warn"`` (log
    a warning) or ``"raise"`` (``UnroutableMessage``)."""

    connect_timeout: float = Field(default=10.0, gt=0, le=600)
    """Seconds to open a connection (socket, TLS and AMQP handshakes), per URL and attempt."""

    heartbeat: int = Field(default=60, ge=0, le=3600)
    """AMQP heartbeat interval in seconds proposed to the broker (``0`` disables heartbeats)."""

    blocked_connection_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds a connection may stay blocked by the broker's flow control (a memory or disk
    alarm) before the operation is given up as ``OperationTimeout``."""

    confirm_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds to wait for the broker's publisher confirm. Past it ``ConfirmTimeout`` is raised:
    the outcome is unknown (the message may or may not be stored)."""

    connection_attempts: int = Field(default=3, ge=1, le=100)
    """Connection attempts in all (each URL once per round), pausing ``retry_connect_delay x
    round`` between rounds. An operation whose connection is lost is retried as often, all within the call's
    bound: its ``timeout`` when it takes one, else ``connect_timeout x len(urls) + confirm_timeout`` (a publish,
    ``declare()``, and the dead-letter calls without ``timeout``); a CLI ``drain`` its ``--timeout``."""

    retry_connect_delay: float = Field(default=0.5, ge=0, le=60)
    """Seconds of pause between connection rounds, multiplied by the round number."""

    telemetry: bool = Field(default=True, description="trace and measure through OpenTelemetry when "
                            "opentelemetry-api is installed (pubsubpy-events[otel]); False: no spans, no metrics")
    """Trace and measure through OpenTelemetry when ``opentelemetry-api`` is installed
    (``pubsubpy-events[otel]``); nothing is recorded until the application installs the SDK. ``False``: no spans, no
    metrics, no cost."""

    tls_ca_file: str | None = Field(default=None, description="amqps://: PEM file of the CA(s) that signed the "
                                    "broker's certificate; None: the system's default CAs")
    """``amqps://`` only: the PEM file of the CA(s) that signed the broker's certificate. Unset: the
    system's trusted CAs."""

    tls_cert_file: str | None = Field(default=None, description="amqps://: PEM client certificate (with "
                                      "tls_key_file), for brokers that ask for one and for auth='external'")
    """``amqps://`` only: a PEM client certificate (with ``tls_key_file``; both or neither), for brokers
    that ask for one, and for ``auth="external"``. Read at each connection, so renewed files are used from the
    next reconnect."""

    tls_key_file: str | None = Field(default=None, description="amqps://: PEM private key of tls_cert_file")
    """``amqps://`` only: the (unencrypted) PEM private key of ``tls_cert_file``."""

    tls_verify: bool = Field(default=True, description="False: do not check the broker's certificate nor its "
                             "host name (warns: open to a man-in-the-middle)")
    """``False`` skips checking the broker's certificate and host name: still encrypted, but open to a
    man-in-the-middle; each ``Settings`` made so emits an ``InsecureTLSWarning``. For test set-ups only; prefer
    ``tls_ca_file`` with the test CA."""

    auth: Literal["plain", "external"] = Field(default="plain", description="plain: user and password from the "
                                               "URL; external: the client certificate's user (amqps:// only)")
    """``"plain"``: the user and password from the URL. ``"external"``: log in as the client certificate's
    user (RabbitMQ's EXTERNAL mechanism; ``amqps://`` with ``tls_cert_file``, no password in the URL)."""


    @field_validator("amqp_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in ("amqp", "amqps", "memory"):
            raise ValueError(
                f"amqp_url {redact_url(value)!r} must start with amqp://, amqps:// or memory://"
            )
        if scheme == "memory" and not _MEMORY_URL.match(value):
            raise ValueError(f"amqp_url {value!r} must be memory:// (a private in-process broker) or memory://NAME "
                             "(NAME: 1-100 letters, digits, '_', '.', '-'; every PubSub naming it in this process "
                             "shares one broker)")
        if any("ssl_options" in parse_qs(urlsplit(url).query) for url in split_urls(value)):
            raise ValueError(f"amqp_url {redact_url(value)!r} sets ssl_options in its query, which pubsubpy does "
                             "not use: give the settings tls_ca_file, tls_cert_file, tls_key_file instead")
        return value

    @field_validator("tls_ca_file", "tls_cert_file", "tls_key_file")
    @classmethod
    def _check_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _readable_file(info.field_name or "file", value)

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            missing = "tls_key_file" if self.tls_key_file is None else "tls_cert_file"
            given = "tls_key_file" if missing == "tls_cert_file" else "tls_cert_file"
            raise ValueError(f"{given} is set but {missing} is not: a client certificate needs both the certificate "
                             "(tls_cert_file) and its private key (tls_key_file)")
        if self.auth == "external" and self.tls_cert_file is None:
            raise ValueError("auth='external' logs in with a client certificate: set tls_cert_file and tls_key_file "
                             "(the broker's user is the certificate's CN)")
        needs_tls = [name for name in ("tls_ca_file", "tls_cert_file", "tls_key_file")
                     if getattr(self, name) is not None]
        needs_tls += ["tls_verify=False"] * (not self.tls_verify) + ["auth='external'"] * (self.auth == "external")
        plain = [url for url in split_urls(self.amqp_url) if url_scheme(url) != "amqps"]
        if needs_tls and plain:
            verb = "needs" if len(needs_tls) == 1 else "need"
            raise ValueError(f"{', '.join(needs_tls)} {verb} a TLS connection but amqp_url {redact_url(plain[0])!r} is "
                             "not amqps://: use amqps://host:5671/... (the broker's TLS port)")
        if self.auth == "external" and any(has_password(url) for url in split_urls(self.amqp_url)):
            raise ValueError("auth='external' logs in as the client certificate's user: remove user:password from "
                             f"amqp_url {self.display_url!r}")
        if not self.tls_verify:
            warnings.warn(f"tls_verify=False: the broker's certificate and host name are not checked, so the "
                          f"connection to {self.display_url} is encrypted but open to a man-in-the-middle; set "
                          "tls_ca_file to the CA that signed the broker's certificate instead",
                          InsecureTLSWarning, stacklevel=_caller_level())
        return self

    @field_validator("model_exchange")
    @classmethod
    def _check_exchange(cls, value: str) -> str:
        if not value or value.startswith("amq.") or len(value) > 200:
            raise ValueError(f"model_exchange {value!r} must be 1-200 characters and not start with 'amq.'")
        return value

    @field_validator("service_name")
    @classmethod
    def _check_service(cls, value: str | None) -> str | None:
        if value is not None and not _SERVICE_NAME.match(value):
            raise ValueError(
                f"service_name {value!r} must be 1-100 characters of letters, digits, '_', '.', '-'"
            )
        return value

    @classmethod
    def build(cls, **options: Any) -> Settings:
        """Validate ``options`` into a ``Settings``.

        Args:
            **options: the fields above, by name.

        Raises:
            ConfigurationError: a field is unknown or has a bad value; the message names each one and the
                value given (never the URL, which may hold a password).
        """
        try:
            return cls(**options)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                # the URL (its password) is never echoed; a cross-field error's input is every option, URL included
                + ("" if "amqp_url" in err["loc"] or not err["loc"] else f" (got {err.get('input')!r})")
                if err["type"] != "extra_forbidden" else _unknown_option(str(err["loc"][0]))
                for err in exc.errors()
            )
            raise ConfigurationError(f"invalid pubsubpy settings: {problems}") from None

    @property
    def display_url(self) -> str:
        """``amqp_url`` with the password replaced by ``***``: what logs, reprs and errors show."""
        return redact_url(self.amqp_url)

    @property
    def scheme(self) -> str:
        """The URL's scheme: ``"amqp"``, ``"amqps"`` or ``"memory"`` (of the first URL of a failover list)."""
        return self.amqp_url.split("://", 1)[0].lower()

    def __repr_args__(self) -> Any:
        yield "amqp_url", self.display_url
        yield from super().__repr_args__()


class SettingsOptions(TypedDict, total=False):
    """The keyword arguments ``init()`` and ``PubSub(...)`` take besides ``amqp_url``: the fields of
    ``Settings`` (defaults and bounds there), typed so IDEs and mypy check them. A test keeps both in step."""

    model_exchange: str
    service_name: str | None
    require_schemas: bool
    max_attempts: int
    retry_delay: float
    retry_delay_max: float
    pause_probe_delay: float
    pause_probe_delay_max: float
    breaker_failure_share: float
    breaker_window: float
    breaker_min_runs: int
    retry_jitter: bool
    consumer_timeout: float
    prefetch: int
    max_message_size: int
    max_json_depth: int
    shutdown_timeout: float
    unknown_key_window: float
    queue_type: Literal["classic", "quorum"]
    delivery_limit: int
    shards: int
    shards_version: int
    event_log: str | None
    event_log_bytes: int | None
    on_unroutable: Literal["ignore", "warn", "raise"]
    connect_timeout: float
    heartbeat: int
    blocked_connection_timeout: float
    confirm_timeout: float
    connection_attempts: int
    retry_connect_delay: float
    telemetry: bool
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None
    tls_verify: bool
    auth: Literal["plain", "external"]
