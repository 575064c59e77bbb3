"""Log formatting: one JSON object per line (`log_format=json`, the default) or plain text.

Stdlib logging only. Structured fields travel in `extra={"fields": {...}}`; the current request's id
(a context variable set by the HTTP edge) is added to every line written while serving it, so a
warning deep in the pipeline can be joined with its access line.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from typing import Any

from model_server.api.context import request_id_var
from model_server.settings import LogFormat, Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(getattr(record, "fields", None) or {})
    request_id = request_id_var.get()
    if request_id and "request_id" not in fields:
        fields["request_id"] = request_id
    return fields


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...fields, "exc"?}` on one line (non-ASCII escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with structured fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        head, newline, tail = line.partition("\n")  # keep a traceback below the fields
        pairs = " ".join(f"{key}={json.dumps(value, default=str)}" for key, value in fields.items())
        return f"{head} {pairs}{newline}{tail}"


def logging_config(settings: Settings) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict for the whole process (uvicorn's loggers included), for
    `uvicorn.run(log_config=...)`. uvicorn's own access log is replaced by ours (`model_server.access`)."""
    level = settings.log_level.upper()
    factory = f"{__name__}.{'JsonFormatter' if settings.log_format is LogFormat.json else 'TextFormatter'}"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": factory}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def configure_logging(settings: Settings) -> None:
    """Configure the process (the CLI's `serve`): every line in the chosen format, on stderr."""
    logging.config.dictConfig(logging_config(settings))
    _route_library_output()


def _route_library_output() -> None:
    """transformers logs through its own handler and draws tqdm bars on stderr: send its records through
    ours and drop the bars, so each line stays one record in the chosen format."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as transformers_logging
    except ImportError:  # pragma: no cover - both come with the model dependencies
        return
    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
