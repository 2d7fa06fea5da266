"""The example workflows (``*.yaml`` beside this file), a schedule, and the activities they use.

They come with the package, so ``python -m actors dev`` and ``demo`` run them
wherever the package is installed. Serve the activities with ``python -m
actors.worker --activities actors.examples.activities``.
"""

from ._definitions import ACTIVITIES as ACTIVITIES
from ._definitions import definitions as definitions
from ._definitions import schedules as schedules

__all__ = [
    "ACTIVITIES",
    "definitions",
    "schedules",
]
