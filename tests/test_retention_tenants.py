"""Retention and sender marks with several mailboxes and several workers on one database.

Every worker schedules its purge at 03:30, each municipality runs its own worker, and a
staff ``report`` may run beside them: the purges must not roll each other back, and one
mailbox's process must never hash another mailbox's residents with its own key.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import uuid
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

import intake.report as report_module
import intake.retention as retention_module
from intake.config import load_settings
from intake.pipeline import Service
from intake.report import (
    SALT_ENV,
    SenderMark,
    monthly_report,
    repair_sender_marks,
    sender_hash,
    sender_salt,
)
from intake.retention import purge
from intake.store import Case, StoredMessage, session_scope, to_db
from tests.helpers import write_config
from tests.test_escalate_review import _database

JST = ZoneInfo("Asia/Tokyo")
LONG_AGO = datetime(2025, 1, 10, 12, tzinfo=JST)
NIGHT = datetime(2026, 11, 27, 3, 30, tzinfo=JST)


def mailbox_service(tmp_path: Path, name: str, url: str, salt_file: Path) -> Service:
    """Mailbox ``name`` with its own config directory and key file, on the shared ``url``."""
    home = tmp_path / name
    home.mkdir()
    imap = SimpleNamespace(host="127.0.0.1", port=1, user=name)
    smtp = SimpleNamespace(host="127.0.0.1", port=2)
    extra = f'\n[report]\nsalt_file = "{salt_file}"\n'
    path = write_config(home, imap, smtp, extra=extra)  # type: ignore[arg-type]
    text = path.read_text(encoding="utf-8")
    text = text.replace(f"sqlite:///{(home / 'intake.db').as_posix()}", url)
    text = text.replace("[mailbox]\n", f'[mailbox]\nid = "{name}"\n', 1)
    path.write_text(text, encoding="utf-8")
    return Service.from_settings(load_settings(path))


def add_case(svc: Service, sender: str, at: datetime, body: str = "相談の本文") -> int:
    """A processed case with one message (synthetic sender and words)."""
    with session_scope(svc.engine) as s:
        case = Case(
            mailbox=svc.settings.mailbox.key,
            created_at=to_db(at),
            sender=sender,
            partner="general",
            ack_state="sent",
        )
        s.add(case)
        s.flush()
        s.add(
            StoredMessage(
                mailbox=svc.settings.mailbox.key,
                sha256=uuid.uuid4().hex,
                raw=b"x",
                received_at=to_db(at),
                status="processed",
                case_id=case.id,
                body=body,
                from_addr=sender,
            )
        )
        assert case.id is not None
        return case.id


def unpurged(svc: Service) -> list[str]:
    """The mailboxes that still have a readable message body."""
    with Session(svc.engine) as s:
        return sorted(s.exec(select(StoredMessage.mailbox).where(StoredMessage.body != "")).all())


def at_once(jobs: dict[str, Any]) -> dict[str, Any]:
    """Run the jobs in threads started together; {name: result or exception type name}."""
    start = threading.Barrier(len(jobs))
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        start.wait()
        try:
            results[name] = jobs[name]()
        except BaseException as exc:  # the test reports any failure
            results[name] = type(exc).__name__

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.fixture
def meet_in_mark_senders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both purges reach ``mark_senders`` before either writes a mark (the 03:30 race)."""
    meet = threading.Barrier(2, timeout=3)
    real = retention_module.mark_senders

    def together(session: Session, salt: bytes, *args: Any) -> int:
        with contextlib.suppress(threading.BrokenBarrierError):
            meet.wait()
        return real(session, salt, *args)

    monkeypatch.setattr(retention_module, "mark_senders", together)


# --- one mailbox's process marks only its own cases (F3) --------------------------------


@pytest.mark.parametrize("via", ["report", "purge"])
def test_another_mailboxs_purge_or_report_leaves_this_mailboxs_returning_residents_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)
    url = f"sqlite:///{(tmp_path / 'shared.db').as_posix()}"
    a = mailbox_service(tmp_path, "kasaoka", url, tmp_path / "kasaoka-salt")
    b = mailbox_service(tmp_path, "ibara", url, tmp_path / "ibara-salt")
    october = add_case(b, "resident@example.jp", datetime(2026, 10, 5, 10, tzinfo=JST))
    if via == "purge":
        purge(a, datetime(2026, 10, 6, 3, 30, tzinfo=JST), 365)
    else:
        monthly_report(a, "2026-10")
    with Session(a.engine) as s:
        assert s.get(SenderMark, october) is None, "kasaoka hashed an ibara resident"
    add_case(b, "resident@example.jp", datetime(2026, 11, 5, 10, tzinfo=JST))
    report = monthly_report(b, "2026-11")
    assert (report.new_senders, report.returning_senders) == (0, 1)


