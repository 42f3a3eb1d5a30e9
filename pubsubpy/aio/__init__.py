"""asyncio: ``AsyncPubSub``, the same typed events, subscriptions and guarantees as ``PubSub``.

See ``pubsubpy.aio.app`` for how waiting is moved off the event loop.
"""

from pubsubpy.aio.app import AsyncPubSub

__all__ = ["AsyncPubSub"]
