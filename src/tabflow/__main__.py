"""``python -m tabflow``: the same commands as the ``tabflow`` console script."""

from tabflow.cli import run

run()
