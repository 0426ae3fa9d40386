"""Log lines name an error without leaking what a database error's text carries."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import sqlalchemy as sa

from intake.logs import JsonFormatter, PlainFormatter


def _record_of_a_database_error() -> logging.LogRecord:
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.execute(sa.text("create table t (x text unique)"))
        conn.execute(sa.text("insert into t values (:x)"), {"x": "しにたい（本文）"})
        try:
            conn.execute(sa.text("insert into t values (:x)"), {"x": "しにたい（本文）"})
        except sa.exc.IntegrityError:
            logger = logging.getLogger("intake.test")
            return logger.makeRecord(
                "intake.test", logging.ERROR, __file__, 1, "store failed", (), sys.exc_info()
            )
    raise AssertionError("the second insert should have failed")


@pytest.mark.parametrize("formatter", [PlainFormatter(), JsonFormatter()])
def test_an_error_is_named_without_the_statement_parameters(formatter: logging.Formatter) -> None:
    line = formatter.format(_record_of_a_database_error())
    assert "IntegrityError" in line  # the operator learns what failed ...
    assert "本文" not in line and "しにたい" not in line  # ... never the mail's words
    assert "Traceback" not in line


def test_json_lines_stay_one_json_object() -> None:
    assert json.loads(JsonFormatter().format(_record_of_a_database_error()))["level"] == "ERROR"
