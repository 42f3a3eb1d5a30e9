"""examples/middleware.py (the README's middleware example) on memory:// and the real broker."""

from __future__ import annotations

import re

import pytest

from examples.middleware import run


@pytest.mark.parametrize("where", ["memory", "rabbitmq"])
def test_the_tenant_travels_and_every_message_is_audited(where: str, request: pytest.FixtureRequest) -> None:
    url = "memory://" if where == "memory" else request.getfixturevalue("rabbit_url")
    lines = run(url)
    assert "billing order 1 for tenant acme" in lines
    audit = [line for line in lines if line.startswith("audit:")]
    assert len(audit) == 2
    assert re.fullmatch(r"audit: order event [0-9a-f]{32} for tenant acme: handled", audit[0])
    assert re.fullmatch(r"audit: order event [0-9a-f]{32} for tenant acme: dead_lettered \(rejected\)", audit[1])
