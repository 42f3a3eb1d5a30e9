"""examples/versions.py on the real broker: v1 producer -> v2 consumer (upcast), v2 producer -> v1 consumer."""

from __future__ import annotations

import pytest

from examples.versions import run


@pytest.mark.parametrize("where", ["memory", "rabbitmq"])
def test_two_versions_between_two_services(where: str, request: pytest.FixtureRequest) -> None:
    url = "memory://" if where == "memory" else request.getfixturevalue("rabbit_url")
    lines = run(url)
    assert "new consumer: IssuedV2(id=1, amount=12, amount_cents=1200, currency='EUR') (sent as v1)" in lines
    assert "new consumer: IssuedV2(id=2, amount=5, amount_cents=500, currency='EUR') (sent as v2)" in lines
    assert "old consumer: IssuedV1(id=1, amount=12) (sent as v1)" in lines
    assert "old consumer: IssuedV1(id=2, amount=5) (sent as v2)" in lines
    drained = [line for line in lines if "drained" in line]
    assert all("2 handled" in line and "0 dead-lettered" in line for line in drained), drained
