"""The private pika names the RabbitMQ transport relies on, checked before the first connection is used.

pika has no public API for what the transport does, so it uses these (the same in pika 1.3 to 1.4.4):

- ``Connection._read_frame`` and ``Connection._frame_buffer`` (_frames.py, _deliveries.py): pika's read
  loop (``_on_data_available``) decodes every frame by calling the connection's own ``_read_frame`` on
  ``_frame_buffer``. Replacing it on one connection is how a header pika cannot decode is recovered
  (a foreign message is dead-lettered instead of killing the connection, redelivered, forever) and
  how ``DirectDeliveries`` takes whole deliveries. pika's main branch no longer calls it (c1765392):
  there the replacement would be a dead attribute, and one foreign message would wedge a service again.
  The pin alone does not exclude that: a build of main still calls itself pika 1.4.0.
- ``Connection._process_frame`` skipping frame type -1 (_deliveries.py: bytes already delivered).
- ``BlockingConnection._request_channel_dispatch``, ``Channel._consumers`` (_deliveries.py).
- ``BlockingConnection._flush_output``, ``Connection._output_marshaled_frames``,
  ``Connection._body_max_length`` (_publishing.py, _consuming.py).
- ``Connection._terminate_stream`` and ``BaseConnection.ioloop`` (_connection.py: ``abandon``,
  ``within``), ``Connection.server_properties`` (the broker's version), and the ``_impl`` of
  ``BlockingConnection`` and ``BlockingChannel`` that lead to all of them.

``install`` checks them the first time it sees a pika (a connection class: once per process, a
dictionary lookup afterwards) by using each as the transport does: a header frame pika cannot decode,
then a heartbeat, go through pika's own ``_on_data_available`` on a bare connection object (no socket)
and must come out recovered; a delivery goes through a stand-alone ``Channel``; the live connection
only sees harmless things (a heartbeat frame, a timer, a dispatch request for a channel it does not have).

There is no fallback. Immunity without ``_read_frame`` would mean patching ``pika.frame.decode_frame``
(every pika connection in the process, the application's own too) or replacing pika's read loop itself
(more private names, not fewer). A pika that fails the check is refused: the connection is closed and
``ConfigurationError`` names the version, the internals and the fix. The transport never runs without
poison immunity.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import struct
import threading
import time
import types
from collections.abc import Callable
from typing import Any, cast

import pika
import pika.channel
import pika.connection
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from pubsubpy.errors import ConfigurationError
from pubsubpy.transports.rabbitmq import _frames as frames
from pubsubpy.transports.rabbitmq._frames import UndecodableProperties, tolerate_undecodable_properties

__all__ = ["CHECKED", "FIX", "install"]

FIX = "pip install 'pika>=1.3,<=1.4.4'"

# (BlockingConnection class, its _impl class) -> None when every check passed, else what failed
_verdicts: dict[tuple[type, type], str | None] = {}

_HEARTBEAT = pika.frame.Heartbeat().marshal()
_TABLE = b"\x03bad" + b"Z\x00\x00\x00\x00"  # a header of field type "Z": no such type, pika cannot decode it
_PROPERTIES = struct.pack(">HI", pika.spec.BasicProperties.FLAG_HEADERS, len(_TABLE)) + _TABLE
_PAYLOAD = struct.pack(">HHQ", pika.spec.BasicProperties.INDEX, 0, 1) + _PROPERTIES
_POISON = struct.pack(">BHL", pika.spec.FRAME_HEADER, 1, len(_PAYLOAD)) + _PAYLOAD + bytes([pika.spec.FRAME_END])
_SKIPPED = types.SimpleNamespace(frame_type=-1)


def install(connection: pika.BlockingConnection) -> None:
    """Make ``connection`` hand over messages pika cannot decode (_frames.py), once pika's internals are
    known to work (checked the first time). Otherwise the connection is closed and ``ConfigurationError``
    raised."""
    key = (type(connection), type(getattr(connection, "_impl", None)))
    if key not in _verdicts:
        try:
            _verdicts[key] = _self_test(connection)
        except BaseException:  # the connection failed under the check: connect() may try again
            _close(connection)
            raise
    failures = _verdicts[key]
    if failures is not None:
        _close(connection)
        raise ConfigurationError(
            f"pika {getattr(pika, '__version__', '?')} lacks internals pubsubpy's RabbitMQ transport relies on: "
            f"{failures}. Without them one message whose headers pika cannot decode could stop its consumers "
            f"for good, so pubsubpy does not run on it. Install a pika it was tested with: {FIX}")
    tolerate_undecodable_properties(connection)


class _Failed(Exception):
    pass


def _expect(condition: object, failure: str) -> None:  # not ``assert``: ``python -O`` must not skip the checks
    if not condition:
        raise _Failed(failure)


def _close(connection: pika.BlockingConnection) -> None:
    with contextlib.suppress(Exception):
        connection.close()


def _self_test(connection: pika.BlockingConnection) -> str | None:
    failures = []
    for name, check in _CHECKS:
        try:
            check(connection)
        except Exception as exc:
            if isinstance(exc, pika.exceptions.AMQPError | OSError) and not connection.is_open:
                raise  # the connection was lost: no verdict on pika
            reason = str(exc) if isinstance(exc, _Failed) else f"{type(exc).__name__}: {exc}"
            failures.append(f"{name} ({reason[:300]})")
    return "; ".join(failures) or None


def _impl(connection: pika.BlockingConnection) -> Any:
    impl: Any = connection._impl
    _expect(isinstance(impl, pika.connection.Connection), f"{type(impl).__name__} is not a pika Connection")
    return impl


def _bare(connection: pika.BlockingConnection) -> Any:
    """A connection of the live one's class, never initialised: no socket, no I/O loop."""
    probe: Any = object.__new__(type(connection._impl))
    probe._frame_buffer, probe.bytes_received = b"", 0
    return probe