def test_marks_another_mailbox_wrote_before_are_repaired_where_the_sender_is_still_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-off for a database shared before marks kept to their own mailbox."""
    monkeypatch.delenv(SALT_ENV, raising=False)
    url = f"sqlite:///{(tmp_path / 'shared.db').as_posix()}"
    a = mailbox_service(tmp_path, "kasaoka", url, tmp_path / "kasaoka-salt")
    b = mailbox_service(tmp_path, "ibara", url, tmp_path / "ibara-salt")
    a_key, b_key = sender_salt(a.settings), sender_salt(b.settings)
    october = add_case(b, "resident@example.jp", datetime(2026, 10, 5, 10, tzinfo=JST))
    blanked = add_case(b, "", datetime(2025, 9, 5, 10, tzinfo=JST))  # purged since
    own = add_case(a, "other@example.jp", datetime(2026, 10, 5, 10, tzinfo=JST))
    with session_scope(a.engine) as s:  # what kasaoka's purge wrote before the fix
        s.add(SenderMark(case_id=october, sender_hash=sender_hash("resident@example.jp", a_key)))
        s.add(SenderMark(case_id=blanked, sender_hash="written-with-kasaokas-key"))
        s.add(SenderMark(case_id=own, sender_hash=sender_hash("other@example.jp", a_key)))
    add_case(b, "resident@example.jp", datetime(2026, 11, 5, 10, tzinfo=JST))
    assert monthly_report(b, "2026-11").returning_senders == 0  # the damage
    assert repair_sender_marks(b) == 1
    assert repair_sender_marks(b) == 0
    report = monthly_report(b, "2026-11")
    assert (report.new_senders, report.returning_senders) == (0, 1)
    with Session(a.engine) as s:
        hashes = dict(s.exec(select(SenderMark.case_id, SenderMark.sender_hash)).all())
    assert hashes[october] == sender_hash("resident@example.jp", b_key)
    assert hashes[blanked] == "written-with-kasaokas-key"  # the address is gone
    assert hashes[own] == sender_hash("other@example.jp", a_key)  # kasaoka's own: untouched


# --- purges at the same moment never roll each other back (F2) --------------------------


@pytest.mark.integration
@pytest.mark.usefixtures("meet_in_mark_senders")
def test_two_mailboxes_purging_at_the_same_moment_both_purge_their_old_mail(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)
    url = _database(request, tmp_path, "postgresql")
    assert url is not None
    a = mailbox_service(tmp_path, "kasaoka", url, tmp_path / "salt")
    b = mailbox_service(tmp_path, "ibara", url, tmp_path / "salt")
    sender_salt(a.settings)  # the key exists: the purges race on the marks alone
    for svc in (a, b):
        request.addfinalizer(svc.engine.dispose)
        add_case(svc, f"r-{svc.settings.mailbox.key}@example.jp", LONG_AGO)
    results = at_once(
        {"kasaoka": lambda: purge(a, NIGHT, 365), "ibara": lambda: purge(b, NIGHT, 365)}
    )
    assert results == {"kasaoka": 1, "ibara": 1}
    assert unpurged(a) == []


@pytest.mark.integration
@pytest.mark.usefixtures("meet_in_mark_senders")
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_workers_of_one_mailbox_purging_at_once_mark_each_case_once_without_an_error(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Both find the same cases unmarked; the second one's marks give way to the first's."""
    monkeypatch.delenv(SALT_ENV, raising=False)
    url = _database(request, tmp_path, kind) or f"sqlite:///{(tmp_path / 'db.sqlite').as_posix()}"
    one = mailbox_service(tmp_path, "kasaoka", url, tmp_path / "salt")
    (tmp_path / "again").mkdir()
    two = mailbox_service(tmp_path / "again", "kasaoka", url, tmp_path / "salt")
    sender_salt(one.settings)  # the key exists: the purges race on the marks alone
    for svc in (one, two):
        request.addfinalizer(svc.engine.dispose)
    cases = [add_case(one, f"r{i}@example.jp", LONG_AGO) for i in range(5)]
    results = at_once(
        {"one": lambda: purge(one, NIGHT, 365), "two": lambda: purge(two, NIGHT, 365)}
    )
    assert sorted(results.values(), key=repr) == [0, 5], results  # the second finds it done
    assert unpurged(one) == []
    with Session(one.engine) as s:
        assert sorted(s.exec(select(SenderMark.case_id)).all()) == cases


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_staff_report_during_the_purge_neither_fails_nor_rolls_it_back(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)
    url = _database(request, tmp_path, kind) or f"sqlite:///{(tmp_path / 'db.sqlite').as_posix()}"
    svc = mailbox_service(tmp_path, "kasaoka", url, tmp_path / "salt")
    request.addfinalizer(svc.engine.dispose)
    sender_salt(svc.settings)  # the key exists: the two race on the marks alone
    for i in range(3):
        add_case(svc, f"r{i}@example.jp", LONG_AGO)
    meet = threading.Barrier(2, timeout=3)
    real = report_module.mark_senders

    def together(session: Session, salt: bytes, *args: Any) -> int:
        with contextlib.suppress(threading.BrokenBarrierError):
            meet.wait()
        return real(session, salt, *args)

    monkeypatch.setattr(report_module, "mark_senders", together)
    monkeypatch.setattr(retention_module, "mark_senders", together)
    results = at_once(
        {
            "purge": lambda: purge(svc, NIGHT, 365),
            "report": lambda: monthly_report(svc, "2025-01").cases,
        }
    )
    assert results == {"purge": 3, "report": 3}
    assert unpurged(svc) == []


