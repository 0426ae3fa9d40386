"""The acknowledgement flood guard reads the cases of its window, not the mailbox (issue 7).

Each new mail asks whether its sender was acknowledged within ``ack_window_hours`` of its
arrival (``pipeline._recent_ack``; the bulk path asks once per batch). Both queries filter
on the mailbox, ``lower(sender)``, the acknowledgement state and ``created_at``, and no
index served them: each read every case the mailbox ever had. Migration 0004 adds
``ix_case_mailbox_created_at``; what must hold is that the queries the real pipeline sends
use it, on SQLite (which never gathers statistics here) and on PostgreSQL (after ANALYZE,
as autovacuum does), with a year of cases in the table, and that a database at revision
0003 upgrades to it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, event, insert, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from intake import samples
from intake.config import load_settings
from intake.fetch import Mailbox
from intake.localpostgres import LocalPostgres
from intake.localservers import LocalDovecot, LocalSMTP
from intake.migrate import alembic_config, current_revision, head_revision, migrate
from intake.pipeline import Service, _recent_ack, process_new_mail
from intake.store import Case, to_db
from tests.helpers import write_config

pytestmark = pytest.mark.integration

INDEX = "ix_case_mailbox_created_at"
HISTORY = 3000  # a year of cases: the guard's window (a day each side) holds a few of them


@pytest.fixture(params=["sqlite", "postgresql"])
def svc(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Service]:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    path = write_config(tmp_path, dovecot, smtp_server)
    name = ""
    if request.param == "postgresql":
        server: LocalPostgres = request.getfixturevalue("postgres")
        name = f"fg{os.getpid()}_{time.monotonic_ns()}"
        sqlite_url = f"sqlite:///{(tmp_path / 'intake.db').as_posix()}"
        body = path.read_text(encoding="utf-8")
        assert sqlite_url in body
        path.write_text(body.replace(sqlite_url, server.new_database(name)), encoding="utf-8")
    service = Service.from_settings(load_settings(path))
    yield service
    service.engine.dispose()
    if name:
        server.drop_database(name)


def fill_history(svc: Service, now: datetime) -> None:
    """A year of acknowledged cases from many senders, none within two days of ``now``."""
    rng = random.Random(7)
    rows = [
        {
            "mailbox": svc.settings.mailbox.key,
            "created_at": to_db(now - timedelta(days=2, minutes=rng.randrange(363 * 24 * 60))),
            "sender": f"Resident{rng.randrange(800)}@Example.jp",
            "topic": "other", "topics": "[]", "urgent": False, "urgent_reasons": "[]",
            "matches": "[]", "language": "ja", "needs_human": False, "partner": "city",
            "status": "open", "ack_state": "sent",
        }
        for _ in range(HISTORY)
    ]  # fmt: skip
    with svc.engine.begin() as conn:
        conn.execute(insert(Case), rows)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")


class GuardQueries:
    """The flood guard's statements (with their parameters) as the pipeline sends them."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def __call__(self, _c: Any, _cur: Any, statement: str, params: Any, *_a: Any) -> None:
        if 'FROM "case"' in statement and "lower(" in statement and "ack_state" in statement:
            self.seen.append((statement, params))


def plan(engine: Engine, statement: str, params: Any) -> str:
    """The query plan of ``statement`` as one text (index names included)."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            return "\n".join(str(row[-1]) for row in rows)
        rows = conn.exec_driver_sql("EXPLAIN " + statement, params).all()
        return "\n".join(str(row[0]) for row in rows)


def test_the_flood_guard_queries_use_the_window_index(svc: Service, dovecot: LocalDovecot) -> None:
    now = datetime.now(svc.calendar.tz)
    fill_history(svc, now)
    with dovecot.connect() as client:
        for i in range(3):
            mail = samples.consultation(
                f"Resident{i}@Example.jp", "相談", "友だちのことで相談です。"
            )
            client.append("INBOX", mail)
    guard = GuardQueries()
    event.listen(svc.engine, "before_cursor_execute", guard)
    try:
        with Mailbox(svc.settings.mailbox) as mailbox:
            process_new_mail(svc, mailbox, now)
        with Session(svc.engine) as session:
            window = timedelta(hours=svc.settings.ack_window_hours)
            key = svc.settings.mailbox.key
            assert _recent_ack(session, key, "resident1@example.jp", now, window)
            assert not _recent_ack(session, key, "resident9@example.jp", now, window)
    finally:
        event.remove(svc.engine, "before_cursor_execute", guard)
    bulk = [s for s in guard.seen if s[0].startswith('SELECT lower("case".sender)')]
    assert bulk, "the bulk path's guard query was not seen"
    assert len(guard.seen) > len(bulk), "_recent_ack's query was not seen"
    for statement, params in guard.seen:
        shown = plan(svc.engine, statement, params)
        assert INDEX in shown, f"{statement}\n{shown}"


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_database_at_0003_gets_the_indexes(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    name = ""
    if dialect == "sqlite":
        url = f"sqlite:///{(tmp_path / 'old.db').as_posix()}"
    else:
        server: LocalPostgres = request.getfixturevalue("postgres")
        name = f"fm{os.getpid()}_{time.monotonic_ns()}"
        url = server.new_database(name)
    engine = create_engine(url)
    try:
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0003")
            conn.execute(
                text(
                    'INSERT INTO "case" (mailbox, created_at, sender, topic, topics, urgent,'
                    " urgent_reasons, matches, language, needs_human, partner, status,"
                    " ack_state) VALUES ('m', :at, 'a@example.jp', 'other', '[]', false,"
                    " '[]', '[]', 'ja', false, 'city', 'open', 'sent')"
                ),
                {"at": datetime(2026, 11, 1)},
            )
        assert current_revision(engine) == "0003"
        indexes = {i["name"] for i in inspect(engine).get_indexes("case")}
        assert INDEX not in indexes
        assert migrate(engine) == head_revision()
        assert {i["name"] for i in inspect(engine).get_indexes("case")} >= {INDEX}
        assert "ix_message_case_status" in {
            i["name"] for i in inspect(engine).get_indexes("message")
        }
        with engine.connect() as conn:
            assert conn.execute(text('SELECT sender FROM "case"')).scalar_one() == "a@example.jp"
    finally:
        engine.dispose()
        if name:
            server.drop_database(name)
