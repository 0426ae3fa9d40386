"""A digest's cost grows with the new mail, not with the mailbox (issue 7, review rvr 4).

Each digest used to read every processed message not yet listed *for that partner*, so
every message of the other partners (raw bytes included) was read again at every digest
until ``purge`` blanked it a year later. What must hold: a digest run reads from the
database only the messages it lists (none when nothing is new), never ``message.raw``,
and lists exactly the cases ``_concerns`` gives each partner (own cases, a secondary topic
in ``also_notify``, every case for the coordinator), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import select

import intake.digest as digest
from intake.localpostgres import LocalPostgres
from intake.pipeline import Service
from intake.store import Case, StoredMessage, open_database, session_scope, to_db
from tests.helpers import offline_service

JST = ZoneInfo("Asia/Tokyo")
MONDAY = datetime(2027, 3, 1, 9, 0, tzinfo=JST)
RAW = b"x" * 20_000  # a photo attached from a phone is far larger; this keeps it quick
# A message column in a statement: ``message.id``, ``message.raw`` (not message_row).
_MESSAGE_COLUMN = re.compile(r"\bmessage\.(\w+)")


@pytest.fixture(params=["sqlite", "postgresql"])
def svc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """An offline service with a coordinator, whose genki also hears of secondary
    ``isolation`` (owned by city), on SQLite or on a private PostgreSQL database."""
    service = offline_service(tmp_path, extra='[service]\ncoordinator = ["coord@example.jp"]\n')
    partners = tuple(
        dataclasses.replace(p, also_notify=("isolation",)) if p.id == "genki" else p
        for p in service.directory.partners
    )
    service = dataclasses.replace(
        service, directory=dataclasses.replace(service.directory, partners=partners)
    )
    name = ""
    if request.param == "postgresql":
        server: LocalPostgres = request.getfixturevalue("postgres")
        name = f"dg{os.getpid()}_{time.monotonic_ns()}"
        service.engine.dispose()
        service = dataclasses.replace(service, engine=open_database(server.new_database(name)))
    yield service
    service.engine.dispose()
    if name:
        server.drop_database(name)


def add_case(svc: Service, partner: str, topics: list[tuple[str, float]], n: int = 1) -> None:
    """``n`` processed consultations of ``partner`` with ``topics`` (first is the primary)."""
    key = svc.settings.mailbox.key
    with session_scope(svc.engine) as s:
        for _ in range(n):
            case = Case(
                mailbox=key,
                created_at=to_db(MONDAY),
                sender=f"r{uuid.uuid4().hex[:8]}@example.jp",
                partner=partner,
                topic=topics[0][0] if topics else "other",
                topics=json.dumps(topics),
            )
            s.add(case)
            s.flush()
            s.add(
                StoredMessage(
                    mailbox=key,
                    sha256=uuid.uuid4().hex,
                    raw=RAW,
                    size=len(RAW),
                    received_at=to_db(MONDAY),
                    status="processed",
                    case_id=case.id,
                    new_text="相談の本文です。",
                )
            )


class Reads:
    """Rows the ORM read from statements on the message table, and the columns named."""

    def __init__(self) -> None:
        self.rows = 0
        self.columns: set[str] = set()

    def __call__(self, state: ORMExecuteState) -> Any:
        if not state.is_select:
            return None
        named = set(_MESSAGE_COLUMN.findall(str(state.statement.compile())))
        if not named:
            return None
        self.columns |= named
        frozen = state.invoke_statement().freeze()
        self.rows += len(frozen.data)
        return frozen()


def reads_during(action: Any) -> tuple[Any, Reads]:
    reads = Reads()
    event.listen(OrmSession, "do_orm_execute", reads)
    try:
        return action(), reads
    finally:
        event.remove(OrmSession, "do_orm_execute", reads)


def expected(svc: Service) -> dict[str, int]:
    """What each partner's digest should list now, by ``_concerns`` over every case."""
    with session_scope(svc.engine) as s:
        cases = s.exec(select(Case)).all()
        done = {(e.partner, e.case_id) for e in s.exec(select(digest.DigestEntry)).all()}
    overview = digest.coordinator(svc)
    assert overview is not None
    counts: dict[str, int] = {}
    for partner in [*svc.directory.partners, overview]:
        n = sum(1 for c in cases if digest._concerns(partner, c) and (partner.id, c.id) not in done)
        if n:
            counts[partner.id] = n
    return counts


