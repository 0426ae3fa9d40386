"""Schema migrations: ``migrate(engine)`` brings any SQLite or PostgreSQL database to head.

Contract:
    * An empty database (none of our tables) gets ``SQLModel.metadata.create_all`` and is
      stamped at head: one round of CREATE TABLE instead of replaying history, so tests and
      new deployments start fast. ``replay=True`` runs every revision instead (the tests use
      it to prove the revisions build the same schema as the models).
    * A database at an older revision gets ``alembic upgrade head``.
    * A database made by ``create_all`` before migrations existed (our tables, no
      ``alembic_version``) gets its missing tables created and is stamped at the initial
      revision, then upgraded. That is right for databases made by the models of the
      initial revision, which is every database deployed before this module.
    * A database already at head costs one SELECT (no Alembic environment is loaded), so
      ``open_database`` may call this on every start.
    * Two processes migrating at once are serialised: a transaction-scoped advisory lock on
      PostgreSQL, an ``flock`` on ``<database>.migrate.lock`` beside a SQLite file. On
      PostgreSQL the whole migration is one transaction (DDL is transactional there).

SQLite migrations run in Alembic's batch mode (``render_as_batch``: SQLite cannot ALTER
most things, so a changed table is copied) with foreign keys switched off for the
duration, as SQLite's documentation prescribes for table rebuilds, and checked afterwards.

Command line::

    python -m intake.migrate --url URL                 # bring URL to head
    python -m intake.migrate --url URL --check         # exit 1 if models and schema differ
    python -m intake.migrate --revision "why"          # autogenerate the next revision file
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import logging
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine

from intake.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
INITIAL_REVISION = "0001"
VERSION_TABLE = "alembic_version"
# pg_advisory_xact_lock key for "a migration is running" (any stable 64-bit number).
_MIGRATE_LOCK_NAME = "soudan-intake:migrate"


def target_metadata() -> MetaData:
    """Every table of the service: the modules that define tables, imported for their side
    effect of registering them in ``SQLModel.metadata`` (store, staff notes, report marks)."""
    from sqlmodel import SQLModel

    import intake.report
    import intake.staff
    import intake.store  # noqa: F401

    return SQLModel.metadata


def alembic_config(url: str | None = None) -> Config:
    """Alembic's config built in code (no alembic.ini): the script folder and, if given, a URL."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Split path lists on os.pathsep (Alembic 1.16+ warns when this is left implicit).
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@functools.lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision in ``intake/migrations/versions`` (one head; branches are a bug)."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(
            f"intake/migrations has {len(heads)} heads {heads}; merge them "
            "(alembic merge) so that every database has one place to go"
        )
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    """The revision the database is stamped with, or None (empty or pre-Alembic)."""
    with engine.connect() as conn:
        return _stamped(conn)


def _stamped(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def _lock_key() -> int:
    from intake.locks import stable_key

    return stable_key(_MIGRATE_LOCK_NAME)


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes (no-op for :memory:)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    path = Path(database).with_name(Path(database).name + ".migrate.lock")
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _sqlite_foreign_keys_off(conn: Connection) -> Iterator[None]:
    """Batch mode rebuilds tables; with foreign keys on, dropping the old copy would fail.

    ``PRAGMA foreign_keys`` is ignored inside a transaction, so it is set on the raw
    connection before ours begins, and every key is checked before it is switched back on.
    """
    raw: Any = conn.connection.dbapi_connection
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
        broken = raw.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"migration left broken foreign keys: {broken[:5]}")
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def migrate(engine: Engine, *, replay: bool = False) -> str:
    """Bring the database behind ``engine`` to the head revision; returns that revision.

    Idempotent and cheap at head. ``replay=True`` builds an empty database by running
    every revision instead of ``create_all`` (slower; for tests of the revisions).
    """
    head = head_revision()
    # SQLite: the lock comes before the first connection, because a brand-new file's first
    # connections switch it to WAL, and that switch fails at once ("database is locked")
    # when another process does the same; the lock serialises them.
    with _file_lock(engine):
        if current_revision(engine) == head:
            return head
        _migrate_locked(engine, head, replay)
    return head


