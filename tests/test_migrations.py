"""Schema migrations on SQLite and real PostgreSQL.

What must hold: replaying every revision builds exactly the schema the models describe
(so a model changed without a migration fails ``test_models_and_migrations_agree``), a
second ``migrate`` does nothing, old databases with rows are upgraded without losing
them, and two processes starting at once do not trip over each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from intake import store
from intake.localpostgres import LocalPostgres
from intake.migrate import (
    INITIAL_REVISION,
    alembic_config,
    current_revision,
    head_revision,
    migrate,
    schema_diff,
    target_metadata,
)

ROOT = Path(__file__).resolve().parents[1]


def store_like_engine(url: str) -> Engine:
    """An engine set up the way ``store.open_database`` sets one up, without its create_all."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", store._sqlite_pragmas)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def new_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Engine]]:
    """Make empty databases of the parametrised kind; every engine is disposed afterwards."""
    made: list[Engine] = []

    def make() -> Engine:
        if request.param == "sqlite":
            url = f"sqlite:///{(tmp_path / f'db{len(made)}.db').as_posix()}"
        else:
            server: LocalPostgres = request.getfixturevalue("postgres")
            url = server.new_database(f"mig_{os.getpid()}_{time.monotonic_ns()}")
        engine = store_like_engine(url)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


def describe(engine: Engine) -> dict[str, Any]:
    """Everything about the schema that matters to the service, comparable across builds."""
    inspector = inspect(engine)
    tables: dict[str, Any] = {}
    for name in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        tables[name] = {
            # Sorted: a column added by a migration comes last, create_all puts it in place.
            "columns": sorted(
                (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                for c in inspector.get_columns(name)
            ),
            "primary_key": inspector.get_pk_constraint(name)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(name)
            ),
            "unique": sorted(
                tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)
            ),
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in inspector.get_foreign_keys(name)
            ),
        }
    return tables


