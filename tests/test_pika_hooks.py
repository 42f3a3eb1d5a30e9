"""The pika internals the transport relies on are checked at the first connection (pika_hooks.py).

Each test takes one internal away, the way a pika release could: renamed (``_Renamed``: pika's own code
still reaches it, so pika works, and only pubsubpy finds nothing), or kept but no longer doing its job
(pika's main branch reads frames without ``_read_frame``, c1765392). Connecting must then refuse with a
``ConfigurationError`` that names the pika version, the internal and the fix; pubsubpy never runs without
poison-message immunity. On the installed pika the check passes and a poison message is dead-lettered.
"""

from __future__ import annotations

import sys
from typing import Any

import pika
import pika.channel
import pika.connection
import pika.frame
import pytest
from pika.adapters.base_connection import BaseConnection
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from pubsubpy import PubSub
from pubsubpy.errors import ConfigurationError
from pubsubpy.settings import Settings
from pubsubpy.transports.rabbitmq import _frames as frames
from pubsubpy.transports.rabbitmq import _pika_hooks as pika_hooks
from pubsubpy.transports.rabbitmq._connection import connect
from tests.conftest import Names
from tests.contract.events import ALL
from tests.test_undecodable_frames import _bad, _foreign_publish, _good, _recording, raw_headers  # noqa: F401

VERSION = pika.__version__
READ_PATH = "Connection._read_frame / Connection._frame_buffer"
SKIP_RULE = "Connection._process_frame skipping frame type -1"


class _Renamed:
    """``name`` as a pika release that renamed it looks from outside: pika's own code still reaches it
    (pika works), other code finds no such attribute, and what it assigns there pika never reads."""

    def __init__(self, name: str, original: Any) -> None:
        self.name, self.original = name, original
        self.live, self.dead = f"_pika_renamed_{name}", f"_not_read_by_pika_{name}"

    @staticmethod
    def _from_pika() -> bool:
        return str(sys._getframe(2).f_globals.get("__name__", "")).startswith("pika.")

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        from_pika = self._from_pika()
        if obj is None:
            if from_pika and self.original is not None:
                return self.original
            raise AttributeError(self.name)
        slots = vars(obj)
        if from_pika and self.live in slots:
            return slots[self.live]
        if from_pika and self.original is not None:
            return self.original.__get__(obj, owner)
        if not from_pika and self.dead in slots:
            return slots[self.dead]
        raise AttributeError(f"{type(obj).__name__!r} object has no attribute {self.name!r}")

    def __set__(self, obj: Any, value: Any) -> None:
        vars(obj)[self.live if self._from_pika() else self.dead] = value


