"""``python -m actors.worker --activities my.module``: an activity worker.

The same as ``python -m actors worker`` (and ``actors worker``): the same
flags, ``ACTORS_*`` variables, config file and exit codes; see
:mod:`actors.cli._services`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .cli import run_service

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run a worker with ``argv`` (default ``sys.argv[1:]``); the exit code.

    Usage errors (flags, variables, config file, modules that do not import
    or hold no activities) exit 2 in one line; so does a broker that cannot
    be reached or refuses the credentials.
    """
    return run_service("worker", argv, prog_name="python -m actors.worker")


if __name__ == "__main__":
    sys.exit(main())
