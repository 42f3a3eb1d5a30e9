"""``python -m pubsubpy ...``: the ``pubsubpy`` command."""

from __future__ import annotations

from pubsubpy.cli import main

if __name__ == "__main__":
    main()
