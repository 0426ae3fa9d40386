"""The worker as an operator runs it for months: a lost database facing an old folder, a
locked database, a rules mistake, a digest slot missed by a restart, SIGHUP.

Against the real local Dovecot and aiosmtpd, with ``service.py`` in a subprocess where an
operator would run it. Every mail is synthetic.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from intake import samples
from intake.config import load_settings
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import Service, first_read_cutoff, process_new_mail, queue_mail
from intake.store import Outbox, open_database, session_scope
from tests.helpers import ONCALL, OWN, offline_service, settled, urgent_case, write_config

ROOT = Path(__file__).resolve().parents[1]
JST = ZoneInfo("Asia/Tokyo")


def _append_at(imap: LocalDovecot, raw: bytes, when: datetime) -> None:
    """Append with an INTERNALDATE in the past, as mail that waited in the folder has."""
    with imap.connect() as client:
        client.append("INBOX", raw, msg_time=when)


def _env(imap: LocalDovecot, tmp_path: Path) -> dict[str, str]:
    cache = os.environ.get("SOUDAN_INTAKE_CACHE_DIR") or str(tmp_path / "cache")
    return {**os.environ, "TEST_IMAP_PASSWORD": imap.password, "SOUDAN_INTAKE_CACHE_DIR": cache}


def _service(imap: LocalDovecot, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "intake.toml"
    return subprocess.run(
        [sys.executable, str(ROOT / "service.py"), *args[:1], "--config", str(config), *args[1:]],
        cwd=ROOT,
        env=_env(imap, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Callable[[LocalDovecot], subprocess.Popen[bytes]]]:
    """``service.py --json-logs run`` in a subprocess, its stderr in tmp_path/run.log."""
    procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(imap: LocalDovecot) -> subprocess.Popen[bytes]:
        err = open(tmp_path / "run.log", "wb")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "service.py"),
                "--json-logs",
                "run",
                "--config",
                str(tmp_path / "intake.toml"),
            ],
            cwd=ROOT,
            env=_env(imap, tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        procs.append((proc, err))
        return proc

    yield start
    for proc, err in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        err.close()


def _log_lines(tmp_path: Path) -> list[dict[str, Any]]:
    """The run's stderr as JSON objects; a line that is not JSON fails the test."""
    text = (tmp_path / "run.log").read_text("utf-8", "replace")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _wait_for_log(tmp_path: Path, found: Callable[[dict[str, Any]], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (tmp_path / "run.log").read_text("utf-8", "replace")
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        if any(found(line) for line in lines):
            return
        time.sleep(0.2)
    raise AssertionError(f"not logged within {timeout} s:\n{text[-3000:]}")


def _first_read_notice(line: dict[str, Any]) -> bool:
    return line.get("level") == "ERROR" and line.get("error") == "first-read-of-old-folder"


def _ack_states(tmp_path: Path) -> dict[str, str]:
    with sqlite3.connect(tmp_path / "intake.db") as db:
        return dict(db.execute('SELECT sender, ack_state FROM "case"').fetchall())


# -- Finding 1: a database that never read this mailbox, facing a folder of old mail -----


def test_a_lost_database_does_not_acknowledge_the_old_folder_again_but_alerts_its_urgent_mail(
    dovecot: LocalDovecot, smtp_server: LocalSMTP, tmp_path: Path
) -> None:
    write_config(tmp_path, dovecot, smtp_server)
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    _append_at(dovecot, samples.consultation("a@example.jp", "相談", "寂しいです"), three_days_ago)
    _append_at(
        dovecot, samples.consultation("b@example.jp", "相談", "もう死にたいです"), three_days_ago
    )
    # The installation chose to acknowledge the mail already there, explicitly.
    first = _service(dovecot, tmp_path, "once", "--accept-existing")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "fetched 2, stored 2, cases 2" in first.stdout
    mails = smtp_server.wait_for(3, timeout=30)
    assert sorted(tuple(m.rcpt_tos) for m in mails) == [
        ("a@example.jp",),
        ("b@example.jp",),
        (ONCALL,),
    ]
    # Later the database is lost (a replaced disk, a moved config): a new, empty file.
    for path in tmp_path.glob("intake.db*"):
        path.unlink()
    # A resident writes meanwhile: fresh mail is never held back by the old folder.
    dovecot.append(samples.consultation("c@example.jp", "相談", "死にたい。今から橋に行く"))
    again = _service(dovecot, tmp_path, "once")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "fetched 3, stored 3, cases 3" in again.stdout
    for advice in ("NOT acknowledged", "restore", "once --accept-existing", "skip-existing"):
        assert advice in again.stderr
    received = settled(smtp_server, 6)
    # No resident acknowledged twice; the old urgent mail alerted again (a duplicate alert
    # costs a minute), the new resident acknowledged and alerted.
    assert sorted(tuple(m.rcpt_tos) for m in received[3:]) == [
        ("c@example.jp",),
        (ONCALL,),
        (ONCALL,),
    ]
    states = _ack_states(tmp_path)
    assert states["a@example.jp"] == states["b@example.jp"] == "suppressed:first-read-old"
    assert states["c@example.jp"] in ("queued", "sent")


def _open(imap: LocalDovecot, tmp_path: Path, smtp: LocalSMTP) -> tuple[Service, Mailbox]:
    settings = load_settings(write_config(tmp_path, imap, smtp))
    mailbox = Mailbox(settings.mailbox)
    mailbox.open()
    return Service.from_settings(settings), mailbox


@pytest.mark.parametrize(
    ("hours", "accept", "old_acked"), [(23, False, True), (25, False, False), (25, True, True)]
)
def test_first_read_leaves_only_mail_older_than_a_day_unacknowledged(
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hours: int,
    accept: bool,
    old_acked: bool,
) -> None:
    """Fresh mail (a new installation going live) is acknowledged as before; with
    ``accept_existing`` the old mail too; once there is a cursor, age no longer matters."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    now = datetime.now(JST)
    _append_at(
        dovecot,
        samples.consultation("old@example.jp", "相談", "寂しい"),
        now - timedelta(hours=hours),
    )
    dovecot.append(samples.consultation("new@example.jp", "相談", "寂しい"))
    svc, mailbox = _open(dovecot, tmp_path, smtp_server)
    try:
        report = process_new_mail(svc, mailbox, now, accept_existing=accept)
        assert report.cases == 2
        assert report.acks == (2 if old_acked else 1)
        assert svc.no_ack_before is None  # only for that call
        # Mail that arrives after the first read is acknowledged.
        dovecot.append(samples.consultation("late@example.jp", "相談", "寂しい"))
        with Mailbox(svc.settings.mailbox) as again:
            assert process_new_mail(svc, again, now).acks == 1
    finally:
        mailbox.close()


def test_the_first_read_check_sends_two_commands_whatever_the_folder_size(
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No UID SEARCH of the folder (it lists every UID): STATUS and one FETCH only."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    now = datetime.now(JST)
    _append_at(
        dovecot, samples.consultation("old@example.jp", "相談", "寂しい"), now - timedelta(days=9)
    )
    dovecot.append_many(
        samples.consultation(f"r{i}@example.jp", "相談", "寂しい") for i in range(500)
    )
    svc, mailbox = _open(dovecot, tmp_path, smtp_server)
    assert mailbox.client is not None
    imap = mailbox.client._imap
    sent: list[str] = []
    command = imap._command

    def counting(name: str, *args: Any) -> Any:
        sent.append(name)
        return command(name, *args)

    monkeypatch.setattr(imap, "_command", counting)
    try:
        assert first_read_cutoff(svc, mailbox, now) == now - timedelta(hours=24)
        assert sent == ["STATUS", "FETCH"]
    finally:
        mailbox.close()


def test_a_server_refusing_status_on_the_selected_folder_does_not_hold_the_first_read(
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 3501 lets a server refuse STATUS on the selected folder: the first read then
    goes on as before (every mail acknowledged), never loops on the error."""
    from imapclient.exceptions import IMAPClientError

    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    now = datetime.now(JST)
    _append_at(
        dovecot, samples.consultation("old@example.jp", "相談", "寂しい"), now - timedelta(days=9)
    )
    svc, mailbox = _open(dovecot, tmp_path, smtp_server)
    assert mailbox.client is not None

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise IMAPClientError("STATUS on the selected mailbox is not allowed")

    monkeypatch.setattr(mailbox.client, "folder_status", refuse)
    try:
        report = process_new_mail(svc, mailbox, now)
        assert (report.cases, report.acks) == (1, 1)
    finally:
        mailbox.close()


def test_run_on_an_old_folder_says_so_once_alerts_old_urgent_mail_and_acknowledges_new_mail(
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    tmp_path: Path,
    start_run: Callable[[LocalDovecot], subprocess.Popen[bytes]],
) -> None:
    write_config(tmp_path, dovecot, smtp_server)
    old = datetime.now(UTC) - timedelta(days=40)
    _append_at(dovecot, samples.consultation("old1@example.jp", "相談", "寂しいです"), old)
    _append_at(dovecot, samples.consultation("old2@example.jp", "相談", "死にたい"), old)
    # A mail queued before (by a `digest` run whose delivery failed): sent as usual.
    _queue_digest_row(tmp_path)
    worker = start_run(dovecot)
    mails = smtp_server.wait_for(2, timeout=90)
    assert sorted(tuple(m.rcpt_tos) for m in mails) == [(ONCALL,), ("partner@example.jp",)]
    _wait_for_log(tmp_path, _first_read_notice, timeout=60)
    dovecot.append(samples.consultation("new@example.jp", "相談", "寂しいです"))
    assert smtp_server.wait_for(3, timeout=60)[2].rcpt_tos == ["new@example.jp"]
    assert len(settled(smtp_server, 3)) == 3, "old mail acknowledged"
    assert sum(_first_read_notice(line) for line in _log_lines(tmp_path)) == 1
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


def _queue_digest_row(tmp_path: Path) -> None:
    """One due outbox row for this mailbox, without any stored mail (``skip-existing``
    refuses a database that stored mail of the mailbox)."""
    settings = load_settings(tmp_path / "intake.toml")
    message = EmailMessage()
    message["From"] = OWN
    message["To"] = "partner@example.jp"
    message["Subject"] = "ダイジェスト（テスト）"
    message["Message-ID"] = "<digest-test@example.jp>"
    message.set_content("テスト用のダイジェストです。")
    engine = open_database(settings.database_url)
    with session_scope(engine) as session:
        queue_mail(
            session,
            kind="digest",
            key="digest:test",
            case=None,
            to=["partner@example.jp"],
            message=message,
            priority=5,
            now=datetime.now(JST),
            partner="city",
            mailbox=settings.mailbox.key,
        )
    engine.dispose()


def _wait_until_sent(tmp_path: Path, count: int, timeout: float = 30) -> None:
    """Until ``count`` outbox rows are marked sent (delivery's last write is done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(tmp_path / "intake.db") as db:
            sent = db.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()[0]
        if sent >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} outbox rows marked sent within {timeout} s")


# -- Finding 3: a transient database error in the mail loop ------------------------------


def test_run_survives_a_locked_database_and_reads_the_mail_afterwards(
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    tmp_path: Path,
    start_run: Callable[[LocalDovecot], subprocess.Popen[bytes]],
) -> None:
    write_config(tmp_path, dovecot, smtp_server)
    worker = start_run(dovecot)
    dovecot.append(samples.consultation("first@example.jp", "相談", "寂しいです"))
    assert smtp_server.wait_for(1, timeout=90)
    _wait_until_sent(tmp_path, 1)
    # Another process holds the write lock past busy_timeout (10 s): a VACUUM, a backup.
    db = sqlite3.connect(tmp_path / "intake.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    dovecot.append(samples.consultation("second@example.jp", "相談", "お金がありません"))
    try:
        _wait_for_log(tmp_path, lambda line: line.get("level") == "ERROR", timeout=40)
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert worker.poll() is None, "the worker exited"
    mails = smtp_server.wait_for(2, timeout=60)
    assert mails[1].rcpt_tos == ["second@example.jp"]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    lines = _log_lines(tmp_path)  # every line JSON: no bare traceback
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert [line["message"] for line in errors] == [
        "database failed while reading mail; no mail is read, retrying"
    ]
    assert errors[0]["error"] == "OperationalError(OperationalError: 'database is locked')"
    assert any(line["message"] == "database usable again" for line in lines)


# -- Finding 3 (fatal errors) and 5: what stops `run` reaches the JSON log ---------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_fatal_error_in_run_is_one_json_line_not_a_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    import service
    from intake import worker

    config = write_config(tmp_path, *_nowhere())

    def broken(_svc: Service) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(worker, "run_worker", broken)
    assert service.main(["--json-logs", "run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines()]  # only JSON lines
    fatal = [line for line in lines if line["level"] == "CRITICAL"]
    assert len(fatal) == 1 and fatal[0]["error"] == "RuntimeError('a bug')"
    assert "Traceback" not in err


def _nowhere() -> tuple[Any, Any]:
    from types import SimpleNamespace

    return (
        SimpleNamespace(host="127.0.0.1", port=1, user="intake"),
        SimpleNamespace(host="127.0.0.1", port=1),
    )


def test_run_refusing_broken_rules_logs_each_problem_as_json_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    import service

    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    with (rules / "urgent.toml").open("a", encoding="utf-8") as f:
        f.write("\nthis is = = not toml\n")
    config = write_config(tmp_path, *_nowhere(), extra=f'[service]\nrules_dir = "{rules}"\n')
    assert service.main(["--json-logs", "run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    problems = [line["problem"] for line in logged if line["level"] == "ERROR"]
    assert problems and any("urgent.toml" in p for p in problems)
    printed = [line for line in err.splitlines() if not line.startswith("{")]
    assert printed == problems  # printed as before, too


# -- Finding 7: a digest slot that passed while the worker was down ----------------------

FRIDAY_14_05 = datetime(2027, 3, 5, 14, 5, tzinfo=JST)


def _digests(svc: Service) -> list[Outbox]:
    with session_scope(svc.engine) as s:
        rows = list(s.exec(select(Outbox).where(Outbox.kind == "digest")).all())
        s.expunge_all()
        return rows


def test_a_restart_after_the_14_00_slot_sends_that_digest_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import apscheduler.schedulers.base as base
    from apscheduler.schedulers.background import BackgroundScheduler

    from intake import worker

    svc = offline_service(tmp_path)
    urgent_case(svc, FRIDAY_14_05 - timedelta(hours=1))

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:
            return FRIDAY_14_05.astimezone(tz) if tz else FRIDAY_14_05

    monkeypatch.setattr(base, "datetime", Frozen)
    monkeypatch.setattr(worker, "now_in", lambda _svc: FRIDAY_14_05)
    scheduler = BackgroundScheduler(timezone=JST)
    worker.schedule_jobs(svc, scheduler)
    scheduler.start(paused=True)
    try:
        job = scheduler.get_job("digest-catch-up")
        assert job is not None and job.next_run_time <= FRIDAY_14_05
        with caplog.at_level(logging.INFO, logger="intake.worker"):
            job.func(*job.args)
    finally:
        scheduler.shutdown(wait=False)
    assert [row.partner for row in _digests(svc)] == ["city"]
    late = [r for r in caplog.records if "passed while the worker was not running" in r.message]
    assert len(late) == 1 and late[0].levelno == logging.INFO
    assert getattr(late[0], "slot", None) == "14:00"
    # A second restart within the hour, with a new case meanwhile: not sent again (the
    # new case waits for the next slot, as it would have without the restart).
    urgent_case(svc, FRIDAY_14_05)
    assert worker.catch_up_digests(svc, FRIDAY_14_05 + timedelta(minutes=5)) == []
    assert len(_digests(svc)) == 1


@pytest.mark.parametrize(
    "restart",
    [
        datetime(2027, 3, 5, 15, 1, tzinfo=JST),  # past the hour of grace
        datetime(2027, 3, 5, 13, 59, tzinfo=JST),  # before the slot: the scheduler sends it
        datetime(2027, 3, 6, 14, 5, tzinfo=JST),  # Saturday
    ],
)
def test_no_catch_up_outside_a_business_day_slot_and_its_grace(
    tmp_path: Path, restart: datetime
) -> None:
    from intake.worker import catch_up_digests

    svc = offline_service(tmp_path)
    urgent_case(svc, restart - timedelta(hours=2))
    assert catch_up_digests(svc, restart) == []
    assert _digests(svc) == []


def test_no_catch_up_when_the_slot_was_sent_before_the_restart(tmp_path: Path) -> None:
    from intake.worker import catch_up_digests, digest_job

    svc = offline_service(tmp_path)
    urgent_case(svc, FRIDAY_14_05 - timedelta(hours=1))
    digest_job(svc, FRIDAY_14_05.replace(minute=0), "14:00")  # the worker was up at 14:00
    urgent_case(svc, FRIDAY_14_05 - timedelta(minutes=2))
    assert catch_up_digests(svc, FRIDAY_14_05) == []
    assert len(_digests(svc)) == 1


# -- Finding 11: SIGHUP ------------------------------------------------------------------


def test_run_stops_cleanly_on_sighup(
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    tmp_path: Path,
    start_run: Callable[[LocalDovecot], subprocess.Popen[bytes]],
) -> None:
    write_config(tmp_path, dovecot, smtp_server)
    worker = start_run(dovecot)
    _wait_for_log(tmp_path, lambda line: line["message"] == "mailbox opened", timeout=90)
    worker.send_signal(signal.SIGHUP)
    assert worker.wait(timeout=30) == 0
    assert any(line["message"] == "worker stopped" for line in _log_lines(tmp_path))


# -- A first read cut short keeps its cutoff; a rolled-back ack is forgotten (review rvf) --


@pytest.mark.parametrize("restart", [False, True])
def test_a_first_read_cut_short_does_not_acknowledge_the_rest_of_the_old_folder(
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    restart: bool,
) -> None:
    """The lock is lost after the first batch (another worker takes over, or this one
    restarts): the next poll has a cursor, yet the old mail still goes unacknowledged."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    now = datetime.now(JST)
    for i in range(3):
        _append_at(
            dovecot,
            samples.consultation(f"old{i}@example.jp", "相談", "寂しい"),
            now - timedelta(days=3),
        )
    settings = load_settings(write_config(tmp_path, dovecot, smtp_server))
    settings = replace(settings, mailbox=replace(settings.mailbox, batch_size=1))
    svc = Service.from_settings(settings)
    answers = iter([True, False])
    with Mailbox(settings.mailbox) as mailbox:
        first = process_new_mail(svc, mailbox, now, still_mine=lambda: next(answers, False))
    assert (first.cases, first.acks) == (1, 0)
    if restart:
        svc = Service.from_settings(settings)
    dovecot.append(samples.consultation("fresh@example.jp", "相談", "寂しい"))
    with Mailbox(settings.mailbox) as mailbox:
        second = process_new_mail(svc, mailbox, now + timedelta(minutes=1))
    assert (second.cases, second.acks) == (3, 1)  # only the fresh mail


def test_a_first_poll_failing_before_its_first_batch_keeps_the_cutoff(
    dovecot: LocalDovecot, smtp_server: LocalSMTP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imapclient.exceptions import IMAPClientError

    import intake.pipeline as pipeline

    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    now = datetime.now(JST)
    for i in range(2):
        _append_at(
            dovecot,
            samples.consultation(f"old{i}@example.jp", "相談", "寂しい"),
            now - timedelta(days=3),
        )
    settings = load_settings(write_config(tmp_path, dovecot, smtp_server))
    svc = Service.from_settings(settings)
    real = pipeline._fetch_batch
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise IMAPClientError("connection reset")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_fetch_batch", flaky)
    with Mailbox(settings.mailbox) as mailbox, pytest.raises(IMAPClientError):
        process_new_mail(svc, mailbox, now)
    with Mailbox(settings.mailbox) as mailbox:  # the worker's retry after its backoff
        again = process_new_mail(svc, mailbox, now)
    assert (again.cases, again.acks) == (2, 0)


def test_a_quarantined_mail_is_acknowledged_when_its_rolled_back_ack_was_queued_first(
    dovecot: LocalDovecot, smtp_server: LocalSMTP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """handle_message queued the ack, then the alert step raised: the SAVEPOINT rolled the
    ack back, and the quarantine must acknowledge the resident (it took them for
    acknowledged, from the transaction's memory of senders)."""
    import intake.pipeline as pipeline

    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    raw = samples.consultation("res@example.jp", "相談", "死にたい")
    nl = b"\r\n" if b"\r\n" in raw else b"\n"
    dovecot.append(b"In-Reply-To: <newsletter-1@city.example>" + nl + raw)  # handle_message
    settings = load_settings(write_config(tmp_path, dovecot, smtp_server))
    svc = Service.from_settings(settings)
    real = pipeline._queue_alert
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("synthetic failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_queue_alert", flaky)
    with Mailbox(settings.mailbox) as mailbox:
        report = process_new_mail(svc, mailbox, datetime.now(JST))
    assert report.quarantined == 1
    with session_scope(svc.engine) as s:
        kinds = sorted(o.kind for o in s.exec(select(Outbox)).all())
    assert kinds == ["ack", "alert"]