def _read_path(connection: pika.BlockingConnection) -> None:
    _expect(callable(getattr(type(connection._impl), "_read_frame", None)), "missing")
    probe = _bare(connection)
    calls: list[int] = []
    got: list[Any] = []
    probe._process_frame = got.append
    tolerate_undecodable_properties(types.SimpleNamespace(_impl=probe))  # type: ignore[arg-type]
    tolerant = probe._read_frame

    def read_frame() -> Any:
        calls.append(1)
        return tolerant()

    probe._read_frame = read_frame
    thread = threading.get_ident()

    def not_this_probe(record: logging.LogRecord) -> bool:  # no warning about the self-test's own bad header
        return record.thread != thread

    frames.log.addFilter(not_this_probe)
    try:
        type(probe)._on_data_available(probe, _POISON + _HEARTBEAT)
        recovered = [type(frame) for frame in got] == [pika.frame.Header, pika.frame.Heartbeat] and isinstance(
            got[0].properties, UndecodableProperties)
    except Exception as exc:
        recovered, got = False, [exc]
    finally:
        frames.log.removeFilter(not_this_probe)
    _expect(calls, f"pika's read loop (Connection._on_data_available) does not call it: {got}")
    _expect(recovered, f"pika's read loop calls it, but a header pika cannot decode was not recovered: {got}")
    _expect(not probe._frame_buffer, "pika's read loop does not consume _frame_buffer as _read_frame says")


def _skip_rule(connection: pika.BlockingConnection) -> None:
    probe = _bare(connection)
    probe._read_frame = lambda: (len(_HEARTBEAT), _SKIPPED)
    type(probe)._on_data_available(probe, _HEARTBEAT)
    _expect(not probe._frame_buffer, "the frame was not consumed")


def _stand_alone_channel() -> Any:
    """A pika ``Channel`` on a stand-in connection: never opened, nothing sent."""
    manager = importlib.import_module("pika.callback").CallbackManager()
    channel_class: Any = pika.channel.Channel
    return channel_class(types.SimpleNamespace(callbacks=manager), 1, lambda _channel: None)


def _consumers(connection: pika.BlockingConnection) -> None:
    channel = _stand_alone_channel()
    got: list[tuple[Any, ...]] = []
    channel._consumers["probe"] = lambda *args: got.append(args)
    deliver: Any = pika.spec.Basic.Deliver
    for frame in (pika.frame.Method(1, deliver("probe", 1, False, "x", "k")),
                  pika.frame.Header(1, 1, pika.spec.BasicProperties()), pika.frame.Body(1, b"!")):
        channel._handle_content_frame(frame)
    _expect(len(got) == 1 and got[0][0] is channel and got[0][3] == b"!", f"a delivery did not reach it: {got}")


def _blocking_channel(connection: pika.BlockingConnection) -> None:
    channel, blocking_channel_class = _stand_alone_channel(), cast(Any, BlockingChannel)
    _expect(blocking_channel_class(channel, connection)._impl is channel, "not the channel it wraps")


def _dispatch(connection: pika.BlockingConnection) -> None:
    connection._request_channel_dispatch(65535)  # a channel this connection does not have
    started = time.monotonic()
    connection.process_data_events(time_limit=2)
    _expect(time.monotonic() - started < 1, "a dispatch request did not end process_data_events")


def _writes(connection: pika.BlockingConnection) -> None:
    impl = _impl(connection)
    sent = impl.bytes_sent
    impl._output_marshaled_frames([_HEARTBEAT])
    _expect(impl.bytes_sent == sent + len(_HEARTBEAT), "a heartbeat frame was not written")


def _flush(connection: pika.BlockingConnection) -> None:
    connection._flush_output()


def _body_max(connection: pika.BlockingConnection) -> None:
    impl = _impl(connection)
    size = impl._body_max_length
    _expect(isinstance(size, int) and 0 < size <= impl.params.frame_max - 8, f"{size!r} does not fit a frame")


def _disconnect(connection: pika.BlockingConnection) -> None:
    _expect(callable(_impl(connection)._terminate_stream), "not callable")


def _ioloop(connection: pika.BlockingConnection) -> None:
    loop, fired = _impl(connection).ioloop, []
    loop.remove_timeout(loop.call_later(3600, lambda: None))
    loop.call_later(0, lambda: fired.append(True))
    deadline = time.monotonic() + 1
    while not fired and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0)
    _expect(fired, "a timer on it did not fire inside process_data_events")


def _server_properties(connection: pika.BlockingConnection) -> None:
    properties = _impl(connection).server_properties
    _expect(isinstance(properties, dict) and "version" in properties, f"no broker version in {properties!r}")


_CHECKS: tuple[tuple[str, Callable[[pika.BlockingConnection], None]], ...] = (
    ("BlockingConnection._impl", _impl),
    ("Connection._read_frame / Connection._frame_buffer", _read_path),
    ("Connection._process_frame skipping frame type -1", _skip_rule),
    ("Channel._consumers", _consumers),
    ("BlockingChannel._impl", _blocking_channel),
    ("BlockingConnection._request_channel_dispatch", _dispatch),
    ("Connection._output_marshaled_frames", _writes),
    ("BlockingConnection._flush_output", _flush),
    ("Connection._body_max_length", _body_max),
    ("Connection._terminate_stream", _disconnect),
    ("BaseConnection.ioloop", _ioloop),
    ("Connection.server_properties", _server_properties),
)
CHECKED = tuple(name for name, _check in _CHECKS)
