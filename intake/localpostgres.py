"""A throwaway PostgreSQL server for the tests and benchmarks (never for production).

Contract:
    * ``LocalPostgres`` runs a private PostgreSQL (Debian's ``postgresql-15``, binaries in
      ``/usr/lib/postgresql/<version>/bin``) whose data directory, UNIX socket and log
      live in a fresh temp folder that ``stop()`` removes again.
    * It listens on 127.0.0.1 only, on a free port, with ``trust`` authentication for
      loopback, and never touches ``/etc/postgresql`` or the system cluster on 5432.
    * Durability is switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``):
      a test database that a power cut would lose is fine; one that makes the suite slow
      is not.
    * ``url`` is a ready ``postgresql+psycopg://`` URL for the database ``intake``;
      ``new_database(name)`` makes an empty database per test and returns its URL.

Why a real server and not SQLite pretending: advisory locks, ``SKIP LOCKED``, transactional
DDL and the stricter type checks are exactly what the PostgreSQL deployment relies on.

PostgreSQL refuses to run as root. As root the temp folder is handed to Debian's
``postgres`` system user and ``initdb``/``postgres`` run as that user (``subprocess``'s
``user=``/``group=``, the same as ``runuser -u postgres --`` without a wrapper process in
between, so the pid we signal is the postmaster itself). As a normal user everything runs
as the caller.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from intake.localservers import free_port

_SYSTEM_USER = "postgres"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_running: set[LocalPostgres] = set()


class LocalPostgresError(RuntimeError):
    """The private PostgreSQL could not start, be reached or stop; the message has the log."""


def postgres_binary_dir() -> Path | None:
    """The ``bin`` folder of the newest installed PostgreSQL, or None when none is.

    Debian keeps ``initdb`` and ``postgres`` out of PATH, in /usr/lib/postgresql/<v>/bin;
    ``$INTAKE_PG_BINDIR`` overrides (other distributions, a self-built server).
    """
    override = os.environ.get("INTAKE_PG_BINDIR")
    candidates = [Path(override)] if override else []

    def version(path: Path) -> tuple[int, ...]:
        parts = re.findall(r"\d+", path.parent.name)
        return tuple(int(p) for p in parts)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


class LocalPostgres:
    """A private PostgreSQL on 127.0.0.1 living in a temp folder; a context manager.

    After ``start()``: ``host``, ``port``, ``url`` (database ``intake``) and ``admin_url``
    (database ``postgres``) are set. ``new_database(name)`` creates another database and
    returns its URL; ``drop_database(name)`` removes one (closing its connections first).
    """

    def __init__(self, *, port: int | None = None, start_timeout: float = 30.0) -> None:
        self.host = "127.0.0.1"
        self.port = port or 0
        self._fixed_port = port is not None
        self.start_timeout = start_timeout
        self.user = "postgres"  # the database superuser initdb creates (-U), any OS user
        self.folder: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the postmaster is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def data_dir(self) -> Path:
        if self.folder is None:
            raise LocalPostgresError("LocalPostgres is not started")
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        if self.folder is None:
            raise LocalPostgresError("LocalPostgres is not started")
        return self.folder / "postgres.log"

    def url_for(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server (psycopg 3 driver)."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for("intake")

    @property
    def admin_url(self) -> str:
        return self.url_for("postgres")

    def start(self) -> LocalPostgres:
        """initdb a fresh cluster, start it, wait until it answers, create ``intake``.

        Raises ``LocalPostgresError`` (with the server log) when the binaries are missing,
        initdb fails, or the server does not accept connections within ``start_timeout``.
        """
        if self.running:
            return self
        bindir = postgres_binary_dir()
        if bindir is None:
            raise LocalPostgresError(
                "PostgreSQL binaries not found in /usr/lib/postgresql/*/bin: install Debian's "
                "postgresql (apt-get install postgresql-15, see .ci/system-packages) or set "
                "INTAKE_PG_BINDIR"
            )
        self.folder = Path(tempfile.mkdtemp(prefix="localpostgres-"))
        try:
            self._as = self._run_as()
            self._initdb(bindir)
            tries = 1 if self._fixed_port else 3
            for attempt in range(tries):
                if not self._fixed_port:
                    self.port = free_port()
                try:
                    self._launch(bindir)
                    break
                except LocalPostgresError:
                    in_use = "already in use" in self.log_tail()
                    if attempt + 1 < tries and in_use:
                        continue
                    raise
            self._admin(["CREATE DATABASE intake"])
        except BaseException:
            self.stop()
            raise
        _running.add(self)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions), then remove the folder.

        Safe to call twice. A server that does not stop in ``timeout`` seconds is killed.
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        _running.discard(self)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    # ----------------------------------------------------------------- databases

    def new_database(self, name: str) -> str:
        """Create an empty database ``name`` (lower-case letters, digits, ``_``); its URL."""
        self._check_name(name)
        self._admin([f'CREATE DATABASE "{name}"'])
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing whatever connections a test left open to it."""
        self._check_name(name)
        self._admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'])

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except (OSError, LocalPostgresError):
            return "(no log output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no log output)"

    # ----------------------------------------------------------------- internals

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")

    def _run_as(self) -> dict[str, Any]:
        """Popen arguments that drop root to the ``postgres`` user; chown the folder to it."""
        assert self.folder is not None
        if os.geteuid() != 0:
            return {}
        try:
            account = pwd.getpwnam(_SYSTEM_USER)
        except KeyError as exc:
            raise LocalPostgresError(
                "running as root, but there is no 'postgres' system user to run PostgreSQL "
                "as (PostgreSQL refuses root); install Debian's postgresql package, which "
                "creates it, or run the tests as a normal user"
            ) from exc
        # mkdtemp made it 0700 root: the server user must own it (the data directory
        # must be 0700 and owned by the server user, PostgreSQL checks both).
        os.chown(self.folder, account.pw_uid, account.pw_gid)
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_"))}
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
        if self._as:
            env["HOME"] = str(self.folder)
        return env

    def _initdb(self, bindir: Path) -> None:
        assert self.folder is not None
        cmd = [
            str(bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]
        result = subprocess.run(
            cmd,
            capture_output=True,
            timeout=120,
            check=False,
            cwd=self.folder,
            env=self._env(),
            **self._as,
        )
        if result.returncode != 0:
            raise LocalPostgresError(
                f"{' '.join(cmd)} failed with exit code {result.returncode}:\n"
                + result.stderr.decode(errors="replace").strip()
            )
        # Loopback TCP and our own socket only, no password (a throwaway test cluster).
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        )

    def _launch(self, bindir: Path) -> None:
        assert self.folder is not None
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.folder),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "64MB",
            "log_min_messages": "warning",
        }
        cmd = [str(bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.folder,
                env=self._env(),
                start_new_session=True,
                **self._as,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise LocalPostgresError(
                    f"postgres -D {self.data_dir} exited at start-up:\n{self.log_tail()}"
                )
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise LocalPostgresError(
            f"postgres did not accept connections on {self.host}:{self.port} within "
            f"{self.start_timeout:g} s (raise start_timeout on a slow machine):\n" + self.log_tail()
        )

    def _answers(self) -> bool:
        """True once a real login succeeds: an open port alone may still say 'starting up'."""
        import psycopg

        try:
            with psycopg.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                dbname="postgres",
                connect_timeout=2,
            ):
                return True
        except psycopg.OperationalError:
            return False

    def _admin(self, statements: list[str]) -> None:
        """Run statements outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            for statement in statements:
                conn.execute(statement.encode())


@atexit.register
def _stop_all() -> None:
    """Do not leave postmasters (and their temp folders) behind at interpreter exit."""
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop(timeout=5.0)
