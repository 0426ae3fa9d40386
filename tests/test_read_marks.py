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
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlmodel import select

from intake import samples
from intake.config import load_settings
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import READ_BY_LOST_DATABASE, READ_MARK_EVENT, Service, process_new_mail
from intake.read_marks import ReadMark, load, mark_path, save
from intake.store import Case, Event, Outbox, StoredMessage, session_scope
from tests.helpers import settled, write_config

pytestmark = pytest.mark.integration


@pytest.fixture
def config(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    yield write_config(tmp_path, dovecot, smtp_server)


def _read(config: Path, accept_existing: bool = False, deliver: bool = True) -> tuple[Service, int]:
    """One ``once``: read, then send what is due (unless ``deliver`` is False: the relay
    is down)."""
    svc = Service.from_settings(load_settings(config))
    now = datetime.now().astimezone()
    with Mailbox(svc.settings.mailbox) as mb:
        report = process_new_mail(svc, mb, now, accept_existing=accept_existing)
    if deliver:
        svc.deliver(now)
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
    path = mark_path(settings, key)
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
    memory = SimpleNamespace(database_url="sqlite://", state_dir=None)
    assert mark_path(memory, "box") is None  # type: ignore[arg-type]  # nothing to restore


def test_postgres_marks_live_in_the_configured_state_dir_one_per_database_and_mailbox(
    tmp_path: Path,
) -> None:
    """One configured place, not the environment: the systemd unit and a shell running
    ``once`` by hand must see the same mark (review rv8 F5). Without ``state_dir``,
    PostgreSQL keeps none (``check`` warns)."""
    url = "postgresql+psycopg://intake@db.example.jp/kasaoka"
    settings = SimpleNamespace(database_url=url, state_dir=tmp_path / "state")
    path = mark_path(settings, "box")  # type: ignore[arg-type]
    assert path is not None and path.parent == tmp_path / "state" / "read-marks"
    other_db = SimpleNamespace(
        database_url=url.replace("kasaoka", "ibara"), state_dir=tmp_path / "state"
    )
    assert mark_path(other_db, "box") != path  # type: ignore[arg-type]
    assert mark_path(settings, "other-box") != path  # type: ignore[arg-type]
    unset = SimpleNamespace(database_url=url, state_dir=None)
    assert mark_path(unset, "box") is None  # type: ignore[arg-type]


def test_an_unwritable_mark_folder_is_warned_about_once_and_reading_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    caplog.set_level(logging.WARNING)
    for uid in (1, 2, 3):
        save(blocked / "x.read", "box", ReadMark(5, uid))  # never raises
    assert len([r for r in caplog.records if "read mark not written" in r.getMessage()]) == 1


def test_an_acknowledgement_still_queued_when_the_database_is_lost_is_sent_after_restore(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, config: Path
) -> None:
    """The mark says "acknowledged already"; it must not pass a mail whose acknowledgement
    was only queued (relay down) when the database was lost, or that resident is never
    acknowledged (review rv8 F2, its test)."""
    dovecot.append(samples.consultation("first@example.jp", "相談", "寂しいです"))
    svc, _ = _read(config)
    backup = tmp_path / "backup.db"
    _backup(svc, backup)
    dovecot.append(samples.consultation("second@example.jp", "相談", "寂しいです"))
    later, _ = _read(config, deliver=False)  # the relay is down: second@'s ack waits
    database = _database(svc)
    svc.engine.dispose()
    later.engine.dispose()
    _restore(backup, database)
    svc, cases = _read(config)
    assert cases == 1
    received = sorted(r for m in settled(smtp_server) for r in m.rcpt_tos)
    assert received == ["first@example.jp", "second@example.jp"]
    assert _acks_and_states(svc)[1]["second@example.jp"] == "sent"


def test_a_placeholder_of_mail_a_lost_database_had_read_is_not_acknowledged_again(
    tmp_path: Path, dovecot: LocalDovecot, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mail the server will not hand over becomes a placeholder while fetching, outside
    any batch; when a lost database had read and acknowledged it, it must not be
    acknowledged again either (review rv8 F4, its test)."""
    from imapclient.exceptions import IMAPClientError

    from intake import pipeline

    dovecot.append(samples.consultation("first@example.jp", "相談", "寂しいです"))
    svc, _ = _read(config)
    backup = tmp_path / "backup.db"
    _backup(svc, backup)
    dovecot.append(samples.consultation("second@example.jp", "相談", "寂しいです"))
    later, _ = _read(config)  # second@ read and acknowledged by the old database
    database = _database(svc)
    svc.engine.dispose()
    later.engine.dispose()
    _restore(backup, database)

    real_fetch = Mailbox.fetch

    def refuse_uid_2(self: Mailbox, uids: list[int]) -> Any:
        if 2 in uids:
            raise IMAPClientError("FETCH command error: NO [SERVERBUG] Internal error")
        return real_fetch(self, uids)

    monkeypatch.setattr(Mailbox, "fetch", refuse_uid_2)
    svc = Service.from_settings(load_settings(config))
    start = datetime.now().astimezone()
    for i in range(pipeline.MAX_FETCH_FAILURES + 1):
        with Mailbox(svc.settings.mailbox) as mb:
            process_new_mail(svc, mb, start + pipeline.UNREADABLE_AFTER * i)
    acks, states, _ = _acks_and_states(svc)
    assert acks == ["first@example.jp"]
    assert states["second@example.jp"] == f"suppressed:{READ_BY_LOST_DATABASE}"


def test_an_acknowledgement_queued_by_a_later_read_below_the_mark_is_not_lost(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A placeholder that could not name its sender gets no acknowledgement, so the mark
    passed its UID; when the real mail is read later its resident's acknowledgement is
    queued for a UID the mark already covered. Were the database lost before it went
    out, the resident was never acknowledged (review rv8b N5, its test)."""
    from imapclient.exceptions import IMAPClientError

    from intake import pipeline

    dovecot.append(samples.consultation("first@example.jp", "相談", "寂しいです"))
    svc, _ = _read(config)
    backup = tmp_path / "backup.db"
    _backup(svc, backup)
    dovecot.append(samples.consultation("second@example.jp", "相談", "寂しいです"))
    real_fetch, real_header = Mailbox.fetch, Mailbox.header

    def refuse_uid_2(self: Mailbox, uids: list[int]) -> Any:
        if 2 in uids:
            raise IMAPClientError("FETCH command error: NO [SERVERBUG] Internal error")
        return real_fetch(self, uids)

    def no_header_for_uid_2(self: Mailbox, uid: int) -> bytes | None:
        return None if uid == 2 else real_header(self, uid)

    monkeypatch.setattr(Mailbox, "fetch", refuse_uid_2)
    monkeypatch.setattr(Mailbox, "header", no_header_for_uid_2)
    later = Service.from_settings(load_settings(config))
    start = datetime.now().astimezone()
    at = start
    for i in range(pipeline.MAX_FETCH_FAILURES + 1):
        at = start + pipeline.UNREADABLE_AFTER * i
        with Mailbox(later.settings.mailbox) as mb:
            process_new_mail(later, mb, at)
    monkeypatch.setattr(Mailbox, "fetch", real_fetch)
    monkeypatch.setattr(Mailbox, "header", real_header)
    for k in range(1, 4):  # the server hands the mail over now: the sweep reads it later
        with Mailbox(later.settings.mailbox) as mb:
            process_new_mail(later, mb, at + timedelta(hours=k))
    assert _acks_and_states(later)[1]["second@example.jp"] == "queued"  # the relay is down
    database = _database(svc)
    svc.engine.dispose()
    later.engine.dispose()
    _restore(backup, database)  # the disk fails before second@'s acknowledgement went out
    _read(config)
    received = sorted(r for m in settled(smtp_server) for r in m.rcpt_tos)
    assert received == ["first@example.jp", "second@example.jp"]


def test_a_second_worker_never_lowers_the_shared_mark_while_the_database_is_behind(
    tmp_path: Path,
) -> None:
    """Two workers on one SQLite database share the mark file beside it. A worker whose
    copy of the mark was older than the file took a restored database as "not behind"
    and wrote a lower mark; a restart then acknowledged again what the lost database had
    acknowledged (review rv8c; the reviewer's scenario, no mail servers needed)."""
    from intake import pipeline
    from intake.store import Cursor
    from tests.test_last_good_rules import offline_config

    config = offline_config(tmp_path)
    reader = Service.from_settings(load_settings(config))  # the worker that reads mail
    sender = Service.from_settings(load_settings(config))  # the other one (delivers)
    key = reader.settings.mailbox.key
    path = mark_path(reader.settings, key)

    def cursor_at(last_uid: int) -> None:
        with session_scope(reader.engine) as s:
            row = s.get(Cursor, key) or Cursor(mailbox=key)
            row.uidvalidity, row.last_uid = 7, last_uid
            s.add(row)

    cursor_at(300)
    pipeline.note_read(sender)  # the sender's last look: 300
    cursor_at(500)
    pipeline.note_read(reader)  # read up to 500, every acknowledgement out
    assert load(path, key) == ReadMark(7, 500)

    cursor_at(100)  # restored from a backup in which UID 90's acknowledgement waited
    with session_scope(reader.engine) as s:
        case = Case(mailbox=key, sender="r@example.jp")
        s.add(case)
        s.flush()
        s.add(StoredMessage(mailbox=key, uidvalidity=7, uid=90, sha256="x", case_id=case.id))
        s.add(
            Outbox(
                mailbox=key,
                kind="ack",
                dedupe_key="ack:90",
                case_id=case.id,
                message_id="<m90@x>",
                content=b"",
                status="queued",
            )
        )
    cursor_at(350)  # catching up
    pipeline.note_read(reader)
    pipeline.note_read(sender)  # after its delivery run, the relay still down
    assert load(path, key) == ReadMark(7, 500)


def test_the_mark_is_read_and_written_under_its_lock(tmp_path: Path) -> None:
    """Two processes deciding at the same instant could leave the older decision, a
    lower mark, written last; a process moving the mark waits for the one holding its
    lock, and then decides on what that one wrote."""
    import threading

    from intake import pipeline, read_marks
    from intake.store import Cursor
    from tests.test_last_good_rules import offline_config

    svc = Service.from_settings(load_settings(offline_config(tmp_path)))
    key = svc.settings.mailbox.key
    path = mark_path(svc.settings, key)
    assert path is not None
    with session_scope(svc.engine) as s:
        s.add(Cursor(mailbox=key, uidvalidity=7, last_uid=40))

    mover = threading.Thread(target=pipeline.note_read, args=(svc,), daemon=True)
    with read_marks.updating(path):  # another process, in the middle of its update
        save(path, key, ReadMark(7, 60))
        mover.start()
        mover.join(timeout=0.5)
        assert mover.is_alive()  # waiting for the lock, nothing read or written yet
        assert load(path, key) == ReadMark(7, 60)
    mover.join(timeout=10)
    assert not mover.is_alive()
    # It decided on the file as the other left it: this database (40) is behind 60.
    assert load(path, key) == ReadMark(7, 60)
    assert oct(path.with_name(path.name + ".lock").stat().st_mode & 0o777) == "0o600"