def _known(revision: str) -> bool:
    """Whether ``revision`` is one of ours (``intake/migrations/versions``)."""
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except Exception:
        return False


def _migrate_locked(engine: Engine, head: str, replay: bool) -> None:
    metadata = target_metadata()
    with engine.connect() as conn:
        guard = (
            _sqlite_foreign_keys_off(conn)
            if conn.dialect.name == "sqlite"
            else contextlib.nullcontext()
        )
        with guard, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key()})
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            stamped = _stamped(conn)  # again: another process may have migrated meanwhile
            ours = set(metadata.tables)
            present = set(inspect(conn).get_table_names()) & ours
            if stamped is None and not present and not replay:
                metadata.create_all(conn)
                command.stamp(cfg, "head")
                log.info("database created at schema revision %s", head)
            else:
                if stamped is None and present:
                    # Made by create_all before migrations existed (some tables perhaps added
                    # later by lazy create_all calls): if it matches today's models it is at
                    # head, else it is the initial revision's schema.
                    metadata.create_all(conn, tables=[metadata.tables[n] for n in ours - present])
                    stamped = head if not _diff(conn) else INITIAL_REVISION
                    command.stamp(cfg, stamped)
                    log.info("database made before migrations stamped at %s", stamped)
                if stamped is not None and stamped != head and not _known(stamped):
                    # Review rv10a F14: this surfaced as "Can't locate revision" from
                    # alembic, an "unexpected error" that systemd restarted every 10 s.
                    raise ConfigError(
                        f"the database is at schema revision {stamped}, made by a newer "
                        f"soudan-intake; this installation knows revisions up to {head}. "
                        "Install the newer version (never downgrade a database), or restore "
                        "a backup made by this version"
                    )
                if stamped != head:
                    command.upgrade(cfg, "head")
                    log.info("database migrated from %s to %s", stamped or "empty", head)


def schema_diff(engine: Engine) -> list[Any]:
    """What autogenerate would change to make the database match the models ([] = none).

    Run against a database migrated to head, a non-empty answer means a model changed
    without a migration; ``--revision`` writes that migration.
    """
    with engine.connect() as conn:
        return _diff(conn)


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "render_as_batch": conn.dialect.name == "sqlite",
        },
    )
    diff: list[Any] = compare_metadata(context, target_metadata())
    return diff


def write_revision(message: str) -> Path:
    """Autogenerate the next revision against a scratch SQLite database replayed to head."""
    script = ScriptDirectory.from_config(alembic_config())
    number = f"{len(list(script.walk_revisions())) + 1:04d}"
    with tempfile.TemporaryDirectory(prefix="intake-revision-") as folder:
        url = f"sqlite:///{Path(folder) / 'scratch.db'}"
        engine = create_engine(url)
        try:
            migrate(engine, replay=True)
            cfg = alembic_config(url)
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                made = command.revision(cfg, message=message, autogenerate=True, rev_id=number)
        finally:
            engine.dispose()
    assert made is not None and not isinstance(made, list)
    head_revision.cache_clear()
    return Path(made.path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m intake.migrate", description=__doc__)
    parser.add_argument("--url", help="database URL (default: the config's [database] url)")
    parser.add_argument("--config", help="TOML config to read the URL from ($INTAKE_CONFIG)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when the models differ from the migrated schema",
    )
    parser.add_argument(
        "--revision",
        metavar="MESSAGE",
        help="autogenerate the next revision file for a model change",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.revision:
        print(write_revision(args.revision))
        return 0
    url = args.url
    if url is None:
        from intake.config import load_settings

        url = load_settings(args.config).database_url
    from intake.store import open_database

    engine = open_database(url)
    try:
        print(f"at revision {migrate(engine)}")
        if args.check:
            diff = schema_diff(engine)
            for item in diff:
                print(f"differs: {item}")
            return 1 if diff else 0
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
