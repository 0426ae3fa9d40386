"""A database restored from an older backup must not acknowledge residents a second time.

The read mark (``intake.read_marks``) records, outside the database, how far the mailbox
was read. These tests restore a real SQLite backup under a real Dovecot mailbox.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlmodel import select

from intake import samples
from intake.config import load_settings
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import READ_BY_LOST_DATABASE, READ_MARK_EVENT, Service, process_new_mail
from intake.read_marks import ReadMark, load, mark_path, save
from intake.store import Case, Event, Outbox, session_scope
from tests.helpers import write_config

pytestmark = pytest.mark.integration


@pytest.fixture
def config(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    yield write_config(tmp_path, dovecot, smtp_server)


def _read(config: Path, accept_existing: bool = False) -> tuple[Service, int]:
    svc = Service.from_settings(load_settings(config))
    with Mailbox(svc.settings.mailbox) as mb:
        report = process_new_mail(
            svc, mb, datetime.now().astimezone(), accept_existing=accept_existing
        )
    return svc, report.cases


def _database(svc: Service) -> Path:
    return Path(str(svc.engine.url.database))


def _backup(svc: Service, to: Path) -> None:
    with sqlite3.connect(_database(svc)) as source, sqlite3.connect(to) as copy:
        source.backup(copy)


def _restore(backup: Path, database: Path) -> None:
    for extra in ("-wal", "-shm"):
        database.with_name(database.name + extra).unlink(missing_ok=True)
    shutil.copyfile(backup, database)


def _acks_and_states(svc: Service) -> tuple[list[str], dict[str, str], int]:
    with session_scope(svc.engine) as s:
        acks = sorted(
            json.loads(o.recipients)[0] for o in s.exec(select(Outbox)) if o.kind == "ack"
        )
        states = {c.sender: c.ack_state for c in s.exec(select(Case))}
        alerts = sum(1 for o in s.exec(select(Outbox)) if o.kind == "alert")
    return acks, states, alerts


def test_a_database_restored_from_an_older_backup_does_not_acknowledge_again_but_alerts(
    tmp_path: Path, dovecot: LocalDovecot, config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dovecot.append(samples.consultation("first@example.jp", "相談", "寂しいです"))
    svc, cases = _read(config)
    assert cases == 1
    backup = tmp_path / "backup.db"
    _backup(svc, backup)  # the nightly backup
    dovecot.append(samples.consultation("second@example.jp", "相談", "もう死にたいです"))
    later, cases = _read(config)  # read and acknowledged after the backup
    assert cases == 1
    database = _database(svc)
    svc.engine.dispose()
    later.engine.dispose()

    _restore(backup, database)  # the disk failed; yesterday's backup is put back
    dovecot.append(samples.consultation("third@example.jp", "相談", "お金がありません"))
    caplog.set_level(logging.INFO)
    svc, cases = _read(config)
    assert cases == 2  # the lost case is back, with the new one
    acks, states, alerts = _acks_and_states(svc)
    # second@ was acknowledged by the lost database: not again; third@ is new
    assert acks == ["first@example.jp", "third@example.jp"]
    assert states["second@example.jp"] == f"suppressed:{READ_BY_LOST_DATABASE}"
    assert alerts == 1  # its urgent alert went with the lost database: alerted again
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "behind" in errors[0].getMessage()
    assert "死に" not in caplog.text and "second@example.jp" not in caplog.text
    with session_scope(svc.engine) as s:
        assert [e.kind for e in s.exec(select(Event)) if e.kind == READ_MARK_EVENT]

    # caught up: the next mail is acknowledged as usual, and nothing more is said
    caplog.clear()
    dovecot.append(samples.consultation("fourth@example.jp", "相談", "寂しいです"))
    svc, cases = _read(config)
    assert cases == 1
    assert "fourth@example.jp" in _acks_and_states(svc)[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_accept_existing_acknowledges_the_mail_a_rolled_back_database_had_read(
    tmp_path: Path, dovecot: LocalDovecot, config: Path
) -> None:
    dovecot.append(samples.consultation("first@example.jp", "相談", "寂しいです"))
    svc, _ = _read(config)
    backup = tmp_path / "backup.db"
    _backup(svc, backup)
    dovecot.append(samples.consultation("second@example.jp", "相談", "寂しいです"))
    later, _ = _read(config)
    database = _database(svc)
    svc.engine.dispose()
    later.engine.dispose()
    _restore(backup, database)  # rolled back on purpose, to acknowledge again
    svc, cases = _read(config, accept_existing=True)
    assert cases == 1
    assert _acks_and_states(svc)[0] == ["first@example.jp", "second@example.jp"]


def test_a_mark_behind_the_database_or_of_another_folder_changes_nothing(
    dovecot: LocalDovecot, config: Path
) -> None:
    settings = load_settings(config)
    key = settings.mailbox.key
    path = mark_path(settings.database_url, key)
    assert path is not None
    save(path, key, ReadMark(uidvalidity=1, last_uid=50))  # another UIDVALIDITY
    dovecot.append(samples.consultation("first@example.jp", "相談", "寂しいです"))
    svc, cases = _read(config)
    assert cases == 1 and _acks_and_states(svc)[0] == ["first@example.jp"]
    mark = load(path, key)
    assert mark is not None and mark.last_uid == 1 and mark.uidvalidity != 1
    assert path.stat().st_mode & 0o077 == 0  # private: it names the mailbox


def test_an_unreadable_or_foreign_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "x.read"
    path.write_text("{not json", encoding="utf-8")
    assert load(path, "box") is None
    save(path, "other-box", ReadMark(7, 9))
    assert load(path, "box") is None
    assert load(path, "other-box") == ReadMark(7, 9)
    link = tmp_path / "link.read"
    link.symlink_to(path)
    assert load(link, "other-box") is None
    assert mark_path("sqlite://", "box") is None  # in memory: nothing to restore


def test_postgres_marks_live_in_systemds_state_directory_one_per_database_and_mailbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+psycopg://intake@db.example.jp/kasaoka"
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    path = mark_path(url, "box")
    assert path is not None and path.parent == tmp_path / "state" / "read-marks"
    assert mark_path(url.replace("kasaoka", "ibara"), "box") != path
    assert mark_path(url, "other-box") != path
    monkeypatch.delenv("STATE_DIRECTORY")
    fallback = mark_path(url, "box")
    assert fallback is not None and fallback.is_relative_to(tmp_path)  # conftest's XDG_STATE_HOME


def test_an_unwritable_mark_folder_is_warned_about_once_and_reading_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    caplog.set_level(logging.WARNING)
    for uid in (1, 2, 3):
        save(blocked / "x.read", "box", ReadMark(5, uid))  # never raises
    assert len([r for r in caplog.records if "read mark not written" in r.getMessage()]) == 1
