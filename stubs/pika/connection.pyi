import ssl
from typing import Any

from pika.credentials import ExternalCredentials, PlainCredentials
from pika.frame import Frame, ProtocolHeader

class SSLOptions:
    context: ssl.SSLContext
    server_hostname: str | None
    def __init__(self, context: ssl.SSLContext, server_hostname: str | None = None) -> None: ...

class Parameters:
    socket_timeout: float | None
    stack_timeout: float | None
    blocked_connection_timeout: float | None
    heartbeat: int | None
    connection_attempts: int
    retry_delay: float
    client_properties: dict[str, Any] | None
    virtual_host: str
    host: str
    port: int
    credentials: PlainCredentials | ExternalCredentials
    ssl_options: SSLOptions | None

class URLParameters(Parameters):
    def __init__(self, url: str) -> None: ...

class Connection:
    _frame_buffer: bytes
    def _read_frame(self) -> tuple[int, Frame | ProtocolHeader | None]: ...
