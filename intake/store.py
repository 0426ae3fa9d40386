"""Store: the sqlmodel tables and the few queries the pipeline needs.

What it guarantees (the rest of the service relies on these constraints, not on care):
- ``StoredMessage`` is unique per (mailbox, sha256 of the raw bytes): a mail fetched
  twice after a crash, or rescanned after a UIDVALIDITY change, is recognised.
- ``Outbox.dedupe_key`` is unique: one acknowledgement per case, one alert per urgent
  message, one digest line per (partner, message). Sending twice needs two rows, and
  the database refuses the second.
- ``DigestEntry`` is unique per (partner, message): a message appears in exactly one
  digest per partner, across restarts.
- ``Cursor`` (UIDVALIDITY + last UID) is advanced in the same transaction that commits
  the messages and their cases, so it never runs ahead of what is stored.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Index, LargeBinary, UniqueConstraint, event
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, create_engine


def utcnow() -> datetime:
    """Aware UTC: sqlmodel's datetime type refuses naive values, and UTC sorts correctly."""
    return datetime.now(UTC)


def to_db(moment: datetime) -> datetime:
    """Any aware datetime (JST in the pipeline) as the UTC the database stores."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: pass an aware one (the pipeline works in JST)")
    return moment.astimezone(UTC)


def from_db(moment: datetime | None) -> datetime | None:
    """A stored datetime back as an aware one (SQLite may hand back naive UTC)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class Cursor(SQLModel, table=True):
    """How far the mailbox has been read: RFC 3501 UIDVALIDITY + highest processed UID."""

    mailbox: str = Field(primary_key=True)
    uidvalidity: int = 0
    last_uid: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class StoredMessage(SQLModel, table=True):
    """One incoming mail, raw bytes first; everything else is derived and may be redone."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("mailbox", "sha256", name="uq_message_raw"),
        # The digest finds a case's messages not yet listed from this index alone (status
        # and row id in it), never reading a listed message's row: in SQLite the columns
        # after ``raw`` sit behind the mail's bytes (migration 0004).
        Index("ix_message_case_status", "case_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(index=True)
    uidvalidity: int = 0
    uid: int = 0
    # SHA-256 of the raw bytes; for rows with no mail bytes a key instead:
    # unfetchable:/read-later:/given-up:<uidvalidity>:<uid> (intake.pipeline, unreadable mail)
    sha256: str
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    size: int = 0
    received_at: datetime = Field(default_factory=utcnow)
    message_id: str | None = Field(default=None, index=True)
    from_addr: str = ""
    subject: str = ""
    body: str = ""
    new_text: str = ""
    problems: str = "[]"  # JSON list of parse problems
    # received | processed | quarantined | staff | duplicate (the same mail again) |
    # skipped (hash only) | unfetchable (a fetch-failure counter, no bytes)
    status: str = Field(default="received", index=True)
    attempts: int = 0
    stage_error: str | None = None  # "stage:ErrorClass" for quarantined mail, never the body
    automatic: str | None = None  # why no acknowledgement (RFC 3834 etc.), or None
    case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    is_followup: bool = False


class Case(SQLModel, table=True):
    """A consultation: one or more messages from a resident, owned by one partner."""

    __tablename__ = "case"
    __table_args__ = (
        # The acknowledgement flood guard (``pipeline._recent_ack`` and the bulk path's
        # query) looks for a sender's acknowledged cases within ``ack_window_hours`` of a
        # mail's arrival: this bounds it to the cases of that window, so its cost follows
        # the mail of a day, not the mailbox (migration 0004). Not (mailbox,
        # lower(sender), created_at): SQLAlchemy cannot reflect an expression index on
        # SQLite (it warns), so the schema checks could not see it.
        Index("ix_case_mailbox_created_at", "mailbox", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The mailbox (tenant) the case came in through: every query filters on it, so several
    # municipalities can share one database without seeing each other's cases.
    mailbox: str = Field(default="", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    sender: str = Field(default="", index=True)
    topic: str = "other"
    topics: str = "[]"  # JSON [[topic, score], ...]
    urgent: bool = False
    urgent_reasons: str = "[]"  # JSON list of matches
    matches: str = "[]"
    language: str = "ja"
    needs_human: bool = False
    partner: str = "city"
    phone: str | None = None
    status: str = "new"  # new | open | closed
    # pending | queued | sent | suppressed:<why> | ack_failed | ack_in_doubt
    ack_state: str = "pending"

    @property
    def number(self) -> str:
        """The case number staff and residents quote: stable, short, not guessable from text."""
        return f"C{self.id:06d}"


class Outbox(SQLModel, table=True):
    """Every outgoing mail, written with the change that caused it, delivered later."""

    __table_args__ = (
        # The read mark's question "which acknowledgements still wait?" starts from the
        # few waiting rows, not from every row the mailbox ever sent (migration 0005).
        Index("ix_outbox_waiting", "status", "kind", "mailbox"),
    )

    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(default="", index=True)
    kind: str  # alert | ack | digest | escalation
    priority: int = 5  # lower goes first: alerts 0, acks 1, digests 5
    dedupe_key: str = Field(unique=True)
    case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    partner: str | None = None
    recipients: str = "[]"  # JSON list
    message_id: str = Field(index=True)
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    status: str = Field(default="queued", index=True)  # queued | sending | sent | failed
    claimed_by: str | None = None  # "host:pid:start" of the sender handing it to SMTP now
    claimed_at: datetime | None = None
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_error: str | None = None
    sent_at: datetime | None = None
    smtp_response: str | None = None


class DigestEntry(SQLModel, table=True):
    """Which message went to which partner's digest; unique so nothing is listed twice."""

    __tablename__ = "digest_entry"
    __table_args__ = (UniqueConstraint("partner", "message_row", name="uq_digest_entry"),)

    id: int | None = Field(default=None, primary_key=True)
    partner: str = Field(index=True)
    message_row: int = Field(foreign_key="message.id")
    case_id: int = Field(foreign_key="case.id")
    outbox_id: int = Field(foreign_key="outbox.id")
    created_at: datetime = Field(default_factory=utcnow)


