"""``Settings``: everything ``init()`` / ``PubSub(...)`` accepts, validated up front.

A bad value is a ``ConfigurationError`` naming the field and the value. The
broker URL's password never appears in ``repr``, logs or errors: use
``display_url``.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from typing_extensions import TypedDict

from pubsubpy.errors import ConfigurationError

__all__ = ["Settings", "SettingsOptions", "redact_url"]

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


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


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    amqp_url: str = Field(default="memory://", repr=False)
    model_exchange: str = "models"
    service_name: str | None = None
    require_schemas: bool = True
    max_attempts: int = Field(default=3, ge=1, le=100)
    retry_delay: float = Field(default=1.0, ge=0, le=86_400, description="seconds before the first retry")
    retry_delay_max: float = Field(default=300.0, ge=0, le=86_400)
    prefetch: int = Field(default=1000, ge=1, le=65_535)
    max_message_size: int = Field(default=1_048_576, ge=1, le=128 * 1_048_576)
    max_json_depth: int = Field(default=64, ge=1, le=128, description="deeper bodies are a decode_error")
    shutdown_timeout: float = Field(default=30.0, gt=0, le=3600, description="worker: in-flight handlers' grace")
    unknown_key_window: float = Field(
        default=900.0, ge=0, le=7 * 86_400,
        description="seconds a key no handler here subscribes goes back for another version before unknown_event")
    queue_type: Literal["classic", "quorum"] = "classic"
    delivery_limit: int = Field(default=20, ge=1, description="quorum queues: broker-side redelivery cap")
    on_unroutable: Literal["ignore", "warn", "raise"] = "warn"
    connect_timeout: float = Field(default=10.0, gt=0, le=600)
    heartbeat: int = Field(default=60, ge=0, le=3600)
    blocked_connection_timeout: float = Field(default=30.0, gt=0, le=3600)
    confirm_timeout: float = Field(default=30.0, gt=0, le=3600)
    connection_attempts: int = Field(default=3, ge=1, le=100)
    retry_connect_delay: float = Field(default=0.5, ge=0, le=60)
    telemetry: bool = Field(default=True, description="trace and measure through OpenTelemetry when "
                            "opentelemetry-api is installed (pubsubpy[otel]); False: no spans, no metrics")

    @field_validator("amqp_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in ("amqp", "amqps", "memory"):
            raise ValueError(
                f"amqp_url {redact_url(value)!r} must start with amqp://, amqps:// or memory://"
            )
        return value

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
        """Validate ``options``; a failure is a ``ConfigurationError`` naming each bad field."""
        try:
            return cls(**options)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                + ("" if "amqp_url" in err["loc"] else f" (got {err.get('input')!r})")
                for err in exc.errors()
            )
            raise ConfigurationError(f"invalid pubsubpy settings: {problems}") from None

    @property
    def display_url(self) -> str:
        return redact_url(self.amqp_url)

    @property
    def scheme(self) -> str:
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
    prefetch: int
    max_message_size: int
    max_json_depth: int
    shutdown_timeout: float
    unknown_key_window: float
    queue_type: Literal["classic", "quorum"]
    delivery_limit: int
    on_unroutable: Literal["ignore", "warn", "raise"]
    connect_timeout: float
    heartbeat: int
    blocked_connection_timeout: float
    confirm_timeout: float
    connection_attempts: int
    retry_connect_delay: float
    telemetry: bool
