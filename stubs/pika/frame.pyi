from typing import Generic, TypeVar

from pika.spec import BasicProperties

T = TypeVar("T")

class Frame:
    frame_type: int
    channel_number: int
    def marshal(self) -> bytes: ...

class Method(Frame, Generic[T]):
    method: T
    def __init__(self, channel_number: int, method: T) -> None: ...

class Header(Frame):
    body_size: int
    properties: BasicProperties
    def __init__(self, channel_number: int, body_size: int, props: BasicProperties) -> None: ...

class Body(Frame):
    fragment: bytes
    def __init__(self, channel_number: int, fragment: bytes) -> None: ...

class Heartbeat(Frame):
    def __init__(self) -> None: ...

class ProtocolHeader:
    frame_type: int
    def marshal(self) -> bytes: ...

def decode_frame(data_in: bytes) -> tuple[int, Frame | ProtocolHeader | None]: ...
