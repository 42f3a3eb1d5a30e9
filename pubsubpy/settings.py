"""``Settings``: everything ``init()`` / ``PubSub(...)`` accepts, validated up front.

A bad value is a ``ConfigurationError`` naming the field and the value. The
broker URL's password never appears in ``repr``, logs or errors: use
``display_url``.

``pubsubpy.credentials.resolve_url`` picks the URL when none is given
(``PUBSUBPY_URL``, else ``memory://``) and fills in a password from
``PUBSUBPY_PASSWORD_FILE``.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from typing_extensions import TypedDict

from pubsubpy.errors import ConfigurationError

__all__ = ["InsecureTLSWarning", "Settings", "SettingsOptions", "has_password", "redact_url", "split_urls",
           "url_scheme"]

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


def split_urls(amqp_url: str) -> list[str]:
    """The comma-separated URLs of ``amqp_url`` (failover), as the transport splits them."""
    return [url.strip() for url in amqp_url.split(",") if url.strip()]


def url_scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


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
    """``tls_verify=False``: the connection is encrypted but the broker is not authenticated."""


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
    tls_ca_file: str | None = Field(default=None, description="amqps://: PEM file of the CA(s) that signed the "
                                    "broker's certificate; None: the system's default CAs")
    tls_cert_file: str | None = Field(default=None, description="amqps://: PEM client certificate (with "
                                      "tls_key_file), for brokers that ask for one and for auth='external'")
    tls_key_file: str | None = Field(default=None, description="amqps://: PEM private key of tls_cert_file")
    tls_verify: bool = Field(default=True, description="False: do not check the broker's certificate nor its "
                             "host name (warns: open to a man-in-the-middle)")
    auth: Literal["plain", "external"] = Field(default="plain", description="plain: user and password from the "
                                               "URL; external: the client certificate's user (amqps:// only)")

    @field_validator("amqp_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in ("amqp", "amqps", "memory"):
            raise ValueError(
                f"amqp_url {redact_url(value)!r} must start with amqp://, amqps:// or memory://"
            )
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
        """Validate ``options``; a failure is a ``ConfigurationError`` naming each bad field."""
        try:
            return cls(**options)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                # the URL (its password) is never echoed; a cross-field error's input is every option, URL included
                + ("" if "amqp_url" in err["loc"] or not err["loc"] else f" (got {err.get('input')!r})")
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
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None
    tls_verify: bool
    auth: Literal["plain", "external"]
