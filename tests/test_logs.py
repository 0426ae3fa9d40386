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


@pytest.mark.integration
def test_a_postgresql_error_is_logged_without_the_row_its_detail_quotes(postgres) -> None:
    """libpq's message adds "DETAIL: Failing row contains (...)": the whole row, a mail's
    words among them; only the first line and the SQLSTATE are logged (review rv9b)."""
    engine = sa.create_engine(postgres.new_database("logdetail"), hide_parameters=True)
    with engine.begin() as conn:
        conn.execute(sa.text("create table t (body text, status text not null)"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("insert into t values ('しにたい（本文）', null)"))
    except sa.exc.IntegrityError:
        record = logging.getLogger("intake.test").makeRecord(
            "intake.test", logging.ERROR, __file__, 1, "store failed", (), sys.exc_info()
        )
    else:
        raise AssertionError("the insert should have failed")
    finally:
        engine.dispose()
    for formatter in (PlainFormatter(), JsonFormatter()):
        line = formatter.format(record)
        assert "NotNullViolation" in line and "23502" in line
        assert "しにたい" not in line and "本文" not in line