class Event(SQLModel, table=True):
    """Audit trail: alerts, acknowledgements, escalations, staff commands, with time."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    kind: str
    detail: str = ""
    actor: str = "service"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT (per-message isolation needs it):
    # take BEGIN over ourselves, as SQLAlchemy's SQLite documentation recommends.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # WAL lets the digest job read while the worker writes; busy_timeout rides out short locks.
    cur.execute("PRAGMA busy_timeout=10000")  # first, so switching to WAL may wait too
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    # Deleted and overwritten content is zeroed in the file, so a purge (intake.retention)
    # leaves no resident's words in free pages. Many builds (Debian's) default to it; others
    # (python.org, conda, Alpine) do not, so it is set, not assumed (review rv9b F3).
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


def _private_sqlite_file(url: str) -> None:
    """Make a new SQLite database file (and its folder) readable by its owner only.

    Why: the file holds every consultation; created under the usual umask 022 it (and its
    -wal and -shm files, which SQLite creates with the database file's mode) was readable
    by every local account (review rv9b F2). A folder or file that already exists is left
    as it is (a backup job may read it under another account); ``check`` warns about one
    that others can read."""
    raw = url.removeprefix("sqlite:///").partition("?")[0]
    if not raw or raw == ":memory:" or raw.startswith("file:"):
        return
    path = Path(raw)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def open_database(url: str) -> Engine:
    """Create the engine and the tables (idempotent). A new SQLite file is made private."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        _private_sqlite_file(url)
    # hide_parameters: a database error must never print a consultation into the logs.
    engine = create_engine(url, hide_parameters=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    from intake.migrate import migrate  # late import: migrate imports store, staff, report

    migrate(engine)
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def get_cursor(session: Session, mailbox: str) -> Cursor:
    cursor = session.get(Cursor, mailbox)
    if cursor is None:
        cursor = Cursor(mailbox=mailbox)
        session.add(cursor)
        session.flush()
    return cursor


def record_event(
    session: Session,
    kind: str,
    case_id: int | None = None,
    detail: str = "",
    actor: str = "service",
    at: datetime | None = None,
) -> Event:
    """Append to the audit trail; ``at`` is the pipeline's clock when it has one."""
    event = Event(
        kind=kind, case_id=case_id, detail=detail, actor=actor, at=to_db(at) if at else utcnow()
    )
    session.add(event)
    return event


# ``json.dumps`` with any non-default option builds a new encoder on every call; this one
# has the same options (so the same text) and is built once: a case stores four of them.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


def dumps(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, default=str)``: what the JSON columns hold."""
    return _ENCODER.encode(value)
