"""Broker credentials kept out of settings files: the URL from ``PUBSUBPY_URL``, the password from a file.

Order: an explicit ``amqp_url`` wins, else ``$PUBSUBPY_URL``, else ``memory://``; a password in the URL
wins, else the content of the file named by ``$PUBSUBPY_PASSWORD_FILE`` (a mounted secret). Errors name
the file, never its content.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

from pubsubpy.errors import ConfigurationError
from pubsubpy.settings import has_password, redact_url, split_urls, url_scheme

__all__ = ["PASSWORD_FILE_ENV", "URL_ENV", "resolve_url"]

URL_ENV = "PUBSUBPY_URL"
PASSWORD_FILE_ENV = "PUBSUBPY_PASSWORD_FILE"


def resolve_url(amqp_url: str | None, auth: str = "plain", environ: Mapping[str, str] | None = None) -> str:
    """The broker URL to use: ``amqp_url`` if given, else ``$PUBSUBPY_URL``, else ``memory://``.

    An ``amqp(s)://`` URL that names a user but no password gets the content of the file named by
    ``$PUBSUBPY_PASSWORD_FILE`` (a mounted secret; one trailing newline dropped); a password in the URL
    wins. ``auth="external"`` logs in with the client certificate, so the file is not read.
    """
    env = os.environ if environ is None else environ
    url = amqp_url if amqp_url is not None else (env.get(URL_ENV, "").strip() or "memory://")
    path = env.get(PASSWORD_FILE_ENV, "").strip()
    if not path or auth == "external":
        return url
    needing = [u for u in split_urls(url) if url_scheme(u) in ("amqp", "amqps") and not has_password(u)]
    if not needing:
        return url
    password = _read_password_file(path)
    return ",".join(_with_password(u, password) if u in needing else u for u in split_urls(url))


def _read_password_file(path: str) -> str:
    """The password in ``path``; errors name the file, never its content."""
    where = f"{PASSWORD_FILE_ENV} {path!r}"
    try:
        with open(path, encoding="utf-8") as file:
            content = file.read()
    except FileNotFoundError:
        raise ConfigurationError(f"{where} does not exist: point it at the file holding the broker password, "
                                 f"or unset {PASSWORD_FILE_ENV}") from None
    except IsADirectoryError:
        raise ConfigurationError(f"{where} is a directory: point it at the file holding the password") from None
    except PermissionError:
        raise ConfigurationError(f"{where} cannot be read by this process (permission denied): make it "
                                 "readable by the user pubsubpy runs as") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{where} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigurationError(f"{where} cannot be read: {exc.strerror or type(exc).__name__}") from None
    password = content.removesuffix("\r\n") if content.endswith("\r\n") else content.removesuffix("\n")
    if not password:
        raise ConfigurationError(f"{where} is empty: write the broker password into it")
    return password


def _with_password(url: str, password: str) -> str:
    """``amqp://user@host/vh`` -> ``amqp://user:<password, percent-encoded>@host/vh``."""
    parts = urlsplit(url)
    if not parts.username:
        raise ConfigurationError(
            f"{PASSWORD_FILE_ENV} is set but amqp_url {redact_url(url)!r} names no user to log in as with that "
            f"password: put the user in the URL ({parts.scheme}://USER@{parts.netloc}{parts.path})")
    userinfo, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{userinfo}:{quote(password, safe='')}@{host}"))