def test_a_digest_reads_the_new_messages_only_not_the_history(svc: Service) -> None:
    add_case(svc, "harmony", [("bullying", 3.0)], n=60)
    add_case(svc, "genki", [("poverty", 3.0)], n=60)
    add_case(svc, "city", [("isolation", 3.0)], n=60)
    first = digest.queue_digests(svc, MONDAY)
    assert first == {"harmony": 60, "genki": 60, "city": 60, "coordinator": 180}

    again, reads = reads_during(lambda: digest.queue_digests(svc, MONDAY.replace(hour=14)))
    assert again == {}
    assert reads.rows == 0, f"{reads.rows} message rows read for a digest with nothing new"

    add_case(svc, "harmony", [("bullying", 3.0), ("isolation", 1.0)])  # genki hears too
    add_case(svc, "city", [("isolation", 3.0)])
    want = expected(svc)
    assert want == {"harmony": 1, "genki": 1, "city": 1, "coordinator": 2}
    queued, reads = reads_during(lambda: digest.queue_digests(svc, MONDAY.replace(day=2)))
    assert queued == want
    assert reads.rows == sum(want.values()), "read more than the messages it listed"
    assert "raw" not in reads.columns
    assert reads.columns, "the listener saw the digest's query"


def test_each_partner_gets_exactly_the_cases_concerns_gives_it(svc: Service) -> None:
    add_case(svc, "harmony", [("bullying", 3.0)])
    add_case(svc, "harmony", [("bullying", 3.0), ("isolation", 1.0)])  # genki too
    add_case(svc, "harmony", [("bullying", 3.0), ("poverty", 2.0), ("isolation", 1.0)])  # too
    add_case(svc, "city", [("isolation", 3.0)])  # primary isolation: not genki's
    add_case(svc, "city", [("isolation", 3.0), ("bullying", 1.0)])  # harmony has no also
    add_case(svc, "genki", [("poverty", 3.0), ("isolation", 1.0)])  # genki once
    add_case(svc, "genki", [("caregiving", 3.0)])
    add_case(svc, "city", [])  # no topics at all (an unreadable mail's case)
    want = expected(svc)
    assert want == {"harmony": 3, "genki": 4, "city": 3, "coordinator": 8}
    assert digest.queue_digests(svc, MONDAY) == want
    assert digest.queue_digests(svc, MONDAY.replace(hour=14)) == {}


def test_a_listed_entry_never_loads_the_raw_mail(svc: Service) -> None:
    add_case(svc, "harmony", [("bullying", 3.0)])
    with session_scope(svc.engine) as s:
        partner = svc.directory.get("harmony")
        assert partner is not None
        [(msg, case)] = digest._unlisted(s, svc.settings.mailbox.key, partner)
        assert "raw" not in msg.__dict__
        with pytest.raises(Exception, match="raw"):
            _ = msg.raw  # raiseload: a load of the raw mail here would be a bug
        assert digest._entry(partner, msg, case)["text"] == "相談の本文です。"


def test_on_sqlite_listed_messages_are_told_apart_by_the_index_alone(tmp_path: Path) -> None:
    # SQLite keeps a row's columns after ``raw`` (status, case_id) behind the mail's bytes:
    # a plan that reads the message row to test them reads every retained mail again.
    svc = offline_service(tmp_path)
    add_case(svc, "harmony", [("bullying", 3.0)], n=20)
    add_case(svc, "genki", [("poverty", 3.0)], n=20)
    seen: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, params: Any, *_a: Any) -> None:
        if statement.startswith("SELECT message."):
            seen.append((statement, params))

    event.listen(svc.engine, "before_cursor_execute", record)
    try:
        digest.queue_digests(svc, MONDAY)
    finally:
        event.remove(svc.engine, "before_cursor_execute", record)
    assert len(seen) == len(svc.directory.partners)
    with svc.engine.connect() as conn:
        for statement, params in seen:
            plan = [
                str(row[-1])
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            ]
            assert any("USING INDEX ix_message_case_status" in step for step in plan), plan
            assert not any(
                step.startswith(("SCAN message", "SEARCH message USING INDEX ix_message_mailbox"))
                for step in plan
            ), plan
    svc.engine.dispose()
