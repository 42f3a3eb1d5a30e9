"""RabbitMQ permissions: what a service needs, and which one a refused operation lacked.

A user's permissions in a vhost are three regexes matched against resource
names: configure (declare, delete), write (publish to an exchange, bind a
queue) and read (consume, get, purge, be the source of a binding). RabbitMQ's
403 ``ACCESS_REFUSED`` names the resource only ("access to queue 'x' in vhost
'/' refused for user 'u'"), not which of the three was missing. The
``channel.close`` frame does carry the class and method of the refused
command, but pika drops them (``ChannelClosedByBroker`` keeps only
``reply_code`` and ``reply_text``), so ``refused`` finds the command in the
exception's traceback instead: the innermost frame of a pika
``BlockingChannel`` method (``queue_declare``, ``basic_consume``...) or of
``ConfirmChannel.publish``. What each command needs on which resource is
RabbitMQ's access-control table (``_NEEDS``). The default exchange ``''`` is
checked as ``amq.default``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

import pika.exceptions

from pubsubpy.errors import PermissionDenied
from pubsubpy.topology import (
    dead_letter_exchange,
    dead_letter_queue,
    event_log_name,
    ledger_queue,
    parked_queue,
    presence_exchange,
    service_queue,
    shard_exchange,
)

__all__ = ["Permissions", "refused", "service_permissions", "vhost_refused"]

# AMQP command -> resource kind -> (permission needed, what for)
_NEEDS: dict[str, dict[str, tuple[str, str]]] = {
    "exchange.declare": {"exchange": ("configure", "declare it")},
    "exchange.delete": {"exchange": ("configure", "delete it")},
    "queue.declare": {"queue": ("configure", "declare it"),
                      "exchange": ("write", "declare a queue that dead-letters to it")},
    "queue.delete": {"queue": ("configure", "delete it")},
    "queue.purge": {"queue": ("read", "purge it")},
    "queue.bind": {"queue": ("write", "bind it to an exchange"), "exchange": ("read", "bind a queue to it")},
    "queue.unbind": {"queue": ("write", "unbind it from an exchange"), "exchange": ("read", "unbind a queue from it")},
    "basic.publish": {"exchange": ("write", "publish to it")},
    "basic.consume": {"queue": ("read", "consume from it")},
    "basic.get": {"queue": ("read", "read messages from it")},
}

# (module, function) whose frame in a traceback means the broker refused that command
_CALLS: dict[tuple[str, str], str] = {
    **{("pika.adapters.blocking_connection", name.replace(".", "_")): name for name in _NEEDS},
    ("pubsubpy.transports.rabbitmq._publishing", "publish"): "basic.publish",
}

_REFUSAL = re.compile(r"access to (queue|exchange) '(.*)' in vhost '(.*)' refused for user '(.*)'")
_VHOST_REFUSAL = re.compile(r"access to vhost '(.*)' refused for user '([^']*)'")
_VHOST_MISSING = re.compile(r"NOT_ALLOWED - vhost (.*) not found")
_DEFAULT_EXCHANGE = "amq.default"
_ALL = ("configure", "write", "read")


@dataclass(frozen=True)
class Permissions:
    """The three regexes of ``rabbitmqctl set_permissions -p VHOST USER CONFIGURE WRITE READ``."""

    configure: str
    """Names the user may declare and delete."""
    write: str
    """Names the user may publish to (exchanges) and bind (queues)."""
    read: str
    """Names the user may consume from, get, purge, or bind from."""


def _literal(name: str) -> str:
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", name)


def _any_of(fragments: list[str]) -> str:
    """One anchored regex matching each fragment (each a regex already); ``^$`` (nothing) for none."""
    unique = sorted(set(fragments))
    if not unique:
        return "^$"
    return f"^{unique[0]}$" if len(unique) == 1 else "^(" + "|".join(unique) + ")$"


def service_permissions(service: str, exchange: str, *, consumes: bool = True, publishes: bool = True) -> Permissions:
    """The least a service needs: to publish to ``exchange``, and (``consumes``) to declare, drain, retry,
    dead-letter, replay and purge its own queues. Retry queues are one per delay (``<service>.retry.<ms>ms``).

    ```python
    p = service_permissions("billing", "models")
    print(f"rabbitmqctl set_permissions -p / billing '{p.configure}' '{p.write}' '{p.read}'")
    ```

    Args:
        service: the ``service_name``.
        exchange: the ``model_exchange``.
        consumes: the service declares and consumes its queues.
        publishes: the service publishes events.

    Returns:
        The three regexes, names escaped.
    """
    log = event_log_name(exchange)  # event_log: publishers declare and bind it, consumers read it (replay)
    configure, write, read = [exchange], [exchange] if publishes else [], []
    if publishes:
        configure.append(log)
        write.append(log)  # bound from the exchange: write on the queue, read on the exchange
        read.append(exchange)
    if consumes:
        queue, dlq, dlx = service_queue(service), dead_letter_queue(service), dead_letter_exchange(service)
        own = [queue, ledger_queue(queue), dlq, dlx, parked_queue(service)]
        configure += own
        write += [queue, dlq, dlx, parked_queue(service), _DEFAULT_EXCHANGE]  # bindings; the DLX check; retries,
        # replays, the ledger; a paused subscription's share (pause_on)
        read += [exchange, *own, log]  # bindings; the DLX check; consuming, the ledger; replaying the event log
    retries = [_literal(service) + r"\.retry\.[0-9]+ms"] if consumes else []
    # shards=N: the shards and presence exchanges (bound to, published to, bound from), the shard queues and
    # each worker's presence queue (declared, bound, consumed); harmless names for a service without shards
    sharding = [_literal(shard_exchange(service)) + r"(\.v[0-9]+)?", _literal(presence_exchange(service)),
                _literal(service) + r"\.shard\.(v[0-9]+\.)?[0-9]+", _literal(presence_exchange(service)) + r"\..+"] \
        if consumes else []  # (a generation after the first: <service>.shards.v2, <service>.shard.v2.N)
    return Permissions(_any_of([*map(_literal, configure), *retries, *sharding]),
                       _any_of([*map(_literal, write), *sharding]),
                       _any_of([*map(_literal, read), *retries, *sharding]))


def _command_of(exc: BaseException) -> tuple[str | None, bool]:
    """The AMQP command the broker refused (the innermost known call in the traceback), and whether it declared
    a queue that dead-letters (its ``arguments`` name a dead-letter exchange)."""
    found: tuple[str | None, bool] = (None, False)
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        command = _CALLS.get((frame.f_globals.get("__name__", ""), frame.f_code.co_name))
        if command is not None:
            arguments: Any = frame.f_locals.get("arguments") if command == "queue.declare" else None
            found = (command, isinstance(arguments, dict) and "x-dead-letter-exchange" in arguments)
        tb = tb.tb_next
    return found


def _needed(command: str | None, dead_letters: bool, kind: str, name: str) -> tuple[tuple[str, ...], str]:
    """The permission(s) the refused command needed on the resource, and what for."""
    if kind == "exchange" and name == _DEFAULT_EXCHANGE:  # only ever written to: never declared nor bound
        if command == "queue.declare":
            return ("write",), "declare a queue that dead-letters through the default exchange (queue.declare)"
        return ("write",), "publish to a queue by name through the default exchange (basic.publish)"
    need = _NEEDS.get(command or "", {}).get(kind)
    if need is None:  # not a command pubsubpy sends: any of the three
        return _ALL, "declare or delete it (configure), " + (
            "publish to it (write) or bind a queue to it (read)" if kind == "exchange"
            else "bind it (write) or consume from it (read)")
    permission, purpose = need
    if command == "queue.declare" and kind == "queue" and dead_letters:  # read is checked only on a new queue
        return ("configure", "read"), f"declare it (a new queue that dead-letters needs both) ({command})"
    return (permission,), f"{purpose} ({command})"


def refused(exc: pika.exceptions.ChannelClosedByBroker, doing: str) -> PermissionDenied:
    """The error for a 403 ACCESS_REFUSED channel close: the resource, the permission needed, how to grant it."""
    text = f"{exc.reply_code} {exc.reply_text}"
    match = _REFUSAL.search(exc.reply_text or "")
    if match is None:
        return PermissionDenied(f"{doing}: {text}. The broker user lacks permission (see the documentation, "
                                "'Broker permissions').")
    kind, name, vhost, user = match.groups()
    permissions, purpose = _needed(*_command_of(exc), kind, name)
    needs = "configure, write or read" if permissions == _ALL else " and ".join(permissions)
    regexes = "regexes" if permissions == _ALL else needs + (" regexes" if len(permissions) > 1 else " regex")
    return PermissionDenied(
        f"{doing}: user {user!r} needs {needs} permission on {kind} {name!r} in vhost {vhost!r} to {purpose}. "
        f"Make the user's {regexes} match it (e.g. add the alternative ^{_literal(name)}$) "
        f"with `rabbitmqctl set_permissions -p {shlex.quote(vhost)} {shlex.quote(user)} CONFIGURE WRITE READ` "
        f"(`rabbitmqctl list_user_permissions {shlex.quote(user)}` shows the current ones; the documentation's "
        f"'Broker permissions' lists what a service needs). Broker: {text}",
        permissions=permissions, resource=f"{kind} {name!r}", vhost=vhost, user=user)


def vhost_refused(exc: BaseException, doing: str) -> str:
    """The message for ``ProbableAccessDeniedError``: the connection was refused the virtual host."""
    missing = _VHOST_MISSING.search(str(exc))
    if missing is not None:
        return (f"{doing}: virtual host {missing.group(1)!r} does not exist; create it (`rabbitmqctl add_vhost "
                f"{shlex.quote(missing.group(1))}`) or fix the vhost in amqp_url ({exc!r})")
    match = _VHOST_REFUSAL.search(str(exc))
    if match is None:
        return (f"{doing}: the broker refused access to the virtual host: it must exist and the user needs "
                "permissions on it (`rabbitmqctl set_permissions -p VHOST USER CONFIGURE WRITE READ`; the "
                f"documentation's 'Broker permissions' lists what a service needs) ({exc!r})")
    vhost, user = match.groups()
    return (f"{doing}: user {user!r} has no permissions on virtual host {vhost!r}; grant them with "
            f"`rabbitmqctl set_permissions -p {shlex.quote(vhost)} {shlex.quote(user)} CONFIGURE WRITE READ` "
            f"(the documentation's 'Broker permissions' lists the regexes a service needs). Broker: {exc!r}")
