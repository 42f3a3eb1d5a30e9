"""Entry point of the ``pubsubpy`` command (click is an optional extra: ``pubsubpy-events[cli]``)."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from pubsubpy.cli._commands import build
    except ImportError as exc:
        if getattr(exc, "name", None) != "click":
            raise
        sys.stderr.write("the pubsubpy command needs click: pip install 'pubsubpy-events[cli]'\n")
        sys.exit(2)
    build()()


if __name__ == "__main__":
    main()
