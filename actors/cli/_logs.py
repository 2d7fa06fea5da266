"""The logs of the services and ``dev``: stderr, as text or as one JSON object a line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["LOG_FIELDS", "JsonFormatter", "TextFormatter", "setup_logging"]

#: The ``extra`` fields of a log record that the formatters show when present.
LOG_FIELDS: Final = ("instance", "step", "attempt", "activity")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: value for name in LOG_FIELDS if (value := getattr(record, name, None)) is not None
    }


class TextFormatter(logging.Formatter):
    """``time LEVEL logger[pid]: message key=value ...``: the fields of :data:`LOG_FIELDS`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = " ".join(f"{name}={value}" for name, value in _fields(record).items())
        return f"{line} {fields}" if fields else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, ``pid``, the fields of :data:`LOG_FIELDS` that the record has,
    and ``exception`` (the formatted traceback) when it has one.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        data.update(_fields(record))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        # default=str: a field is whatever a caller put in ``extra``; never fail to log it.
        return json.dumps(data, ensure_ascii=False, default=str)


def setup_logging(level: str, log_format: str) -> None:
    """Log to stderr at ``level`` in ``log_format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
