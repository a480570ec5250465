"""``python -m wsslib ...``: the ``wsslib`` command line (:mod:`wsslib.apps.cli`)."""

import sys

from wsslib.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
