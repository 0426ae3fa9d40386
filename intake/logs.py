"""Logging set-up: plain or JSON lines on stderr.

Privacy rule enforced by convention and by tests: modules log counts, ids, stages and
error classes; never a message body or subject above DEBUG. Extra fields passed with
``extra={...}`` appear in JSON output so operators can filter on them.
"""

from __future__ import annotations

import json
import logging
import sys

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info and record.levelno >= logging.ERROR:
            data["error"] = _error(record)
        return json.dumps(data, ensure_ascii=False, default=str)


def _error(record: logging.LogRecord) -> str:
    assert record.exc_info is not None
    return describe_error(record.exc_info[1])


def describe_error(exc: BaseException | None) -> str:
    """An exception for a log line: its ``repr``, never a traceback or its ``str``; for a
    ``UnicodeError`` only where and why, for a database error the driver's first line.

    Why: ``str()`` of a database error carries the statement's parameters (a mail's text,
    a resident's address: SQLAlchemy prints ``[parameters: (...)]``), and a traceback
    prints that string; ``repr`` names the class and the driver's message, of which
    PostgreSQL's DETAIL lines may quote a row.
    """
    if isinstance(exc, UnicodeError):
        # Its repr holds the whole string or bytes it failed on: a password read from a
        # file that is not UTF-8, a mail's text (review rv9b F1). Where and why only.
        encoding = getattr(exc, "encoding", "?")
        start = getattr(exc, "start", "?")
        reason = getattr(exc, "reason", "")
        return f"{type(exc).__name__}(encoding={encoding!r}, position={start}, {reason!r})"
    orig = getattr(exc, "orig", None)
    if isinstance(orig, Exception):
        # A database error (SQLAlchemy's DBAPIError around the driver's): the driver's
        # first line only. PostgreSQL adds DETAIL lines that quote the row ("Failing row
        # contains (...)": a message's text; review rv9b), and no parameters are shown.
        first = str(orig).strip().split("\n", 1)[0]
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        where = f", sqlstate={state}" if state else ""
        return f"{type(exc).__name__}({type(orig).__name__}: {first!r}{where})"
    return repr(exc)


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if record.exc_info and record.levelno >= logging.ERROR:
            extra["error"] = _error(record)  # as in JSON; was dropped in plain output
        when = self.formatTime(record, "%Y-%m-%d %H:%M:%S")
        base = f"{when} {record.levelname} {record.name}: {record.getMessage()}"
        return base + ("" if not extra else " " + " ".join(f"{k}={v}" for k, v in extra.items()))


def configure(level: int = logging.INFO, as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that would log protocol traffic (and so mail content) stay quiet.
    for name in ("imapclient", "aiosmtplib", "apscheduler", "mail.log", "alembic"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
