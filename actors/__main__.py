"""``python -m actors``: the command line (:mod:`actors.cli`), as the ``actors`` script runs it."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog_name="python -m actors"))
