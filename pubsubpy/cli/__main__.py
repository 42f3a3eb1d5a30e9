"""``python -m pubsubpy.cli ...``: the ``pubsubpy`` command."""

from pubsubpy.cli import main

if __name__ == "__main__":
    main()
