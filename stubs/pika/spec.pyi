from typing import Any

FRAME_METHOD: int
FRAME_HEADER: int
FRAME_BODY: int
FRAME_HEADER_SIZE: int
FRAME_END: int
FRAME_END_SIZE: int

class BasicProperties:
    INDEX: int
    FLAG_CONTENT_TYPE: int
    FLAG_CONTENT_ENCODING: int
    FLAG_HEADERS: int
    FLAG_DELIVERY_MODE: int
    FLAG_PRIORITY: int
    FLAG_CORRELATION_ID: int
    FLAG_REPLY_TO: int
    FLAG_EXPIRATION: int
    FLAG_MESSAGE_ID: int
    FLAG_TIMESTAMP: int
    FLAG_TYPE: int
    FLAG_USER_ID: int
    FLAG_APP_ID: int
    FLAG_CLUSTER_ID: int
    content_type: str | None
    content_encoding: str | None
    headers: dict[str, Any] | None
    delivery_mode: int | None
    priority: int | None
    correlation_id: str | None
    reply_to: str | None
    expiration: str | None
    message_id: str | None
    timestamp: int | None
    type: str | None
    user_id: str | None
    app_id: str | None
    cluster_id: str | None
    def __init__(
        self,
        content_type: str | None = ...,
        content_encoding: str | None = ...,
        headers: dict[str, Any] | None = ...,
        delivery_mode: int | None = ...,
        priority: int | None = ...,
        correlation_id: str | None = ...,
        reply_to: str | None = ...,
        expiration: str | None = ...,
        message_id: str | None = ...,
        timestamp: int | None = ...,
        type: str | None = ...,
        user_id: str | None = ...,
        app_id: str | None = ...,
        cluster_id: str | None = ...,
    ) -> None: ...
    def decode(self, encoded: bytes, offset: int = ...) -> BasicProperties: ...

class Basic:
    class Deliver:
        consumer_tag: str
        delivery_tag: int
        redelivered: bool
        exchange: str
        routing_key: str
    class GetOk:
        delivery_tag: int
        redelivered: bool
        exchange: str
        routing_key: str
        message_count: int
    class Return:
        reply_code: int
        reply_text: str
        exchange: str
        routing_key: str
    class Ack:
        delivery_tag: int
        multiple: bool
        def __init__(self, delivery_tag: int = ..., multiple: bool = ...) -> None: ...
    class Nack:
        delivery_tag: int
        multiple: bool
        requeue: bool

class Queue:
    class DeclareOk:
        queue: str
        message_count: int
        consumer_count: int
