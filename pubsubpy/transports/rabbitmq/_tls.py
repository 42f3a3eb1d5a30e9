"""TLS for ``amqps://`` URLs: the SSL context the settings describe, and why a TLS connection failed.

pika, given an ``amqps://`` URL alone, verifies the broker against the system's CAs; its only other
knob, an ``ssl_options=`` URL query, can quietly turn verification off, so ``Settings`` refuses it.
pubsubpy builds the context itself so that ``tls_ca_file``, the client certificate and the explicit
``tls_verify=False`` opt-out apply; the files are read at each connect, so renewed ones are picked up
on reconnection. A failed handshake is put in words (certificate not trusted, host name mismatch,
client certificate refused...) instead of OpenSSL's codes.
"""

from __future__ import annotations

import re
import ssl
from typing import NamedTuple

import pika
import pika.credentials
import pika.exceptions

from pubsubpy.errors import ConfigurationError
from pubsubpy.settings import Settings

__all__ = ["Failure", "context", "explain", "secure"]

_UNTRUSTED = {2, 18, 19, 20, 21, 24, 27, 28}  # X509_V_ERR_*: no trusted issuer, self-signed, untrusted, rejected
_NAME_MISMATCH = {62, 63, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, _EMAIL_MISMATCH, _IP_ADDRESS_MISMATCH
_EXPIRED = {9, 10}  # X509_V_ERR_CERT_NOT_YET_VALID, _CERT_HAS_EXPIRED
_NOT_TLS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}
_REASON = re.compile(r"\[SSL: ([A-Z0-9_]+)\]")  # pika nests an SSL error met mid-handshake as text


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    """``load_cert_chain``'s password callback: refuse rather than let OpenSSL prompt on the terminal."""
    raise _EncryptedKey


def context(settings: Settings) -> ssl.SSLContext:
    """The client context: TLS 1.2+, the broker's certificate and host name checked unless ``tls_verify=False``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    if ctx.minimum_version < ssl.TLSVersion.TLSv1_2:  # the platform's floor may be none (MINIMUM_SUPPORTED)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not settings.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif settings.tls_ca_file is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        try:
            ctx.load_verify_locations(cafile=settings.tls_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(f"tls_ca_file {settings.tls_ca_file!r} holds no usable CA certificate "
                                     f"({_file_error(exc)}): give the PEM file of the CA that signed the broker's "
                                     "certificate") from None
    if settings.tls_cert_file is not None:
        files = f"tls_cert_file {settings.tls_cert_file!r} with tls_key_file {settings.tls_key_file!r}"
        try:
            ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file, password=_no_password)
        except _EncryptedKey:
            raise ConfigurationError(f"{files}: the private key is encrypted; give an unencrypted key "
                                     "(openssl pkey -in KEY -out PLAIN_KEY) readable only by this user") from None
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(f"{files}: not a PEM certificate and its matching private key "
                                     f"({_file_error(exc)})") from None
    return ctx


def secure(params: pika.URLParameters, settings: Settings) -> None:
    """Give ``params`` this context when its URL is ``amqps://``, and the EXTERNAL login when asked."""
    if settings.auth == "external":
        params.credentials = pika.credentials.ExternalCredentials()
    if params.ssl_options is not None:  # pika saw amqps://
        params.ssl_options = pika.SSLOptions(context(settings), server_hostname=params.host)


class Failure(NamedTuple):
    why: str
    final: bool  # another attempt would fail the same way: do not retry


