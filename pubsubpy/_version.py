"""``__version__``, read from the installed distribution's metadata (pyproject.toml is its one source)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("pubsubpy-events")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
