from typing import Any

from pika.frame import Frame, ProtocolHeader

class Parameters:
    socket_timeout: float | None
    stack_timeout: float | None
    blocked_connection_timeout: float | None
    heartbeat: int | None
    connection_attempts: int
    retry_delay: float
    client_properties: dict[str, Any] | None
    virtual_host: str

class URLParameters(Parameters):
    def __init__(self, url: str) -> None: ...

class Connection:
    _frame_buffer: bytes
    def _read_frame(self) -> tuple[int, Frame | ProtocolHeader | None]: ...
