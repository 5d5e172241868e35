"""``python -m escn ...``: the same as the ``escn`` command."""

from escn.cli import run

if __name__ == "__main__":
    run()
