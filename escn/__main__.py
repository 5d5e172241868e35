"""``python -m escn ...``: the same as the ``escn`` command."""

from escn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
