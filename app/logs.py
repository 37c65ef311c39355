"""Logging for every syncgov process: ``LOG_FORMAT`` (text, json, auto) and ``LOG_LEVEL``.

``json``: one JSON object per line on stderr, with ``ts`` (UTC, ISO 8601, ms), ``level``,
``logger``, ``msg``, the context fields (``warehouse_id``, ``order_id``, ``milestone_id``,
``partition``) where known, and ``exc`` (the traceback) when there is one. ``text``: one
readable line each, context fields appended as ``key=value``. ``auto`` (the default):
text when stderr is a terminal, json otherwise (a container, a file, a pipe).

Context, two ways (both end up as fields of the line)::

    log.info("posted", extra=logs.fields(order_id=oid, milestone_id=mid))  # one line
    with logs.context(warehouse_id=wh, partition=p):                       # every line inside
        ...

The worker hands the same handler to Faust (:func:`dict_config`), so Faust's, mode's and
aiokafka's own log lines are formatted alike.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import logging.config
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import IO, Any

import orjson

#: The context fields a line may carry, in the order they are written.
CONTEXT_FIELDS = ("warehouse_id", "order_id", "milestone_id", "partition")
FORMATS = ("auto", "text", "json")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("syncgov_log_context", default=None)


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for one log call: the known context fields that are not None."""
    unknown = set(values) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"not a log context field: {', '.join(sorted(unknown))}")
    return {k: v for k, v in values.items() if v is not None}


@contextlib.contextmanager
def context(**values: Any) -> Iterator[None]:
    """Every line logged inside (this task or thread) carries these fields."""
    token = _context.set({**(_context.get() or {}), **fields(**values)})
    try:
        yield
    finally:
        _context.reset(token)


def _context_of(record: logging.LogRecord) -> dict[str, Any]:
    found = dict(_context.get() or {})
    for name in CONTEXT_FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            found[name] = value
    return {name: found[name] for name in CONTEXT_FIELDS if name in found}


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_context_of(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z INFO syncgov.source published 3 order events order_id=...``"""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_timestamp(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        ctx = _context_of(record)
        if ctx:
            text += " " + " ".join(f"{k}={v}" for k, v in ctx.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler on whatever ``sys.stderr`` is when a record is written."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def resolve_format(log_format: str, stream: IO[str] | None = None) -> str:
    """``text`` or ``json`` for ``LOG_FORMAT`` (``auto``: text on a terminal)."""
    if log_format in ("text", "json"):
        return log_format
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if resolve_format(log_format) == "json" else TextFormatter()


def _from_env(env: Mapping[str, str]) -> tuple[str, str]:
    """(format, level) from the environment, leniently: a bad value is the settings' to report."""
    log_format = env.get("LOG_FORMAT", "auto").strip().lower()
    level = env.get("LOG_LEVEL", "info").strip().lower()
    return (log_format if log_format in FORMATS else "auto"), (level if level in LEVELS else "info")


def setup(env: Mapping[str, str] | None = None, *, log_format: str | None = None, level: str | None = None) -> str:
    """Configure the root logger: one stderr handler in the chosen format. Returns the format
    in effect (``text`` or ``json``)."""
    env_format, env_level = _from_env(os.environ if env is None else env)
    chosen = resolve_format(log_format or env_format)
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, StderrHandler) or (
            isinstance(old, logging.StreamHandler) and getattr(old, "stream", None) in (sys.stderr, sys.stdout)
        ):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level or env_level])
    logging.captureWarnings(True)
    return chosen


def dict_config(log_format: str, level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for Faust's worker (its ``logging_config`` setting): the
    same stderr handler and format for Faust's, mode's, aiokafka's and our own loggers."""
    name = "json" if resolve_format(log_format) == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": f"{__name__}.JsonFormatter"},
            "text": {"()": f"{__name__}.TextFormatter"},
        },
        "handlers": {
            # bound to stderr now: Faust's worker later points sys.stdout/sys.stderr at a logger proxy
            "default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": name},
        },
        "root": {"level": logging.getLevelName(LEVELS[level]), "handlers": ["default"]},
    }


def json_enabled() -> bool:
    """True when the root logger writes JSON lines."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def error(message: str, *, command: str | None = None) -> None:
    """A command's error for its user, on stderr: a JSON log line (logger ``syncgov.<command>``)
    when logs are JSON, else ``syncgov <command>: <message>``."""
    if json_enabled():
        logging.getLogger(f"syncgov.{command}" if command else "syncgov").error(message)
    else:
        print(f"syncgov {command}: {message}" if command else f"syncgov: {message}", file=sys.stderr, flush=True)