def _rename(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> None:
    monkeypatch.setattr(owner, name, _Renamed(name, vars(owner).get(name)), raising=False)


@pytest.fixture(autouse=True)
def first_connection(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every test starts as the process's first connection (no verdict yet); counts the self-tests run."""
    monkeypatch.setattr(pika_hooks, "_verdicts", {})
    runs: list[int] = []
    self_test = pika_hooks._self_test

    def counted(connection: pika.BlockingConnection) -> str | None:
        runs.append(1)
        return self_test(connection)

    monkeypatch.setattr(pika_hooks, "_self_test", counted)
    return runs


def _settings(url: str) -> Settings:
    return Settings(amqp_url=url, connection_attempts=1)


def _refused(url: str) -> str:
    with pytest.raises(ConfigurationError) as refused:
        connect(_settings(url))
    return str(refused.value)


def _failed_checks(message: str) -> set[str]:
    return {name for name in pika_hooks.CHECKED if f"{name} (" in message}


def _assert_clear(message: str, internal: str) -> None:
    assert f"pika {VERSION} " in message, message
    assert internal in message, message
    assert "pip install 'pika>=1.3,<=1.4.4'" in message, message


def _plain_pika_works(url: str) -> None:
    """The altered pika still works on its own: the refusal is the check's, not a broken simulation."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", queue, b"still pika")
        assert connection.is_open
        _method, _properties, body = channel.basic_get(queue, auto_ack=True)
        assert body == b"still pika"
    finally:
        connection.close()


# -- the installed pika ------------------------------------------------------------------------------

def test_every_internal_the_transport_uses_is_checked() -> None:
    for internal in ("Connection._read_frame", "Connection._frame_buffer", "_process_frame",
                     "BlockingConnection._request_channel_dispatch", "Channel._consumers",
                     "BlockingConnection._flush_output", "Connection._output_marshaled_frames",
                     "Connection._body_max_length", "Connection._terminate_stream",
                     "BaseConnection.ioloop", "Connection.server_properties", "BlockingConnection._impl",
                     "BlockingChannel._impl"):
        assert any(internal in name for name in pika_hooks.CHECKED), internal


def test_the_installed_pika_passes_and_connections_tolerate_undecodable_headers(
        rabbit_url: str, first_connection: list[int]) -> None:
    connections = [connect(_settings(rabbit_url)) for _ in range(3)]
    try:
        assert first_connection == [1], "checked at the first connection only"
        assert pika_hooks._verdicts == {(BlockingConnection, type(connections[0]._impl)): None}
        for connection in connections:
            assert connection.is_open
            reader = vars(connection._impl)["_read_frame"]
            assert reader.__func__ is frames._read_frame_tolerantly
    finally:
        for connection in connections:
            connection.close()


@pytest.mark.usefixtures("raw_headers")
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_with_the_check_in_place_a_foreign_undecodable_message_is_dead_lettered(
        rabbit_url: str, names: Names, queue_type: str, first_connection: list[int]) -> None:
    app = PubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service(),
                 queue_type=queue_type)
    got = _recording(app)
    app.declare()
    exchange = app.settings.model_exchange
    bad = _bad("nested_600_deep", "bad-1", 99)
    _foreign_publish(rabbit_url, [(exchange, "Booking.created", message) for message in
                                  [_good("good-1", 1), bad, _good("good-2", 2)]])

    result = app.drain(timeout=15)

    assert first_connection == [1]
    assert sorted(got) == [1, 2], "the good neighbours, before and after, are handled"
    assert (result.handled, result.dead_lettered, result.redelivered) == (2, 1, 0)
    [letter] = app.list_dead_letters()
    assert (letter.reason, letter.message_id, letter.body) == ("decode_error", "bad-1", bad[0])
    app.close()


# -- an internal renamed away ------------------------------------------------------------------------

RENAMED: list[tuple[type, str, set[str]]] = [
    (pika.connection.Connection, "_read_frame", {READ_PATH, SKIP_RULE}),
    (pika.connection.Connection, "_frame_buffer", {READ_PATH, SKIP_RULE}),
    (BlockingConnection, "_request_channel_dispatch", {"BlockingConnection._request_channel_dispatch"}),
    (pika.channel.Channel, "_consumers", {"Channel._consumers"}),
    (BlockingChannel, "_impl", {"BlockingChannel._impl"}),
    (BlockingConnection, "_flush_output", {"BlockingConnection._flush_output"}),
    (pika.connection.Connection, "_output_marshaled_frames", {"Connection._output_marshaled_frames"}),
    (pika.connection.Connection, "_body_max_length", {"Connection._body_max_length"}),
    (pika.connection.Connection, "_terminate_stream", {"Connection._terminate_stream"}),
    (BaseConnection, "ioloop", {"BaseConnection.ioloop"}),
    (pika.connection.Connection, "server_properties", {"Connection.server_properties"}),
    (BlockingConnection, "_impl", set(pika_hooks.CHECKED) - {  # what is reached through it
        "Channel._consumers", "BlockingChannel._impl", "BlockingConnection._request_channel_dispatch",
        "BlockingConnection._flush_output"}),
]


@pytest.mark.parametrize(("owner", "name", "failing"), RENAMED, ids=[f"{o.__name__}.{n}" for o, n, _f in RENAMED])
def test_connecting_refuses_a_pika_without_the_internal(
        rabbit_url: str, monkeypatch: pytest.MonkeyPatch, owner: type, name: str, failing: set[str]) -> None:
    _rename(monkeypatch, owner, name)
    _plain_pika_works(rabbit_url)

    message = _refused(rabbit_url)

    _assert_clear(message, name)
    assert _failed_checks(message) == failing, message


def test_a_pika_without_server_properties_is_refused_and_the_connection_closed(
        rabbit_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _rename(monkeypatch, pika.connection.Connection, "server_properties")
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))

    with pytest.raises(ConfigurationError) as refused:
        pika_hooks.install(connection)

    _assert_clear(str(refused.value), "Connection.server_properties")
    assert connection.is_closed, "the refused connection is not left open"
    assert "_read_frame" not in vars(connection._impl), "nor made tolerant"


def test_the_refusal_is_remembered_not_checked_again(
        rabbit_url: str, monkeypatch: pytest.MonkeyPatch, first_connection: list[int]) -> None:
    _rename(monkeypatch, pika.connection.Connection, "_terminate_stream")
    first, second = _refused(rabbit_url), _refused(rabbit_url)
    assert first == second
    assert first_connection == [1]


# -- an internal still there, no longer doing its job -------------------------------------------------

def _main_branch_read_loop(self: Any, data_in: bytes) -> None:
    """pika main's ``Connection._on_data_available`` (c1765392): frames decoded in place, no ``_read_frame``."""
    buffer = self._frame_buffer
    buffer += data_in
    if self._processing_frame_buffer:
        return
    self._processing_frame_buffer = True
    offset = 0
    try:
        while offset < len(buffer):
            consumed_count, frame_value = pika.frame.decode_frame(bytes(buffer[offset:]))
            if not frame_value:
                break
            offset += consumed_count
            self.bytes_received += consumed_count
            self._process_frame(frame_value)
            if self._frame_buffer is not buffer:
                return
    finally:
        self._processing_frame_buffer = False
        if offset and self._frame_buffer is buffer:
            del buffer[:offset]


def _pika_main(monkeypatch: pytest.MonkeyPatch, keep_read_frame: bool) -> None:
    connection_class = pika.connection.Connection
    init_state = connection_class._init_connection_state

    def init_connection_state(self: Any) -> None:
        init_state(self)
        self._frame_buffer, self._processing_frame_buffer = bytearray(), False

    monkeypatch.setattr(connection_class, "_init_connection_state", init_connection_state)
    monkeypatch.setattr(connection_class, "_on_data_available", _main_branch_read_loop)
    monkeypatch.delattr(connection_class, "_trim_frame_buffer")
    if not keep_read_frame:
        monkeypatch.delattr(connection_class, "_read_frame")


def test_pika_main_without_read_frame_is_refused_through_the_public_api(
        rabbit_url: str, names: Names, monkeypatch: pytest.MonkeyPatch) -> None:
    _pika_main(monkeypatch, keep_read_frame=False)
    _plain_pika_works(rabbit_url)
    app = PubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service())

    with pytest.raises(ConfigurationError) as refused:
        app.declare()

    _assert_clear(str(refused.value), "Connection._read_frame")
    assert _failed_checks(str(refused.value)) == {READ_PATH, SKIP_RULE}
    assert "missing" in str(refused.value)
    app.close()


def test_a_read_frame_pika_no_longer_calls_is_refused(rabbit_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _pika_main(monkeypatch, keep_read_frame=True)  # the attribute is there: assigning it raises nothing
    _plain_pika_works(rabbit_url)

    message = _refused(rabbit_url)

    _assert_clear(message, "Connection._read_frame")
    assert "does not call it" in message, message
    assert _failed_checks(message) == {READ_PATH, SKIP_RULE}


def test_a_pika_on_which_the_recovery_itself_fails_is_refused(
        rabbit_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check feeds a real undecodable header, not just a call: a read path that reaches the reader but
    cannot recover the header (here: the reader made as strict as pika's own decoder) is refused too."""
    monkeypatch.setattr(frames, "decode_frame_tolerantly", pika.frame.decode_frame)

    message = _refused(rabbit_url)

    _assert_clear(message, "Connection._read_frame")
    assert "was not recovered" in message and "InvalidFieldTypeException" in message, message
    assert _failed_checks(message) == {READ_PATH}, message


def test_a_process_frame_that_stops_skipping_frame_type_minus_one_is_refused(
        rabbit_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    process_frame = pika.connection.Connection._process_frame

    def strict_process_frame(self: Any, frame_value: Any) -> None:
        if frame_value.frame_type < 0:
            raise pika.exceptions.InvalidFrameError(f"frame type {frame_value.frame_type}")
        process_frame(self, frame_value)

    monkeypatch.setattr(pika.connection.Connection, "_process_frame", strict_process_frame)
    _plain_pika_works(rabbit_url)

    message = _refused(rabbit_url)

    _assert_clear(message, "_process_frame")
    assert _failed_checks(message) == {SKIP_RULE}, message


def test_a_dispatch_request_that_no_longer_ends_the_wait_is_refused(
        rabbit_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BlockingConnection, "_request_channel_dispatch", lambda self, channel_number: None)

    message = _refused(rabbit_url)

    _assert_clear(message, "BlockingConnection._request_channel_dispatch")
    assert "did not end process_data_events" in message, message
    assert _failed_checks(message) == {"BlockingConnection._request_channel_dispatch"}, message
