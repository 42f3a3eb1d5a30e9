"""Shared fixtures: the real broker (skip locally when down, fail under CI=true) and unique names."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pika
import pika.exceptions
import pytest

from pubsubpy import DrainResult, PubSub
from pubsubpy.transports.rabbitmq import _broker as broker

RABBIT_URL = os.environ.get("PUBSUBPY_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_available: bool | None = None


def rabbit_available() -> bool:
    global _available
    if _available is None:
        try:
            params = pika.URLParameters(RABBIT_URL)
            params.socket_timeout = 3
            params.stack_timeout = 5
            params.connection_attempts = 1
            pika.BlockingConnection(params).close()
            _available = True
        except (pika.exceptions.AMQPError, OSError):
            _available = False
    return _available


def require_rabbit() -> None:
    if rabbit_available():
        return
    if IN_CI:
        pytest.fail(f"RabbitMQ is not reachable at {RABBIT_URL} and CI=true: broker tests must run in CI")
    pytest.skip(f"RabbitMQ is not reachable at {RABBIT_URL}")


LEFT_OPEN_ALLOWED = 25  # connections a test module may leave to the broker (a leak past it fails the module)


def open_broker_connections() -> int | None:
    """How many TCP connections to the broker under test are established on this machine (the broker's ends,
    read from /proc/net/tcp*, so it costs no broker call); None when that cannot be read or the broker is
    elsewhere."""
    parsed = urllib.parse.urlsplit(RABBIT_URL)
    if parsed.hostname not in ("127.0.0.1", "localhost"):
        return None
    port = f":{parsed.port or 5672:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines, None)
                count += sum(1 for line in lines
                             if (fields := line.split())[1].endswith(port) and fields[3] == "01")
        except OSError:
            if table.endswith("tcp"):
                return None
    return count


@pytest.fixture(autouse=True, scope="module")
def connections_closed_after_each_module() -> Iterator[None]:
    """A module that leaves connections to the broker open fails here, by name: left alone, leaked
    connections reach the broker's socket limit and later modules see it stop answering."""
    before = open_broker_connections()
    yield
    if before is None:
        return
    deadline = time.monotonic() + 15
    while (now := open_broker_connections() or 0) > before + LEFT_OPEN_ALLOWED and time.monotonic() < deadline:
        time.sleep(0.2)
    if now > before + LEFT_OPEN_ALLOWED:
        pytest.fail(f"{now - before} more connections to the broker are open after this module than before it "
                    f"({before} before, {now} after; at most {LEFT_OPEN_ALLOWED} more allowed): a leak")


