"""The HTTP API's bounds, shared by its handlers and its OpenAPI document."""

from __future__ import annotations

from typing import Final

__all__ = [
    "API_VERSION",
    "DEFAULT_PAGE",
    "MAX_BODY_BYTES",
    "MAX_OFFSET",
    "MAX_PAGE",
    "MAX_REASON",
    "MAX_WAIT",
]

API_VERSION: Final = "1.0.0"
#: The largest request body read; a larger one is refused with 413.
MAX_BODY_BYTES: Final = 1024 * 1024
#: The longest ``wait`` of ``GET /workflows/{id}/result``, in seconds.
MAX_WAIT: Final = 60.0
#: ``GET /workflows``: rows per page by default, at most, and the largest offset.
DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000
MAX_OFFSET: Final = 1_000_000_000
#: The longest cancel or terminate reason, in characters.
MAX_REASON: Final = 4096
