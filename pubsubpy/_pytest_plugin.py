"""pubsubpy's pytest plugin (entry point ``pytest11``, name ``pubsubpy``): loaded by pytest wherever
pubsubpy is installed; ``-p no:pubsubpy`` turns it off.

Fixture ``memory_broker``: a fresh ``memory://NAME`` URL for one test (``pubsubpy.testing.memory_broker()``);
every ``PubSub`` given it shares one in-process broker, dropped after the test.

Loading it imports nothing but pytest and this package's root (not Django, not pika) and changes no
state: the fixture imports ``pubsubpy.testing`` when a test asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

__all__ = ["memory_broker"]


@pytest.fixture
def memory_broker() -> Iterator[str]:
    """A fresh ``memory://NAME`` URL shared by the test's apps; its broker is dropped afterwards."""
    from pubsubpy import testing

    url = testing.memory_broker()
    try:
        yield url
    finally:
        testing.drop_memory_broker(url)