_diagnosed = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """The first test that fails because the broker did not answer gets the broker's state and the machine's
    disk and sockets in its report: what made it stop answering is gone by the time anyone reads a CI log."""
    global _diagnosed
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if _diagnosed or not report.failed or "BrokerUnavailable" not in str(report.longrepr):
        return
    _diagnosed = True
    commands = [["rabbitmqctl", "-q", "status"], ["rabbitmqctl", "-q", "list_connections", "name", "state"],
                ["df", "-h", "/", "/var/lib/rabbitmq"], ["ss", "-s"]]
    sections = [f"open connections to the broker under test (/proc/net/tcp): {open_broker_connections()}"]
    for command in commands:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=20)
            sections.append(f"$ {' '.join(command)}\n{(done.stdout + done.stderr)[-6000:]}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            sections.append(f"$ {' '.join(command)}\n{exc!r}")
    report.sections.append(("the broker when it stopped answering", "\n".join(sections)))


_version: tuple[int, int, int] | None = None


def broker_version() -> tuple[int, int, int]:
    """The version of the RabbitMQ under test (``PUBSUBPY_TEST_URL``), as its handshake states it."""
    global _version
    if _version is None:
        require_rabbit()
        connection = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
        try:
            _version = broker.broker_version(connection)
        finally:
            connection.close()
    return _version


@pytest.fixture
def rabbit_url() -> str:
    require_rabbit()
    return RABBIT_URL


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, step: float = 0.02, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


class Names:
    """Unique exchange/service names for one test, and cleanup of what they created on RabbitMQ."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:10]
        self.exchanges: list[str] = []
        self.services: list[str] = []
        self.queues: list[str] = []

    def exchange(self, label: str = "models") -> str:
        name = f"t-{self.tag}-{label}"
        self.exchanges.append(name)
        return name

    def service(self, label: str = "svc") -> str:
        name = f"t-{self.tag}-{label}"
        self.services.append(name)
        return name

    def cleanup(self) -> None:
        if not self.exchanges and not self.services and not self.queues:
            return
        if not rabbit_available():
            return
        connection = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
        try:
            channel = connection.channel()
            queues = list(self.queues) + [f"{exchange}.log" for exchange in self.exchanges]  # event logs
            for service in self.services:
                queues += [f"{service}.events", f"{service}.dead-letters", f"{service}.events.ledger"]
                queues += [f"{service}.retry.{ms}ms" for ms in _retry_levels()]
                queues += [f"{service}.shard.{v}{n}" for v in ("", "v2.") for n in range(8)] + [f"{service}.parked"]
            for queue in queues:
                channel.queue_delete(queue)
            for exchange in self.exchanges + [f"{s}.{kind}" for s in self.services
                                              for kind in ("dlx", "shards", "shards.v2", "presence")]:
                channel.exchange_delete(exchange)
        finally:
            connection.close()


def _retry_levels() -> list[int]:
    """Every retry/deferral queue delay the tests' settings can make (topology.py): bases doubling,
    capped at 300 s (retries) and 60 s or the window (deferrals)."""
    levels = {1500, 60_000}
    for base in (0.01, 0.02, 0.05, 0.1, 0.2, 1.0):
        for step in range(12):
            levels.add(int(min(base * 2**step, 300) * 1000))
            levels.add(int(min(max(base, 0.1) * 2**step, 60) * 1000))
    # and each one's jittered steps (topology.retry_delays_ms): left behind, a quorum retry queue of every test
    # piled up, and RabbitMQ 3.10 restarting over hundreds of them stopped answering
    levels |= {ms * (8 - k) // 8 for ms in list(levels) for k in range(1, 4)}
    return sorted(levels - {0})


@pytest.fixture
def names() -> Iterator[Names]:
    n = Names()
    yield n
    n.cleanup()


def refusing_queue(url: str, names: Names, exchange: str, max_length: int) -> str:
    """A queue bound to ``exchange`` for ``Booking.*`` that holds ``max_length`` messages, then nacks
    (``x-overflow: reject-publish``): how tests make the broker refuse a publish."""
    queue = f"{names.tag}-refusing-{max_length}"
    names.queues.append(queue)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        channel.queue_declare(queue, arguments={"x-max-length": max_length, "x-overflow": "reject-publish"})
        channel.queue_bind(queue, exchange, "Booking.*")
    finally:
        connection.close()
    return queue


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def connection_pids(service: str) -> list[str]:
    """The broker's open connections named for ``service`` (``pubsubpy:<service>``), by their process id."""
    out = subprocess.run(["rabbitmqctl", "-q", "list_connections", "--no-table-headers", "pid", "client_properties"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t", 1)[0] for line in out.splitlines() if f"pubsubpy:{service}" in line]


def free_port() -> int:
    """A local TCP port nothing listens on (refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a broker that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    server.close()


class RunningWorker:
    """``app.run(stop=...)`` on a thread of its own (``running_worker``); ``results`` holds what it returned."""

    def __init__(self, app: PubSub, concurrency: int) -> None:
        self.stop = threading.Event()
        self.results: list[DrainResult] = []
        self.thread = threading.Thread(
            target=lambda: self.results.append(app.run(concurrency=concurrency, stop=self.stop)), daemon=True)


@contextlib.contextmanager
def running_worker(app: PubSub, concurrency: int = 1) -> Iterator[RunningWorker]:
    """A worker running while the block does; stopped (and joined, within 30 s) when it ends."""
    worker = RunningWorker(app, concurrency)
    worker.thread.start()
    try:
        yield worker
    finally:
        worker.stop.set()
        worker.thread.join(30)
