"""Locks: exactly one worker polls a mailbox at a time, and a dead holder frees it.

Contract:
    * ``mailbox_lock(engine, mailbox_key) -> MailboxLock`` picks the lock for the database:
      a PostgreSQL session advisory lock, or an ``flock`` beside a SQLite file.
    * ``try_acquire()`` never waits: a worker that does not get the lock serves other
      duties (the outbox, the scheduler) and tries again at its next poll.
    * The lock lives exactly as long as its holder: PostgreSQL drops a session's advisory
      locks when the session ends (process killed, connection cut, server-side keepalive
      expiry), the kernel drops an ``flock`` when the process dies. No lease times, no
      stale-lock cleanup, no clock.
    * ``verify()`` is the holder's check before each poll: ``False`` means the lock was lost
      (the connection died) and another worker may be polling; stop and ``try_acquire()``.

The lock is what makes polling single; the database constraints (one message row per raw
mail and mailbox, one outbox row per dedupe key) stay the backstop if a holder loses its
lock in the middle of a batch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

# Server-side keepalive for the lock's session: a holder that vanishes from the network
# (not just dies, which closes the socket at once) loses its lock after about a minute.
_KEEPALIVE = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 3}


def stable_key(name: str) -> int:
    """A signed 64-bit number for ``name``, the same in every process and Python version.

    (``hash()`` is salted per process, so two workers would disagree.) BLAKE2b with an
    8-byte digest fits PostgreSQL's ``bigint`` advisory-lock key space.
    """
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def serialise(session: Any, name: str) -> None:
    """One transaction named ``name`` at a time across workers, from here to its end.

    Why: two workers' jobs at the same minute (digest, escalation) read the same rows and
    the loser's writes failed on a unique key, with an ERROR traceback; taken first in the
    transaction, this makes the other wait and then read what this one committed.
    PostgreSQL: a transaction-scoped advisory lock (``soudan-intake:<name>``). SQLite: its
    write lock, which a writing statement takes even when it changes no row (a deferred
    BEGIN would otherwise read a snapshot, then fail to write). ``session``: a SQLAlchemy
    or SQLModel Session.
    """
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"),
            {"key": stable_key(f"soudan-intake:{name}")},
        )
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("UPDATE outbox SET attempts = attempts WHERE 0 = 1")


def mailbox_lock_key(mailbox_key: str) -> int:
    """The advisory-lock key of a mailbox (``MailboxSettings.key``), namespaced to us."""
    return stable_key(f"soudan-intake:mailbox:{mailbox_key}")


class MailboxLock:
    """ "I am the one worker polling this mailbox": ``try_acquire``, ``verify``, ``release``.

    Use ``mailbox_lock(engine, key)`` to get the right kind. Also a context manager that
    releases on exit (it does not acquire: the caller decides what to do without it).
    """

    def __init__(self, mailbox_key: str) -> None:
        self.mailbox_key = mailbox_key
        self.key = mailbox_lock_key(mailbox_key)
        self._held = False

    @property
    def held(self) -> bool:
        """Whether this object took the lock and has not released it (no round trip)."""
        return self._held

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when we hold it afterwards. Never waits."""
        raise NotImplementedError

    def verify(self) -> bool:
        """Whether we still hold the lock; a lost one is marked released. Call before a poll."""
        return self._held

    def release(self) -> None:
        """Let another worker take over; safe to call when not held."""
        raise NotImplementedError

    def __enter__(self) -> MailboxLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mailbox_key!r}, held={self._held})"


class PostgresMailboxLock(MailboxLock):
    """``pg_try_advisory_lock`` on a dedicated connection that stays open while held.

    The connection comes from its own engine without a pool (``NullPool``): closing it
    really ends the session, so a lock can never linger in a pooled connection, and the
    application's pool size is not reduced by the lock.
    """

    def __init__(self, engine: Engine, mailbox_key: str) -> None:
        super().__init__(mailbox_key)
        self._engine = create_engine(engine.url, poolclass=NullPool)
        self._conn: Connection | None = None

    @property
    def backend_pid(self) -> int | None:
        """The server process holding our session (for operators and tests), or None."""
        if self._conn is None:
            return None
        return int(self._conn.execute(text("SELECT pg_backend_pid()")).scalar_one())

    def try_acquire(self) -> bool:
        if self._held and self.verify():
            return True
        self._drop()
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            for name, value in _KEEPALIVE.items():
                conn.execute(text(f"SET {name} = {int(value)}"))
            # A server-wide idle_session_timeout would end an idle holder's session.
            conn.execute(text("SET idle_session_timeout = 0"))
            got = bool(
                conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar_one()
            )
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        self._held = True
        log.info("mailbox lock acquired", extra={"mailbox": self.mailbox_key})
        return True

    def verify(self) -> bool:
        if not self._held or self._conn is None:
            return False
        try:
            # A live session still holds its session-level locks; a dead one holds nothing.
            self._conn.execute(text("SELECT 1"))
        except DBAPIError:
            log.warning(
                "mailbox lock lost: its database connection died",
                extra={"mailbox": self.mailbox_key},
            )
            self._drop()
            return False
        return True

    def release(self) -> None:
        if self._conn is not None and self._held:
            with contextlib.suppress(DBAPIError):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            log.info("mailbox lock released", extra={"mailbox": self.mailbox_key})
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._held = False
        if conn is not None:
            with contextlib.suppress(DBAPIError):
                conn.close()


# In-memory SQLite has no file to lock: one process is the only possible worker, so a
# lock per key inside the process is the whole truth.
_memory_locks: dict[str, threading.Lock] = {}
_memory_guard = threading.Lock()


class FileMailboxLock(MailboxLock):
    """``flock`` on ``<database file>.mailbox-<key>.lock``; the kernel drops it with the process.

    One file per mailbox, never deleted (deleting a lock file races with a process that
    has just opened it). Two ``FileMailboxLock`` objects exclude each other even inside
    one process, because each opens the file anew.
    """

    def __init__(self, database: Path | None, mailbox_key: str) -> None:
        super().__init__(mailbox_key)
        self.path = (
            None
            if database is None
            else database.with_name(f"{database.name}.mailbox-{self.key & (2**64 - 1):016x}.lock")
        )
        self._handle: IO[str] | None = None
        self._memory: threading.Lock | None = None

    def try_acquire(self) -> bool:
        if self._held:
            return True
        if self.path is None:
            with _memory_guard:
                lock = _memory_locks.setdefault(self.mailbox_key, threading.Lock())
            if not lock.acquire(blocking=False):
                return False
            self._memory = lock
            self._held = True
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        self._held = True
        log.info("mailbox lock acquired", extra={"mailbox": self.mailbox_key})
        return True

    def release(self) -> None:
        if self._memory is not None:
            self._memory.release()
            self._memory = None
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
        self._held = False


def mailbox_lock(engine: Engine, mailbox_key: str) -> MailboxLock:
    """The mailbox lock that fits ``engine``'s database (PostgreSQL or SQLite)."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return PostgresMailboxLock(engine, mailbox_key)
    if dialect == "sqlite":
        database: Any = engine.url.database
        memory = not database or database == ":memory:" or str(database).startswith("file::memory:")
        return FileMailboxLock(None if memory else Path(database).resolve(), mailbox_key)
    raise ValueError(f"no mailbox lock for database dialect {dialect!r} (PostgreSQL or SQLite)")