@pytest.mark.integration
def test_purges_started_together_night_after_night_are_never_rolled_back(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No hook at all: two CronTriggers at 03:30 (the reviewer saw 5 of 5 nights lost)."""
    monkeypatch.delenv(SALT_ENV, raising=False)
    url = _database(request, tmp_path, "postgresql")
    assert url is not None
    a = mailbox_service(tmp_path, "kasaoka", url, tmp_path / "salt")
    b = mailbox_service(tmp_path, "ibara", url, tmp_path / "salt")
    sender_salt(a.settings)  # the key exists: the purges race on the marks alone
    for svc in (a, b):
        request.addfinalizer(svc.engine.dispose)
    for _night in range(3):
        for svc in (a, b):
            for i in range(20):
                add_case(svc, f"r{i}-{uuid.uuid4().hex[:6]}@example.jp", LONG_AGO)
        results = at_once(
            {"kasaoka": lambda: purge(a, NIGHT, 365), "ibara": lambda: purge(b, NIGHT, 365)}
        )
        assert results == {"kasaoka": 20, "ibara": 20}
        assert unpurged(a) == []


# --- the key file on a fresh installation -------------------------------------------------


def test_a_key_file_made_by_another_process_after_our_check_is_the_one_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other process created it between our ``exists()`` and our own creation."""
    monkeypatch.delenv(SALT_ENV, raising=False)
    svc = mailbox_service(tmp_path, "kasaoka", f"sqlite:///{tmp_path}/db", tmp_path / "salt")
    (tmp_path / "salt").write_text("theirs" * 10, encoding="ascii")
    monkeypatch.setattr(Path, "exists", lambda self: False)
    assert sender_salt(svc.settings) == b"theirs" * 10
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir() if "salt" in p.name) == ["salt"]


def _read_key(settings_path: str, start: Any, out: Any) -> None:
    """One process's first start: read (so create) the key file."""
    settings = load_settings(Path(settings_path))
    start.wait()
    try:
        out.put(sender_salt(settings).decode())
    except BaseException as exc:  # reported to the parent
        out.put(f"{type(exc).__name__}: {exc}")


def test_processes_starting_together_on_a_fresh_installation_share_one_whole_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)
    context = multiprocessing.get_context("fork")
    for attempt in range(10):
        home = tmp_path / f"install{attempt}"
        home.mkdir()
        svc = mailbox_service(home, "kasaoka", f"sqlite:///{home}/db", home / "keys" / "salt")
        svc.engine.dispose()
        path = str(home / "kasaoka" / "intake.toml")
        start, out = context.Barrier(6), context.Queue()
        procs = [context.Process(target=_read_key, args=(path, start, out)) for _ in range(6)]
        for p in procs:
            p.start()
        keys = [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(30)
        assert len(set(keys)) == 1 and len(keys[0]) == 64, keys
        assert (home / "keys" / "salt").stat().st_mode & 0o777 == 0o600
        assert [p.name for p in (home / "keys").iterdir()] == ["salt"]