def statements_during(engine: Engine, action: Callable[[], object]) -> list[str]:
    """Every SQL statement ``action`` sent to the database."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.strip().split()[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


# --------------------------------------------------------------------------- the schema


def test_replayed_migrations_build_the_same_schema_as_the_models(
    new_engine: Callable[[], Engine],
) -> None:
    replayed, created = new_engine(), new_engine()
    assert migrate(replayed, replay=True) == head_revision()
    target_metadata().create_all(created)
    assert describe(replayed) == describe(created)
    assert set(describe(replayed)) == set(SQLModel.metadata.tables)


def test_models_and_migrations_agree(new_engine: Callable[[], Engine]) -> None:
    # Fails when a model changed without a migration: run
    # `python -m intake.migrate --revision "why"` and commit the file it writes.
    engine = new_engine()
    migrate(engine, replay=True)
    assert schema_diff(engine) == []


def test_a_schema_change_without_a_migration_is_detected(
    new_engine: Callable[[], Engine],
) -> None:
    engine = new_engine()
    migrate(engine, replay=True)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_outbox_status"))
    diff = schema_diff(engine)
    assert any(item[0] == "add_index" and item[1].name == "ix_outbox_status" for item in diff)


def test_empty_database_is_created_at_head_in_one_step(new_engine: Callable[[], Engine]) -> None:
    engine = new_engine()
    assert current_revision(engine) is None
    assert migrate(engine) == head_revision()
    assert current_revision(engine) == head_revision()
    assert schema_diff(engine) == []


@pytest.mark.parametrize("replay", [False, True], ids=["created", "replayed"])
def test_migrating_twice_changes_nothing(new_engine: Callable[[], Engine], replay: bool) -> None:
    engine = new_engine()
    migrate(engine, replay=replay)
    before = describe(engine)
    sent = statements_during(engine, lambda: migrate(engine, replay=replay))
    assert set(sent) <= {"BEGIN", "SELECT", "PRAGMA"}, f"second migrate wrote: {sent}"
    assert describe(engine) == before
    assert current_revision(engine) == head_revision()


# --------------------------------------------------------------------------- old databases


def _upgrade_to(engine: Engine, revision: str) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def _fill_initial_schema(engine: Engine) -> None:
    """Rows as the service wrote them before cases and outbox rows carried a mailbox."""
    with engine.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO "case" (id, created_at, sender, topic, topics, urgent, urgent_reasons,'
                " matches, language, needs_human, partner, status, ack_state) VALUES"
                " (1, '2026-11-01 03:00:00+00', 'a@example.jp', 'isolation', '[]', false, '[]',"
                " '[]', 'ja', false, 'city', 'new', 'sent')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO message (id, mailbox, uidvalidity, uid, sha256, size, received_at,"
                " from_addr, subject, body, new_text, problems, status, attempts, case_id,"
                " is_followup) VALUES (1, 'intake@imap.example.jp/INBOX', 7, 1, 'ab', 10,"
                " '2026-11-01 03:00:00+00', 'a@example.jp', '相談', '寂しい', '寂しい', '[]',"
                " 'processed', 1, 1, false)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO outbox (id, kind, priority, dedupe_key, case_id, recipients,"
                " message_id, content, created_at, status, attempts, next_attempt_at) VALUES"
                " (1, 'ack', 1, 'ack:case:1', 1, '[]', '<m1@example.jp>', :body,"
                " '2026-11-01 03:00:00+00', 'sent', 1, '2026-11-01 03:00:00+00')"
            ),
            {"body": b"raw"},
        )
        conn.execute(
            text(
                "INSERT INTO cursor (mailbox, uidvalidity, last_uid, updated_at) VALUES"
                " ('intake@imap.example.jp/INBOX', 7, 1, '2026-11-01 03:00:00+00')"
            )
        )


@pytest.mark.parametrize("stamped", [True, False], ids=["stamped", "made-before-alembic"])
def test_old_database_with_rows_is_upgraded_and_keeps_them(
    new_engine: Callable[[], Engine], stamped: bool
) -> None:
    engine = new_engine()
    _upgrade_to(engine, INITIAL_REVISION)
    _fill_initial_schema(engine)
    if not stamped:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE alembic_version"))
    assert migrate(engine) == head_revision()
    assert schema_diff(engine) == []
    with engine.connect() as conn:
        case = conn.execute(text('SELECT mailbox, sender FROM "case" WHERE id = 1')).one()
        outbox = conn.execute(text("SELECT mailbox, claimed_by FROM outbox WHERE id = 1")).one()
        body = conn.execute(text("SELECT body FROM message WHERE id = 1")).scalar_one()
    assert tuple(case) == ("intake@imap.example.jp/INBOX", "a@example.jp")
    assert tuple(outbox) == ("intake@imap.example.jp/INBOX", None)
    assert body == "寂しい"


def test_database_made_by_todays_create_all_is_stamped_at_head(
    new_engine: Callable[[], Engine],
) -> None:
    # What store.open_database made before it called migrate(): must not be "upgraded".
    engine = new_engine()
    target_metadata().create_all(engine)
    sent = statements_during(engine, lambda: migrate(engine))
    assert current_revision(engine) == head_revision()
    assert not {"ALTER", "DROP"} & set(sent)
    assert schema_diff(engine) == []


# --------------------------------------------------------------------------- concurrency


def test_two_workers_migrating_an_empty_database_at_once_both_succeed(
    new_engine: Callable[[], Engine],
) -> None:
    first = new_engine()
    second = store_like_engine(first.url.render_as_string(hide_password=False))
    start = threading.Barrier(2)
    results: list[object] = []

    def run(engine: Engine) -> None:
        start.wait()
        try:
            results.append(migrate(engine))
        except Exception as exc:  # the assertion below shows it
            results.append(exc)

    try:
        threads = [threading.Thread(target=run, args=(e,)) for e in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        second.dispose()
    assert results == [head_revision(), head_revision()]
    assert schema_diff(first) == []


# --------------------------------------------------------------------------- command line


def test_command_line_migrates_and_checks(tmp_path: Path) -> None:
    url = f"sqlite:///{(tmp_path / 'cli.db').as_posix()}"
    result = subprocess.run(
        [sys.executable, "-m", "intake.migrate", "--url", url, "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"at revision {head_revision()}" in result.stdout
    engine = create_engine(url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_a_database_made_by_a_newer_version_says_so_instead_of_an_unexpected_error(
    tmp_path: Path,
) -> None:
    """Review rv10a F14: software rolled back, or an older second worker on a shared
    database, met "Can't locate revision '0099'" as an unexpected error (systemd restarted
    it every 10 s). It is now a configuration error naming both revisions and what to do."""
    from intake.errors import ConfigError

    url = f"sqlite:///{tmp_path / 'newer.db'}"
    store.open_database(url).dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(ConfigError, match="0099, made by a newer soudan-intake") as info:
        store.open_database(url)
    assert "never downgrade" in str(info.value)
