"""DATABASE_URL (PostgreSQL in the test command) or SQLite, for both example projects."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url


def database(default_sqlite: Path) -> dict[str, Any]:
    url = os.environ.get("DATABASE_URL")
    if url:
        return dict(dj_database_url.parse(url, conn_max_age=0))
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(default_sqlite)}
