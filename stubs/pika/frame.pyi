from typing import Generic, TypeVar

T = TypeVar("T")

class Method(Generic[T]):
    channel_number: int
    method: T