def explain(exc: BaseException, settings: Settings, params: pika.URLParameters) -> Failure | None:
    """Why connecting with ``params`` failed, when TLS or the EXTERNAL login is the cause; else None."""
    where = f"{params.host}:{params.port}"
    if isinstance(exc, pika.exceptions.AuthenticationError) and settings.auth == "external":
        return Failure(f"the broker at {where} does not offer the EXTERNAL login (auth='external'): enable its "
                       "rabbitmq_auth_mechanism_ssl plugin and list EXTERNAL in auth_mechanisms", True)
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError) and settings.auth == "external":
        return Failure(f"the broker at {where} refused the EXTERNAL login: it has no user named after the client "
                       f"certificate's CN (tls_cert_file {settings.tls_cert_file!r}), or that user may not use the "
                       f"virtual host; create the user and grant it the vhost ({exc!r})", True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Failure(_verify_failure(exc, settings, params.host, where), True)
    reason = _reason(exc, tls_stream=params.ssl_options is not None)
    if not reason:
        return None
    alert = "ALERT" in reason  # the broker ended the handshake with a TLS alert
    # TLS 1.3: the broker checks a client certificate after this side's handshake is done, so its alert
    # reaches pika mid-AMQP-handshake, wrapped in pika's own error rather than raised as an SSLError.
    late = not isinstance(exc, ssl.SSLError)
    if alert and "CERTIFICATE_REQUIRED" in reason and settings.tls_cert_file is None:
        return Failure(f"the broker at {where} requires a client certificate: set tls_cert_file and tls_key_file "
                       f"(TLS alert {reason})", True)
    if alert and settings.tls_cert_file is not None and (late or "CERTIFICATE" in reason or "UNKNOWN_CA" in reason):
        return Failure(f"client certificate refused: the broker at {where} did not accept tls_cert_file "
                       f"{settings.tls_cert_file!r} (TLS alert {reason}); it must be issued by a CA the broker "
                       "trusts (its ssl_options.cacertfile), be made for client authentication, be valid today "
                       "and not be revoked", True)
    if reason in _NOT_TLS:
        return Failure(f"{where} does not speak TLS ({reason}): amqps:// needs the broker's TLS listener "
                       "(port 5671 by default), not its plain AMQP port", True)
    if reason in ("EOF", "RESET") and settings.tls_cert_file is not None:
        return Failure(f"client certificate probably refused: the broker at {where} closed the connection during "
                       f"the TLS handshake after receiving tls_cert_file {settings.tls_cert_file!r} (not issued by a "
                       "CA it trusts, expired or revoked?); the broker's log says why", False)
    if reason == "RESET":
        return Failure(f"the broker at {where} reset the connection right after the TLS handshake: if it requires "
                       "a client certificate, set tls_cert_file and tls_key_file; the broker's log says why", False)
    return Failure(f"TLS with {where} failed ({reason})", alert)


def _reason(exc: BaseException, tls_stream: bool = False) -> str:
    """OpenSSL's reason code (``UNKNOWN_CA``...), read from pika's wrapping text when it nests the error;
    ``EOF`` for a TLS stream cut short, ``RESET`` for a TLS stream (``tls_stream``) reset during the AMQP
    handshake; empty when ``exc`` is no TLS error."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    text = repr(exc)
    found = _REASON.search(text)
    if found:
        return found.group(1)
    if isinstance(exc, ssl.SSLEOFError) or "SSLEOFError" in text:
        return "EOF"
    if tls_stream and isinstance(exc, pika.exceptions.IncompatibleProtocolError) and "ConnectionResetError" in text:
        # TLS 1.3 race: the broker rejects the client certificate and closes while this side already sends
        # the AMQP header, so the reset can overtake the broker's alert.
        return "RESET"
    return str(exc) if isinstance(exc, ssl.SSLError) else ""


def _file_error(exc: ssl.SSLError | OSError) -> str:
    return _reason(exc) or exc.strerror or type(exc).__name__


def _verify_failure(exc: ssl.SSLCertVerificationError, settings: Settings, host: str, where: str) -> str:
    detail = f"(OpenSSL: {exc.verify_message})"
    if exc.verify_code in _NAME_MISMATCH:
        return (f"hostname mismatch: the broker's certificate at {where} is not valid for {host!r}, the host in "
                f"amqp_url; connect with a name the certificate lists (its subjectAltName) or have it reissued "
                f"for {host!r} {detail}")
    if exc.verify_code in _UNTRUSTED:
        trusted = (f"a CA in tls_ca_file {settings.tls_ca_file!r}" if settings.tls_ca_file
                   else "a CA this system trusts (tls_ca_file is not set)")
        return (f"certificate not trusted: the broker's certificate at {where} is not issued by {trusted}; set "
                f"tls_ca_file to the PEM file of the CA that signed it {detail}")
    if exc.verify_code in _EXPIRED:
        return (f"the broker's certificate at {where} is expired or not valid yet: renew it, or check this "
                f"machine's clock {detail}")
    return f"the broker's certificate at {where} failed verification {detail}"
