"""TLS settings validated up front, the SSL context they make, and the broker URL and password taken from
the environment (no broker needed). The password never shows in a repr, a str, a log or an error."""

from __future__ import annotations

import logging
import ssl
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

import pubsubpy
import pubsubpy._credentials as credentials_module
from pubsubpy import BrokerUnavailable, ConfigurationError, PubSub
from pubsubpy import settings as settings_module
from pubsubpy._credentials import resolve_url
from pubsubpy.contrib.django.apps import init_options
from pubsubpy.settings import InsecureTLSWarning, Settings
from pubsubpy.testing import reset
from pubsubpy.transports.rabbitmq import _tls as tls
from pubsubpy.transports.rabbitmq._connection import parameters

SECRET = "s3cr:t/p@ss word%"  # characters a URL must escape


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    """A CA, a client certificate and key, and a key that matches nothing, as PEM files."""
    ca = trustme.CA()
    client = ca.issue_cert("svc-client")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "client.pem", "key": tmp_path / "client.key",
             "other_key": tmp_path / "other.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    trustme.CA().issue_cert("x").private_key_pem.write_to_path(str(files["other_key"]))
    return {name: str(path) for name, path in files.items()}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("PUBSUBPY_URL", raising=False)
    monkeypatch.delenv("PUBSUBPY_PASSWORD_FILE", raising=False)
    return monkeypatch


@pytest.fixture
def fresh_default() -> Iterator[None]:
    reset(subscriptions=True)
    yield
    reset(subscriptions=True)


def _password_file(tmp_path: Path, content: str | bytes) -> str:
    path = tmp_path / "password"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


# -- TLS settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["tls_ca_file", "tls_cert_file", "tls_key_file"])
def test_a_tls_file_that_does_not_exist_is_named(field: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigurationError, match=rf"{field} '.*nope\.pem' does not exist"):
        Settings.build(amqp_url="amqps://h/", **{field: missing})


def test_a_tls_path_that_is_a_directory_or_empty_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"tls_ca_file .* is a directory"):
        Settings.build(amqp_url="amqps://h/", tls_ca_file=str(tmp_path))
    with pytest.raises(ConfigurationError, match="tls_ca_file is an empty string"):
        Settings.build(amqp_url="amqps://h/", tls_ca_file="")


