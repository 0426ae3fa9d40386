"""The batch path under concurrent writers and with the prepare pool's outcomes.

On SQLite (WAL), a transaction that reads first and writes later fails at its first write
the moment any other connection commits in between (SQLITE_BUSY_SNAPSHOT; busy_timeout
does not help a stale snapshot). The worker's outbox thread, scheduled jobs and staff
commands all commit at any time, so the batch must not leave such a window open.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import intake.pipeline as pipeline
from intake import samples
from intake.config import load_settings
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import RunReport, Service, ingest_batch
from intake.store import Case, StoredMessage, record_event
from tests.helpers import write_config

pytestmark = pytest.mark.integration
JST_NOON = datetime(2026, 11, 26, 12, 0).astimezone()


@pytest.fixture
def svc(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    service = Service.from_settings(load_settings(write_config(tmp_path, dovecot, smtp_server)))
    yield service
    service.close()


def consultation(i: int, text: str = "最近ひとりで寂しいです。話し相手がいません。") -> bytes:
    return samples.consultation(f"resident{i:04d}@example.jp", f"相談 {i}", text)


def fetched(n: int) -> list[tuple[int, bytes, datetime | None]]:
    """A batch as ``Mailbox.fetch`` yields it: UIDs 1..n, each a distinct consultation."""
    return [(uid, consultation(uid), None) for uid in range(1, n + 1)]


def test_a_commit_by_another_connection_during_prepare_keeps_the_batch_on_the_normal_path(
    svc: Service, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = pipeline._attempt
    commits: list[int] = []

    def attempt_while_staff_commit(ctx: Any, raw: bytes) -> Any:
        if not commits:
            # What the outbox thread or a staff command does at any moment: a commit
            # through another connection of the same database.
            with Session(svc.engine) as other:
                record_event(other, "staff-note", detail="synthetic")
                other.commit()
            commits.append(1)
        return real(ctx, raw)

    monkeypatch.setattr(pipeline, "_attempt", attempt_while_staff_commit)
    items = fetched(5)
    report = RunReport()
    with caplog.at_level(logging.WARNING, logger="intake.pipeline"):
        ingest_batch(svc, items, 1, 5, JST_NOON, report)
    assert commits == [1]
    assert not [r for r in caplog.records if "batch failed as a whole" in r.getMessage()]
    assert report.cases == 5 and report.quarantined == 0
    with Session(svc.engine) as session:
        messages = session.exec(select(StoredMessage)).all()
        assert len(session.exec(select(Case)).all()) == 5
    # The per-message recovery would have counted a second attempt for each.
    assert sorted((m.status, m.attempts) for m in messages) == [("processed", 1)] * 5


def test_the_batch_transaction_holds_the_sqlite_write_lock_from_its_first_read(
    svc: Service, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another writer committing between transaction 2's first read and its first write
    waits for the batch (busy_timeout) instead of making it fail as a whole."""
    import threading

    real = pipeline._open_cases
    writers: list[threading.Thread] = []
    committed: list[bool] = []

    def staff_commit() -> None:
        with Session(svc.engine) as other:
            record_event(other, "staff-note", detail="synthetic")
            other.commit()
        committed.append(True)

    def open_cases_during_a_commit(*args: Any, **kwargs: Any) -> None:
        if not writers:
            writer = threading.Thread(target=staff_commit)
            writers.append(writer)
            writer.start()
            writer.join(timeout=1.0)  # with the lock held it waits for our commit instead
        real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_open_cases", open_cases_during_a_commit)
    items = fetched(3)
    report = RunReport()
    with caplog.at_level(logging.WARNING, logger="intake.pipeline"):
        ingest_batch(svc, items, 1, 3, JST_NOON, report)
    writers[0].join(timeout=15)
    assert committed == [True]  # the other writer got through, after the batch
    assert not [r for r in caplog.records if "batch failed as a whole" in r.getMessage()]
    assert report.cases == 3
    with Session(svc.engine) as session:
        messages = session.exec(select(StoredMessage)).all()
    assert sorted((m.status, m.attempts) for m in messages) == [("processed", 1)] * 3


def _fail_in_child(raws: list[bytes]) -> list[Any]:
    """A child's chunk work that fails every message, as a child out of memory would."""
    from intake.prepare_pool import Failed

    return [Failed("parse", "MemoryError") for _raw in raws]


def test_a_failure_in_a_pool_child_is_tried_once_more_in_process_not_quarantined(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    from intake.pipeline import POOL_MIN_BATCH
    from intake.prepare_pool import PreparePool

    svc.pool = PreparePool(svc.settings, 1, work=_fail_in_child)
    tries: list[bytes] = []
    real = pipeline._attempt

    def counting(ctx: Any, raw: bytes) -> Any:
        tries.append(raw)
        return real(ctx, raw)

    monkeypatch.setattr(pipeline, "_attempt", counting)
    n = POOL_MIN_BATCH
    items = fetched(n)
    report = RunReport()
    ingest_batch(svc, items, 1, n, JST_NOON, report)
    assert svc.pool.batches == 1 and svc.pool.failures == 0
    assert (report.cases, report.quarantined) == (n, 0)
    assert len(tries) == n and len(set(tries)) == n  # each message once in this process


def test_a_failure_in_this_process_is_final_and_not_tried_again(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    tries: list[bytes] = []

    def failing(ctx: Any, raw: bytes) -> Any:
        tries.append(raw)
        return pipeline.Failed("triage", "RecursionError")

    monkeypatch.setattr(pipeline, "_attempt", failing)
    items = fetched(2)
    report = RunReport()
    ingest_batch(svc, items, 1, 2, JST_NOON, report)
    assert report.quarantined == 2 and len(tries) == 2
    with Session(svc.engine) as session:
        errors = sorted(str(m.stage_error) for m in session.exec(select(StoredMessage)))
    assert errors == ["triage:RecursionError"] * 2
