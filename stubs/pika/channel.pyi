from collections.abc import Callable
from typing import Any

from pika.frame import Method
from pika.spec import Basic, BasicProperties

class Channel:
    channel_number: int
    @property
    def is_open(self) -> bool: ...
    _consumers: dict[str, Callable[[Channel, Basic.Deliver, BasicProperties, bytes], None]]
    def basic_publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: BasicProperties | None = ...,
        mandatory: bool = ...,
    ) -> None: ...
    def basic_ack(self, delivery_tag: int = ..., multiple: bool = ...) -> None: ...
    def confirm_delivery(
        self,
        ack_nack_callback: Callable[[Method[Any]], None],
        callback: Callable[[Method[Any]], None] | None = ...,
    ) -> None: ...
    def add_on_return_callback(
        self, callback: Callable[[Channel, Basic.Return, BasicProperties, bytes], None]
    ) -> None: ...
    def add_on_close_callback(self, callback: Callable[[Channel, Exception], None]) -> None: ...