def test_an_unreadable_tls_file_says_so(pki: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: str, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(settings_module, "open", refuse, raising=False)  # as root, chmod would not stop a read
    with pytest.raises(ConfigurationError, match=r"tls_ca_file .* cannot be read \(Permission denied\)"):
        Settings.build(amqp_url="amqps://h/", tls_ca_file=pki["ca"])


def test_a_client_certificate_needs_its_key_and_the_key_its_certificate(pki: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="tls_cert_file is set but tls_key_file is not"):
        Settings.build(amqp_url="amqps://h/", tls_cert_file=pki["cert"])
    with pytest.raises(ConfigurationError, match="tls_key_file is set but tls_cert_file is not"):
        Settings.build(amqp_url="amqps://h/", tls_key_file=pki["key"])


@pytest.mark.parametrize("url", ["amqp://u:hunter2@h/", "memory://", "amqps://u:hunter2@a/,amqp://u:hunter2@b/"])
def test_tls_settings_need_an_amqps_url(url: str, pki: dict[str, str]) -> None:
    for options in ({"tls_ca_file": pki["ca"]}, {"tls_verify": False},
                    {"auth": "external", "tls_cert_file": pki["cert"], "tls_key_file": pki["key"]}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureTLSWarning)
            with pytest.raises(ConfigurationError, match="is not amqps://: use amqps://") as failed:
                Settings.build(amqp_url=url, **options)
        assert "hunter2" not in str(failed.value)


def test_external_login_needs_a_client_certificate_and_no_password(pki: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="auth='external' logs in with a client certificate: set tls_cert"):
        Settings.build(amqp_url="amqps://h/", auth="external")
    with pytest.raises(ConfigurationError, match="remove user:password") as failed:
        Settings.build(amqp_url="amqps://u:hunter2@h/", auth="external", tls_cert_file=pki["cert"],
                       tls_key_file=pki["key"])
    assert "hunter2" not in str(failed.value)
    settings = Settings.build(amqp_url="amqps://h/", auth="external", tls_cert_file=pki["cert"],
                              tls_key_file=pki["key"])
    assert settings.auth == "external"


def test_tls_verify_false_warns_of_a_man_in_the_middle() -> None:
    with pytest.warns(InsecureTLSWarning, match="man-in-the-middle") as caught:
        Settings.build(amqp_url="amqps://u:hunter2@h/", tls_verify=False)
    caught = [w for w in caught if issubclass(w.category, InsecureTLSWarning)]  # not a stray ResourceWarning
    assert caught[0].filename == __file__, "the warning points at the caller, not into pubsubpy or pydantic"
    assert "hunter2" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Settings.build(amqp_url="amqps://h/")  # verifying: no warning


def test_the_context_verifies_by_default_and_presents_the_client_certificate(pki: dict[str, str]) -> None:
    settings = Settings.build(amqp_url="amqps://h/", tls_ca_file=pki["ca"], tls_cert_file=pki["cert"],
                              tls_key_file=pki["key"])
    ctx = tls.context(settings)
    assert ctx.protocol == ssl.PROTOCOL_TLS_CLIENT
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert len(ctx.get_ca_certs()) == 1
    with pytest.warns(InsecureTLSWarning):
        loose = tls.context(Settings.build(amqp_url="amqps://h/", tls_verify=False))
    assert loose.verify_mode == ssl.CERT_NONE and not loose.check_hostname


@pytest.mark.parametrize(("platform", "expected"), [
    (ssl.TLSVersion.MINIMUM_SUPPORTED, ssl.TLSVersion.TLSv1_2),  # Debian sid's OpenSSL default: no floor
    (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_2),
    (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3),             # a platform floor above 1.2 is kept
])
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")
def test_the_context_sets_a_tls_1_2_floor_whatever_the_platform_default(
        monkeypatch: pytest.MonkeyPatch, platform: ssl.TLSVersion, expected: ssl.TLSVersion) -> None:
    def platform_context(protocol: int) -> ssl.SSLContext:
        ctx = ssl.SSLContext(protocol)
        ctx.minimum_version = platform
        return ctx

    monkeypatch.setattr(tls, "ssl", types.SimpleNamespace(**{**vars(ssl), "SSLContext": platform_context}))
    ctx = tls.context(Settings.build(amqp_url="amqps://h/"))
    assert ctx.minimum_version == expected


def test_unusable_pem_files_are_configuration_errors(pki: dict[str, str], tmp_path: Path) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(ConfigurationError, match=r"tls_ca_file '.*not\.pem' holds no usable CA certificate"):
        tls.context(Settings.build(amqp_url="amqps://h/", tls_ca_file=str(not_pem)))
    mismatched = Settings.build(amqp_url="amqps://h/", tls_cert_file=pki["cert"], tls_key_file=pki["other_key"])
    with pytest.raises(ConfigurationError, match=r"tls_cert_file .* not a PEM certificate and its matching"):
        tls.context(mismatched)
    key = serialization.load_pem_private_key(Path(pki["key"]).read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(ConfigurationError, match="the private key is encrypted"):  # and no prompt on the terminal
        tls.context(Settings.build(amqp_url="amqps://h/", tls_cert_file=pki["cert"], tls_key_file=str(encrypted)))


def test_amqps_parameters_carry_our_context_and_the_url_host(pki: dict[str, str]) -> None:
    settings = Settings.build(amqp_url="amqps://u:p@broker.example:5671/%2F,amqps://u:p@10.0.0.2/%2F",
                              tls_ca_file=pki["ca"])
    first, second = parameters(settings)
    options: Any = first.ssl_options  # type: ignore[attr-defined]
    assert options.server_hostname == "broker.example"
    assert options.context.verify_mode == ssl.CERT_REQUIRED and options.context.check_hostname
    assert len(options.context.get_ca_certs()) == 1, "tls_ca_file, not the system's CAs"
    assert second.ssl_options.server_hostname == "10.0.0.2"  # type: ignore[attr-defined]
    assert parameters(Settings.build(amqp_url="amqp://u:p@h/"))[0].ssl_options is None  # type: ignore[attr-defined]


def test_external_login_uses_external_credentials(pki: dict[str, str]) -> None:
    settings = Settings.build(amqp_url="amqps://h/", auth="external", tls_cert_file=pki["cert"],
                              tls_key_file=pki["key"])
    credentials: Any = parameters(settings)[0].credentials  # type: ignore[attr-defined]
    assert isinstance(credentials, pika.credentials.ExternalCredentials)  # type: ignore[attr-defined]


def test_ssl_options_in_the_url_are_refused_not_silently_overridden() -> None:
    url = "amqps://u:hunter2@h/%2F?ssl_options=%7B%27protocol%27%3A+2%7D"
    with pytest.raises(ConfigurationError, match=r"sets ssl_options in its query.* tls_ca_file") as failed:
        Settings.build(amqp_url=url)
    assert "hunter2" not in str(failed.value)


# -- the URL and password from the environment ----------------------------------------------------

def test_url_order_explicit_then_env_then_memory(clean_env: pytest.MonkeyPatch) -> None:
    assert resolve_url(None) == "memory://"
    clean_env.setenv("PUBSUBPY_URL", "amqp://u:p@env-host/")
    assert resolve_url(None) == "amqp://u:p@env-host/"
    assert resolve_url("amqp://u:p@given/") == "amqp://u:p@given/"
    clean_env.setenv("PUBSUBPY_URL", "  ")
    assert resolve_url(None) == "memory://"


def test_pubsub_and_init_read_pubsubpy_url(clean_env: pytest.MonkeyPatch, fresh_default: None) -> None:
    assert PubSub().settings.amqp_url == "memory://"
    clean_env.setenv("PUBSUBPY_URL", "amqp://u:p@env-host:5672/%2F")
    assert PubSub().settings.amqp_url == "amqp://u:p@env-host:5672/%2F"
    assert PubSub("memory://").settings.amqp_url == "memory://"
    assert pubsubpy.init(service_name="env").settings.amqp_url == "amqp://u:p@env-host:5672/%2F"


def test_a_django_project_without_amqp_url_gets_pubsubpy_url(clean_env: pytest.MonkeyPatch,
                                                             fresh_default: None) -> None:
    clean_env.setenv("PUBSUBPY_URL", "amqp://u:p@env-host/")
    options = init_options({"SERVICE_NAME": "shop", "MODEL_EVENTS": {}})
    assert "amqp_url" not in options
    assert pubsubpy.init(**options).settings.amqp_url == "amqp://u:p@env-host/"


@pytest.mark.parametrize(("content", "password"), [(SECRET, SECRET), (SECRET + "\n", SECRET),
                                                   (SECRET + "\r\n", SECRET), (" pad \n\n", " pad \n")])
def test_the_password_file_fills_a_url_without_password(content: str, password: str, tmp_path: Path,
                                                        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PUBSUBPY_PASSWORD_FILE", _password_file(tmp_path, content))
    clean_env.setenv("PUBSUBPY_URL", "amqp://svc@a:5672/%2F,amqps://svc@b/%2F")
    url = resolve_url(None)
    for params in (pika.URLParameters(part) for part in url.split(",")):
        assert params.credentials.username == "svc"  # type: ignore[attr-defined]
        assert params.credentials.password == password  # type: ignore[attr-defined]
    assert _redacted(url) == "amqp://svc:***@a:5672/%2F,amqps://svc:***@b/%2F"


def _redacted(url: str) -> str:
    return ",".join(settings_module.redact_url(part) for part in url.split(","))


def test_a_password_in_the_url_wins_over_the_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PUBSUBPY_PASSWORD_FILE", _password_file(tmp_path, "from-file"))
    assert resolve_url("amqp://svc:in-url@h/") == "amqp://svc:in-url@h/"
    mixed = resolve_url("amqp://svc:in-url@a/,amqp://svc@b/")
    assert mixed == "amqp://svc:in-url@a/,amqp://svc:from-file@b/"
    clean_env.setenv("PUBSUBPY_PASSWORD_FILE", str(tmp_path / "missing"))
    assert resolve_url("amqp://svc:in-url@h/") == "amqp://svc:in-url@h/", "not needed: not read"
    assert resolve_url("memory://") == "memory://"


def test_external_login_does_not_read_the_password_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PUBSUBPY_PASSWORD_FILE", str(tmp_path / "missing"))
    assert resolve_url("amqps://h/", auth="external") == "amqps://h/"


def test_a_bad_password_file_is_named_never_quoted(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    cases = {str(tmp_path / "missing"): "does not exist", str(tmp_path): "is a directory",
             _password_file(tmp_path, ""): "is empty", _password_file(tmp_path, "\n"): "is empty"}
    for path, problem in cases.items():
        clean_env.setenv("PUBSUBPY_PASSWORD_FILE", path)
        with pytest.raises(ConfigurationError, match=problem) as failed:
            PubSub("amqp://svc@h/")
        assert f"PUBSUBPY_PASSWORD_FILE {path!r}" in str(failed.value)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff" + SECRET.encode())
    clean_env.setenv("PUBSUBPY_PASSWORD_FILE", str(binary))
    with pytest.raises(ConfigurationError, match="is not UTF-8 text") as failed:
        PubSub("amqp://svc@h/")
    assert SECRET not in str(failed.value)


def test_an_unreadable_password_file_says_so(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    def refuse(path: str, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", path)

    clean_env.setenv("PUBSUBPY_PASSWORD_FILE", _password_file(tmp_path, SECRET))
    clean_env.setattr(credentials_module, "open", refuse, raising=False)  # as root, chmod would not stop a read
    with pytest.raises(ConfigurationError, match="cannot be read by this process"):
        resolve_url("amqp://svc@h/")


def test_a_password_file_with_a_url_naming_no_user_is_an_error(tmp_path: Path,
                                                               clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PUBSUBPY_PASSWORD_FILE", _password_file(tmp_path, SECRET))
    with pytest.raises(ConfigurationError, match=r"names no user .*\(amqp://USER@h:5672/") as failed:
        resolve_url("amqp://h:5672/%2F")
    assert SECRET not in str(failed.value) and "s3cr" not in str(failed.value)


def test_the_password_from_the_file_never_shows(tmp_path: Path, clean_env: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clean_env.setenv("PUBSUBPY_PASSWORD_FILE", _password_file(tmp_path, SECRET + "\n"))
    clean_env.setenv("PUBSUBPY_URL", "amqp://svc@127.0.0.1:1/%2F")  # nothing listens on port 1
    app = PubSub(service_name="x", require_schemas=False, connection_attempts=2, connect_timeout=1,
                 retry_connect_delay=0.05)
    encoded = app.settings.amqp_url.split("svc:", 1)[1].split("@", 1)[0]
    shown = [repr(app), repr(app.settings), str(app.settings), app.settings.display_url]
    with pytest.raises(BrokerUnavailable) as failed:
        app.publish_model_event("x.Thing", "made", {"n": 1})
    shown += [str(failed.value), repr(failed.value), caplog.text]
    for text in shown:
        assert SECRET not in text and encoded not in text, text
    assert "svc:***@127.0.0.1:1" in app.settings.display_url
    with pytest.raises(ConfigurationError) as bad:
        PubSub(service_name="has space")
    assert encoded not in str(bad.value)
    app.close()
