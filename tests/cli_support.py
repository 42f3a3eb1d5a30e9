"""A slot the CLI tests fill with a configured PubSub, imported by ``--app tests.cli_support:app``."""

from __future__ import annotations

from pubsubpy import PubSub

app: PubSub | None = None
