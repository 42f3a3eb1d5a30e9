"""``pubsubpy.__version__`` is the distribution's version: pyproject.toml is its one source."""

from __future__ import annotations

import re
from pathlib import Path

import pubsubpy


def test_the_version_is_the_one_pyproject_declares() -> None:
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert declared is not None
    assert pubsubpy.__version__ == declared.group(1)
