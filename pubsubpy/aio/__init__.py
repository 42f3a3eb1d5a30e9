"""asyncio: ``AsyncPubSub``, the same typed events, subscriptions and guarantees as ``PubSub``.

See ``pubsubpy.aio._app`` for how waiting is moved off the event loop.
"""

from pubsubpy.aio._app import AsyncPubSub

__all__ = ["AsyncPubSub"]
