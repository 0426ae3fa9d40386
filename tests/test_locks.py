"""The mailbox lock: one poller per mailbox, and a dead holder's lock passes to another.

Every behaviour is checked on both backends: a PostgreSQL advisory lock (real server,
``LocalPostgres``) and an ``flock`` beside a SQLite file. "Dies with its holder" is
proved with a real process killed by SIGKILL, the way a crashed worker dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from intake.localpostgres import LocalPostgres
from intake.locks import MailboxLock, mailbox_lock, mailbox_lock_key, stable_key

ROOT = Path(__file__).resolve().parents[1]
MAILBOX = "intake@127.0.0.1/INBOX"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{(tmp_path / 'intake.db').as_posix()}"
    else:
        server: LocalPostgres = request.getfixturevalue("postgres")
        url = server.new_database(f"locks_{os.getpid()}_{time.monotonic_ns()}")
    made = create_engine(url)
    try:
        yield made
    finally:
        made.dispose()


@pytest.fixture
def locks() -> Iterator[list[MailboxLock]]:
    """Locks a test made; all released at teardown so a failing test leaks none."""
    made: list[MailboxLock] = []
    yield made
    for lock in made:
        lock.release()


def new_lock(engine: Engine, locks: list[MailboxLock], key: str = MAILBOX) -> MailboxLock:
    lock = mailbox_lock(engine, key)
    locks.append(lock)
    return lock


def eventually(condition: object, timeout: float = 10.0) -> bool:
    """Poll ``condition()`` until true or ``timeout``: the server notices a death a bit later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- the key


def test_lock_key_is_the_same_in_every_process() -> None:
    # hash() is salted per process; the key must not be, or two workers would not collide.
    code = f"from intake.locks import mailbox_lock_key; print(mailbox_lock_key({MAILBOX!r}))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {str(mailbox_lock_key(MAILBOX))}


def test_lock_key_fits_postgres_bigint_and_separates_mailboxes() -> None:
    keys = {stable_key(f"user{i}@host/INBOX") for i in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**63) <= k < 2**63 for k in keys)
    assert mailbox_lock_key(MAILBOX) != stable_key(MAILBOX), "namespaced, not the bare name"


# --------------------------------------------------------------------------- both backends


def test_second_worker_is_refused_while_the_first_holds_the_lock(
    engine: Engine, locks: list[MailboxLock]
) -> None:
    first, second = new_lock(engine, locks), new_lock(engine, locks)
    assert first.try_acquire()
    assert first.held
    assert not second.try_acquire()
    assert not second.held
    assert first.try_acquire(), "taking a lock one already holds is a yes, not a deadlock"


def test_release_lets_another_worker_take_over(engine: Engine, locks: list[MailboxLock]) -> None:
    first, second = new_lock(engine, locks), new_lock(engine, locks)
    assert first.try_acquire()
    first.release()
    assert not first.held
    assert second.try_acquire()
    assert not first.try_acquire()
    first.release()  # releasing a lock one does not hold changes nothing
    assert second.held and second.verify()


def test_different_mailboxes_do_not_exclude_each_other(
    engine: Engine, locks: list[MailboxLock]
) -> None:
    a = new_lock(engine, locks, "city-a@host/INBOX")
    b = new_lock(engine, locks, "city-b@host/INBOX")
    assert a.try_acquire()
    assert b.try_acquire()


def test_context_manager_releases_on_exit(engine: Engine, locks: list[MailboxLock]) -> None:
    with new_lock(engine, locks) as first:
        assert first.try_acquire()
    assert not first.held
    assert new_lock(engine, locks).try_acquire()


_HOLDER = """
import sys, time
from sqlalchemy import create_engine
from intake.locks import mailbox_lock
lock = mailbox_lock(create_engine(sys.argv[1]), sys.argv[2])
print("held" if lock.try_acquire() else "refused", flush=True)
time.sleep(120)
"""


def test_lock_of_a_killed_worker_process_passes_to_another(
    engine: Engine, locks: list[MailboxLock]
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url, MAILBOX], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        other = new_lock(engine, locks)
        assert not other.try_acquire(), "the live holder must exclude us"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert eventually(other.try_acquire), "the dead holder's lock was never freed"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


# --------------------------------------------------------------------------- PostgreSQL


def test_holder_whose_connection_is_cut_loses_the_lock_and_another_takes_over(
    postgres: LocalPostgres, locks: list[MailboxLock]
) -> None:
    engine = create_engine(postgres.new_database(f"cut_{os.getpid()}"))
    try:
        holder, other = new_lock(engine, locks), new_lock(engine, locks)
        assert holder.try_acquire()
        pid = holder.backend_pid  # type: ignore[attr-defined]
        assert not other.try_acquire()
        with engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert eventually(other.try_acquire)
        # The old holder finds out at its next check and stops polling.
        assert not holder.verify()
        assert not holder.held
        assert not holder.try_acquire(), "the new holder keeps it"
    finally:
        for lock in locks:
            lock.release()
        engine.dispose()


def test_postgres_lock_is_visible_as_an_advisory_lock_while_held(
    postgres: LocalPostgres, locks: list[MailboxLock]
) -> None:
    engine = create_engine(postgres.new_database(f"seen_{os.getpid()}"))
    query = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = :key"
    )
    try:
        lock = new_lock(engine, locks)
        with engine.connect() as conn:
            assert conn.execute(query, {"key": lock.key}).scalar_one() == 0
            assert lock.try_acquire()
            assert conn.execute(query, {"key": lock.key}).scalar_one() == 1
            lock.release()
            assert conn.execute(query, {"key": lock.key}).scalar_one() == 0
    finally:
        for lock in locks:
            lock.release()
        engine.dispose()


# --------------------------------------------------------------------------- SQLite


def test_sqlite_lock_file_lives_beside_the_database(
    tmp_path: Path, locks: list[MailboxLock]
) -> None:
    engine = create_engine(f"sqlite:///{(tmp_path / 'db' / 'intake.db').as_posix()}")
    lock = new_lock(engine, locks)
    assert lock.try_acquire()
    made = list((tmp_path / "db").glob("intake.db.mailbox-*.lock"))
    assert [p.name for p in made] == [lock.path.name]  # type: ignore[attr-defined]


def test_in_memory_sqlite_lock_still_excludes_a_second_holder(locks: list[MailboxLock]) -> None:
    engine = create_engine("sqlite://")
    first, second = new_lock(engine, locks), new_lock(engine, locks)
    assert first.try_acquire()
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
