"""What retention and the database file leave on disk (review rv9b F2, F3).

The tables were clean after purge; the files were not: the SQLite WAL of a running worker
kept the purged mail, freed pages kept it wherever SQLite is not built with
SECURE_DELETE, and a new database was readable by every local account.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from intake.retention import DEFAULT_KEEP_DAYS, purge
from intake.store import open_database
from tests.helpers import offline_service
from tests.test_retention import NOW, OLD, seed

MARKER = "かくにんようのもじれつＱ"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_database_and_its_folder_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual one, systemd's default too
    try:
        database = tmp_path / "var" / "intake.db"
        engine = open_database(f"sqlite:///{database.as_posix()}")
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS probe (x TEXT)"))
            conn.execute(text("INSERT INTO probe VALUES ('x')"))
        assert _mode(database.parent) == 0o700
        assert _mode(database) == 0o600
        wal = database.with_name(database.name + "-wal")
        assert wal.exists() and _mode(wal) == 0o600  # SQLite copies the file's mode
        engine.dispose()
    finally:
        os.umask(old_umask)


def test_secure_delete_is_on_whatever_the_build_default(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{(tmp_path / 'x.db').as_posix()}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
    engine.dispose()


def test_purged_mail_is_gone_from_the_wal_while_the_worker_holds_its_connection(
    tmp_path: Path,
) -> None:
    svc = offline_service(tmp_path)
    seed(svc, OLD, f"{MARKER}@example.jp")
    idle = svc.engine.connect()  # the worker's pooled connection, open all along
    idle.exec_driver_sql("SELECT 1").all()
    idle.commit()
    try:
        assert purge(svc, NOW, DEFAULT_KEEP_DAYS) == 1
        database = Path(str(svc.engine.url.database))
        wal = database.with_name(database.name + "-wal")
        needle = MARKER.encode("utf-8")
        assert not wal.exists() or needle not in wal.read_bytes()
        assert needle not in database.read_bytes()
    finally:
        idle.close()


def test_check_warns_about_a_database_others_can_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from intake.check import run_checks

    svc = offline_service(tmp_path)
    database = Path(str(svc.engine.url.database))
    database.chmod(0o644)  # made before databases were private
    with caplog.at_level(logging.WARNING):
        run_checks(svc.settings.path, None)
    assert any("can be read by other accounts" in r.getMessage() for r in caplog.records)
    caplog.clear()
    database.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        run_checks(svc.settings.path, None)
    assert not any("can be read by other accounts" in r.getMessage() for r in caplog.records)
