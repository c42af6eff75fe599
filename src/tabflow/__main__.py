"""``python -m tabflow``: the same commands as the ``tabflow`` console script."""

import sys

from tabflow.cli import main

sys.exit(main())
