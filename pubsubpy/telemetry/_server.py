"""``pubsubpy worker --metrics-port``: Prometheus text on ``/metrics``, readiness on ``/healthz``.

Needs ``pip install 'pubsubpy-events[prometheus]'`` (the OpenTelemetry SDK and its
Prometheus exporter). Unless the application already installed an SDK meter
provider, one is installed with a Prometheus reader; the library's metrics and
the queue-depth gauges are then served as Prometheus text. ``/healthz`` answers
200 while the worker's consumer is attached to its queue and 503 while it is
starting, reconnecting or stopped (``pubsubpy.health``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from pubsubpy.errors import ConfigurationError

if TYPE_CHECKING:
    from pubsubpy.app import PubSub

__all__ = ["MetricsServer", "serve_metrics"]

log = logging.getLogger("pubsubpy.worker")


class MetricsServer:
    def __init__(self, server: ThreadingHTTPServer, closers: list[Callable[[], None]]) -> None:
        self._server = server
        self._closers = closers
        self.port: int = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="pubsubpy-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for close in self._closers:
            close()


def _prometheus() -> Callable[[], bytes]:
    """Install an SDK meter provider with a Prometheus reader (unless one is installed); the text renderer."""
    try:
        import prometheus_client
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
    except ImportError as exc:
        raise ConfigurationError("--metrics-port needs the Prometheus exporter: "
                                 f"pip install 'pubsubpy-events[prometheus]' ({exc})") from None
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    else:
        log.info("an OpenTelemetry meter provider is already installed; /metrics serves what prometheus_client "
                 "collects (add a PrometheusMetricReader to it to include pubsubpy's metrics)")
    return lambda: prometheus_client.generate_latest(prometheus_client.REGISTRY)


def serve_metrics(app: PubSub, port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Serve ``/metrics`` and ``/healthz`` for ``app``'s worker on ``host:port`` (0: any free port)."""
    render = _prometheus()
    from pubsubpy.telemetry._metrics import observe_pausing, observe_queue_depth

    closers = [observe_queue_depth(app)]
    observe_pausing(app)
    health = app.health

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, render(), "text/plain; version=0.0.4; charset=utf-8")
            elif path in ("/healthz", "/readyz"):
                ready, why = health.ready()
                self._answer(200 if ready else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("metrics server: " + format, *args)

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        for close in closers:
            close()
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc}") from None
    server.daemon_threads = True
    log.info("serving /metrics and /healthz on %s:%d", host, server.server_address[1])
    return MetricsServer(server, closers)
