"""Throwaway local mail servers for the tests and for ``python service.py demo``.

Contract:
    * ``LocalDovecot`` runs a private Dovecot IMAP server (a real one, not a mock) whose
      config, state and logs live under the folder you give it (as root, the files that
      Dovecot's unprivileged processes open live in a private temp folder instead).
      It listens on 127.0.0.1 only, on a free port, and never touches ``/etc/dovecot``
      or the system service on 143/993.
    * ``LocalSMTP`` runs an ``aiosmtpd`` server in a thread on 127.0.0.1 that records every
      message it accepts, and can be told to reject (``reject_with``) or go away
      (``stop()``) so that delivery faults can be tested against a real socket.
    * ``free_port()`` picks an unused loopback TCP port; nothing here uses fixed ports.
      ``reserve_port()`` holds one (bound, not listening: connections are refused and no
      other program can take it) until ``serve_smtp()`` listens on it.

Why real servers: the service's IMAP edge depends on behaviour a mock would have to
guess (UIDVALIDITY changes, IDLE being absent, TLS verification, ``BODY.PEEK[]`` never
setting ``\\Seen``). Dovecot tells the truth about all of those.

Dovecot facts this module relies on (Dovecot 2.3.19, Debian 12):
    * As root Dovecot refuses to keep mail as uid 0, so the mail user gets the uid/gid of
      Debian's ``mail`` user and the internal/login users are ``dovecot``/``dovenull``.
      Those users cannot be relied on to reach ``base`` (pytest keeps its tmp folders
      0700), so their files live in a private temp folder instead: see ``_prepare``.
    * As a normal user everything runs under the caller's own uid and name.
    * ``doveadm mailbox update --uid-validity`` is how a restored mailbox is simulated.
"""

from __future__ import annotations

import atexit
import contextlib
import email
import email.policy
import functools
import grp
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from imapclient import IMAPClient

TLSMode = Literal["none", "starttls", "imaps"]

# Dovecot 2.3.19's post-login capability list minus IDLE. ``imap_capability`` replaces the
# whole list (2.3 has no "-IDLE" form), so the no-IDLE variant spells out everything else.
_CAPABILITIES_WITHOUT_IDLE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT SORT=DISPLAY "
    "THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE "
    "UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH "
    "ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY "
    "PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY"
)

# UNIX socket paths are limited to 108 bytes; Dovecot puts sockets like
# "<base_dir>/login/imap-urlauth" under base_dir, so keep base_dir well below that.
_MAX_BASE_DIR_LEN = 70

# How many mails one MULTIAPPEND command carries: bounds client memory for 100k-mail boxes.
_APPEND_BATCH = 500

_MAIL_UID = 8  # Debian's "mail" user; see the module docstring.

_running: set[LocalDovecot] = set()


class LocalDovecotError(RuntimeError):
    """The private Dovecot could not start, be reached or stop; the message has the log tail."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    The port is free when this returns, not necessarily a moment later: any program's
    next outgoing connection or ``bind(0)`` may take it. Callers that bind it themselves
    (``LocalDovecot``, ``LocalPostgres``) retry with a new port when it was taken; a
    caller that can hand a socket over should use ``reserve_port()`` instead.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def reserve_port(port: int = 0) -> socket.socket:
    """Bind a TCP socket on 127.0.0.1 (a free port when ``port`` is 0) without listening.

    Why: a port picked by ``free_port()`` and bound later can be taken in between (seen
    under load: EADDRINUSE at server start). A bound socket keeps the port: the kernel
    neither gives it to another ``bind`` nor to an outgoing connection, and since nothing
    listens, a client's connection is refused, which is how a relay that is down looks.
    ``serve_smtp()`` later listens on this very socket; close it to give the port up.

    A fresh port is bound without ``SO_REUSEADDR``, so no other program can bind it even
    with that option. Rebinding a given port falls back to ``SO_REUSEADDR`` only when the
    plain bind fails: our own server's closed connections (TIME_WAIT) hold it for a minute
    after ``stop()``. Such a socket still keeps the port from ``bind(0)``, from outgoing
    connections and from any bind without that option; only a program that binds this
    very port number with ``SO_REUSEADDR`` could share it. Raises ``OSError``
    (EADDRINUSE) when another program holds it.
    """
    for reuse in (False, True) if port else (False,):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            if reuse or not port:
                raise
            continue
        return sock
    raise AssertionError("unreachable")  # pragma: no cover


def serve_smtp(
    handler: Any, sock: socket.socket, *, smtp_class: type | None = None, **options: Any
) -> Any:
    """Start an aiosmtpd ``Controller`` that listens on ``sock`` (from ``reserve_port()``).

    The controller owns the socket from here on: its ``stop()`` closes it. ``smtp_class``
    replaces aiosmtpd's ``SMTP`` (tests that misbehave on purpose); ``options`` go to the
    Controller (``tls_context``, ``enable_SMTPUTF8=False``, ...). Returns the started
    controller; ``controller.port`` is the socket's port. When the start fails the
    socket is closed and the error raised.
    """
    port: int = sock.getsockname()[1]
    # Set before listening, so that accepted connections inherit it: their TIME_WAIT
    # after the server closes them must not keep a restart from binding the port again
    # (asyncio sets it on the sockets it binds itself; reserve_port leaves it off).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    options.setdefault("ready_timeout", 30.0)  # aiosmtpd's own 5 s is short under load
    controller = _socket_controller_class()(
        handler, sock=sock, smtp_class=smtp_class, hostname="127.0.0.1", port=port, **options
    )
    try:
        controller.start()
    except BaseException:
        with contextlib.suppress(Exception):
            controller.stop(no_assert=True)
        sock.close()
        raise
    return controller


@functools.cache
def _socket_controller_class() -> type:
    """aiosmtpd's threaded ``Controller``, made to listen on a socket bound beforehand.

    Built on first use: aiosmtpd is imported only where a local SMTP server is wanted
    (tests, ``service.py demo``), not by the modules that import ``free_port``.
    ``_create_server`` is the hook aiosmtpd's own subclasses (UNIX socket controller)
    override to say where to listen.
    """
    from aiosmtpd.controller import Controller

    class SocketController(Controller):  # type: ignore[misc]
        def __init__(
            self, handler: Any, *, sock: socket.socket, smtp_class: type | None, **kwargs: Any
        ) -> None:
            super().__init__(handler, **kwargs)
            self._sock = sock
            self._smtp_class = smtp_class

        def factory(self) -> Any:
            if self._smtp_class is None:
                return super().factory()
            return self._smtp_class(self.handler, **self.SMTP_kwargs)

        def _create_server(self) -> Any:
            return self.loop.create_server(
                self._factory_invoker, sock=self._sock, ssl=self.ssl_context
            )

    return SocketController


def dovecot_binary() -> str | None:
    """Path of the ``dovecot`` binary, or None when Dovecot is not installed.

    Debian puts it in /usr/sbin, which is not on a normal user's PATH.
    """
    found = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")
    return found


def _doveadm_binary() -> str:
    found = shutil.which("doveadm") or shutil.which("doveadm", path="/usr/bin:/usr/sbin")
    if found is None:
        raise LocalDovecotError(
            "doveadm not found: install Debian's dovecot-imapd (apt-get install dovecot-imapd)"
        )
    return found


class LocalDovecot:
    """A private Dovecot IMAP server on 127.0.0.1, living entirely under ``base``.

    Use as a context manager (``with LocalDovecot(tmp_path) as imap: ...``) or call
    ``start()`` / ``stop()``. After ``start()``: ``host``, ``port``, ``user``,
    ``password``, ``cafile`` (TLS variants only: the throwaway CA a client must trust)
    and ``maildir`` are set.

    ``tls``: "none" (plain IMAP, plaintext login allowed), "starttls" (plain port that
    requires STARTTLS before login) or "imaps" (implicit TLS port). ``idle=False`` starts
    a server whose CAPABILITY does not list IDLE, to test the polling fallback.
    """

    def __init__(
        self,
        base: Path,
        *,
        port: int | None = None,
        tls: TLSMode = "none",
        idle: bool = True,
        user: str = "intake",
        password: str | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        if tls not in ("none", "starttls", "imaps"):
            raise ValueError(f"tls must be 'none', 'starttls' or 'imaps', not {tls!r}")
        self.base = Path(base).resolve() / "dovecot"
        self.host = "127.0.0.1"
        self._fixed_port = port
        self.port: int = port or 0
        self.tls: TLSMode = tls
        self.idle = idle
        self.user = user
        self.password = password or secrets.token_urlsafe(12)
        self.start_timeout = start_timeout
        self.cafile: Path | None = None
        self.conf = self.base / "dovecot.conf"
        self.log_path = self.base / "dovecot.log"
        # Final locations are fixed by start(); see _prepare() for why they may move.
        self.base_dir = self.base / "run"
        self.home = self.base / "home" / user
        self.maildir = self.home / "Maildir"
        self._passwd = self.base / "passwd"
        self._proc: subprocess.Popen[bytes] | None = None
        self._private: Path | None = None
        self._prepared = False
        self._internal_group_line = ""
        # While stopped between start()s: the port, held for the restart (reserve_port).
        self._held: socket.socket | None = None

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> LocalDovecot:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    @property
    def running(self) -> bool:
        """True while the Dovecot master process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalDovecot:
        """Write the config (first time only), start Dovecot and wait until it accepts.

        Without an explicit port, a port that turns out to be taken is replaced by a new
        free one (up to three tries). Raises ``LocalDovecotError`` with the log tail when
        Dovecot exits or does not listen within ``start_timeout`` seconds.
        """
        if self.running:
            return self
        binary = dovecot_binary()
        if binary is None:
            raise LocalDovecotError(
                "dovecot binary not found: install Debian's dovecot-imapd "
                "(apt-get install dovecot-imapd, see .ci/run)"
            )
        if not self._prepared:
            self._prepare()
        tries = 1 if (self._fixed_port or self.port) else 3
        for attempt in range(tries):
            if not self.port:
                self.port = free_port()
            self._write_config()
            try:
                self._release_port()  # Dovecot binds it itself, a moment from now
                self._launch(binary)
                break
            except LocalDovecotError:
                in_use = "Address already in use" in self._log_tail()
                if attempt + 1 < tries and in_use and not self._fixed_port:
                    self.port = 0
                    continue
                raise
        _running.add(self)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Dovecot and wait for the master to exit; safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # SIGTERM to the whole group (master and children, started in their own
            # session): ~0.1 s, where SIGTERM to the master alone takes over a second.
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._proc = None
        _running.discard(self)
        # The children (imap, auth, login, ...) share the master's process group (it was
        # started in a new session). Wait for all of them, so restart() on the same port
        # and the removal of tmp folders do not race a lingering login process.
        _wait_for_group_exit(proc.pid, timeout)
        # restart() and start() after stop() use the same port: hold it meanwhile, so no
        # other program's connection or server takes it (connections are still refused).
        with contextlib.suppress(OSError):
            self._held = reserve_port(self.port)

    def _release_port(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def restart(self) -> None:
        """Stop and start again on the same port, keeping every mail and UID."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop for good and remove the private folder, if one was made (see ``_prepare``).

        As root that folder holds the maildir, so the mail is gone afterwards; as a normal
        user the mail normally stays under ``base``.
        """
        self.stop()
        self._release_port()
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None
            self._prepared = False

    # ----------------------------------------------------------------- clients

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this server's throwaway CA (TLS variants)."""
        if self.cafile is None:
            raise LocalDovecotError("this LocalDovecot was started with tls='none'; no CA exists")
        return ssl.create_default_context(cafile=str(self.cafile))

    def connect(self, *, login: bool = True, timeout: float = 10.0) -> IMAPClient:
        """An ``IMAPClient`` connected the way this server expects, logged in by default.

        TLS variants verify the certificate against ``cafile``. Caller closes it
        (``client.logout()``), or use it in a ``with`` block.
        """
        if self.tls == "imaps":
            client = IMAPClient(
                self.host,
                port=self.port,
                ssl=True,
                ssl_context=self.ssl_context(),
                timeout=timeout,
            )
        else:
            client = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
            if self.tls == "starttls":
                client.starttls(self.ssl_context())
        if login:
            if self.password.isascii():
                client.login(self.user, self.password)
            else:
                client.plain_login(self.user, self.password)  # LOGIN is ASCII only
        return client

    # ----------------------------------------------------------------- mail helpers

    def append(
        self, raw: bytes, folder: str = "INBOX", flags: Sequence[str | bytes] = ()
    ) -> int | None:
        """Append one mail; returns its UID (from UIDPLUS APPENDUID) when the server says."""
        with self.connect() as client:
            self._ensure_folder(client, folder)
            response = client.append(folder, raw, flags=tuple(flags))
        return _appenduid_last(response)

    def append_many(self, raws: Iterable[bytes], folder: str = "INBOX") -> int:
        """Append many mails fast: one connection, MULTIAPPEND in batches. Returns the count.

        Dovecot offers LITERAL+, so a batch goes out without a round trip per mail
        (thousands of mails a second here).
        """
        count = 0
        batch: list[bytes] = []
        with self.connect(timeout=120.0) as client:
            self._ensure_folder(client, folder)
            for raw in raws:
                batch.append(raw)
                if len(batch) >= _APPEND_BATCH:
                    client.multiappend(folder, batch)
                    count += len(batch)
                    batch = []
            if batch:
                client.multiappend(folder, batch)
                count += len(batch)
        return count

    def uids(self, folder: str = "INBOX") -> list[int]:
        """Every UID in ``folder``, ascending."""
        with self.connect() as client:
            client.select_folder(folder, readonly=True)
            return sorted(int(uid) for uid in client.search("ALL"))

    def uidvalidity(self, folder: str = "INBOX") -> int:
        """The folder's current UIDVALIDITY."""
        with self.connect() as client:
            status = client.folder_status(folder, [b"UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    def flags(self, uid: int, folder: str = "INBOX") -> tuple[bytes, ...]:
        """The flags of one mail, read without changing them (EXAMINE + FLAGS only).

        Lets tests prove that reading with ``BODY.PEEK[]`` never sets ``\\Seen``.
        """
        with self.connect() as client:
            client.select_folder(folder, readonly=True)
            data = client.fetch([uid], ["FLAGS"])
        if uid not in data:
            raise KeyError(f"no mail with UID {uid} in {folder}")
        return tuple(data[uid][b"FLAGS"])

    def set_uidvalidity(self, n: int, folder: str = "INBOX") -> None:
        """Give ``folder`` a new UIDVALIDITY, as a restore from backup would."""
        self.doveadm("mailbox", "update", "-u", self.user, "--uid-validity", str(n), folder)

    def recreate_mailbox(self, folder: str = "INBOX") -> int:
        """Delete and recreate ``folder`` with the same mails; returns the new UIDVALIDITY.

        This is what a client sees after the mailbox is restored or rebuilt: the same
        messages (bytes, flags, INTERNALDATE) under a new UIDVALIDITY, with UIDs starting
        again from 1. Other folders are DELETEd and CREATEd over IMAP. The INBOX cannot be
        deleted, so its mails are read, expunged, Dovecot's UID list and index for it are
        removed and the mails appended again. Call it while no other client has the folder
        selected (a real restore would disconnect them too).
        """
        old = self.uidvalidity(folder)
        with self.connect(timeout=120.0) as client:
            client.select_folder(folder, readonly=True)
            uids = sorted(client.search("ALL"))
            mails: list[tuple[bytes, tuple[bytes, ...], Any]] = []
            for chunk_start in range(0, len(uids), _APPEND_BATCH):
                chunk = uids[chunk_start : chunk_start + _APPEND_BATCH]
                fetched = client.fetch(chunk, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
                for uid in chunk:
                    item = fetched[uid]
                    flags = tuple(f for f in item[b"FLAGS"] if f != b"\\Recent")
                    mails.append((item[b"BODY[]"], flags, item[b"INTERNALDATE"]))
            client.unselect_folder() if client.has_capability("UNSELECT") else client.close_folder()
            if folder.upper() == "INBOX":
                client.select_folder(folder)
                if uids:
                    client.delete_messages(uids)
                    client.expunge()
                client.close_folder()
            else:
                client.delete_folder(folder)
                client.create_folder(folder)
        if folder.upper() == "INBOX":
            self._forget_inbox_uids()
        with self.connect(timeout=120.0) as client:
            for chunk_start in range(0, len(mails), _APPEND_BATCH):
                chunk = mails[chunk_start : chunk_start + _APPEND_BATCH]
                client.multiappend(
                    folder,
                    [{"msg": raw, "flags": flags, "date": date} for raw, flags, date in chunk],
                )
        new = self.uidvalidity(folder)
        if new == old:
            self.set_uidvalidity(_new_uidvalidity(old), folder)
            new = self.uidvalidity(folder)
        return new

    def _forget_inbox_uids(self) -> None:
        """Remove the (now empty) INBOX's UID list and index so UIDs restart from 1.

        With Maildir the INBOX lives in the Maildir root; Dovecot rebuilds the list with a
        fresh UIDVALIDITY on next access, exactly as after a restore without the list.
        """
        for name in (
            "dovecot-uidlist",
            "dovecot.index",
            "dovecot.index.log",
            "dovecot.index.log.2",
            "dovecot.index.cache",
        ):
            with contextlib.suppress(FileNotFoundError):
                (self.maildir / name).unlink()

    def doveadm(self, *args: str, timeout: float = 30.0) -> str:
        """Run ``doveadm -c <our conf> ARGS``; returns stdout, raises with stderr on failure."""
        cmd = [_doveadm_binary(), "-c", str(self.conf), *args]
        result = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise LocalDovecotError(
                f"{' '.join(cmd)} failed with exit code {result.returncode}:\n"
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout.decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of Dovecot's log, for error messages and debugging."""
        return self._log_tail(lines)

    # ----------------------------------------------------------------- internals

    def _ensure_folder(self, client: IMAPClient, folder: str) -> None:
        if folder.upper() != "INBOX" and not client.folder_exists(folder):
            client.create_folder(folder)

    def _prepare(self) -> None:
        """Create folders, passwd-files and (TLS variants) the throwaway CA and certificate.

        As root, everything Dovecot's unprivileged processes open (sockets, passwd-files,
        the maildir) goes into a private folder made with ``tempfile.mkdtemp`` (0711, in the
        system temp folder), not under ``base``: pytest resets ``/tmp/pytest-of-root`` to
        0700 at the start of every session, so a second pytest run would cut the ``mail``
        and ``dovecot`` users off from a running server. The same folder is used as a
        normal user when ``base`` is too deep for UNIX socket paths.
        """
        as_root = os.geteuid() == 0
        (self.base / "state").mkdir(parents=True, exist_ok=True)
        if as_root or len(str(self.base / "run")) > _MAX_BASE_DIR_LEN:
            self._private = Path(tempfile.mkdtemp(prefix="localdovecot-"))
            self._private.chmod(0o711)
            _check_traversable(self._private)
        private = self._private or self.base
        self.base_dir = private / "run"
        self.home = private / "home" / self.user
        self.maildir = self.home / "Maildir"
        self._passwd = private / "passwd"
        self.home.mkdir(parents=True, exist_ok=True)

        if as_root:
            uid = gid = _MAIL_UID
            internal_user, login_user = "dovecot", "dovenull"
            os.chown(self.home, uid, gid)
            self.home.chmod(0o700)
        else:
            uid, gid = os.getuid(), os.getgid()
            internal_user = login_user = pwd.getpwuid(uid).pw_name
            # Some unix_listeners are chowned to the internal group; only our own works.
            self._internal_group_line = f"default_internal_group = {grp.getgrgid(gid).gr_name}\n"
        self._internal_user = internal_user
        self._login_user = login_user

        entry = f"{self.user}:{{PLAIN}}{self.password}:{uid}:{gid}::{self.home}::\n"
        self._passwd.write_text(entry)
        # Login is checked against passwd-%{secured}: Dovecot expands that to "TLS" on a
        # TLS connection, "secured" for a loopback client without TLS and "" otherwise.
        # Dovecot counts loopback as secure, so ``ssl = required`` alone would let a
        # client that skipped STARTTLS log in on 127.0.0.1; only passwd-TLS holds the user.
        tls_only = self.tls != "none"
        for suffix in ("TLS", "secured", ""):
            gate = private / f"passwd-{suffix}"
            gate.write_text(entry if suffix == "TLS" or not tls_only else "")
        for path in private.glob("passwd*"):
            path.chmod(0o644)  # the auth process runs as the internal user

        if self.tls != "none":
            self._make_certificates()
        self._prepared = True

    def _make_certificates(self) -> None:
        try:
            import trustme
        except ImportError as exc:  # pragma: no cover - trustme is a test dependency
            raise LocalDovecotError(
                "TLS variants need the 'trustme' package (pip install trustme)"
            ) from exc
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.cafile = self.base / "ca.pem"
        ca.cert_pem.write_to_path(str(self.cafile))
        self._cert_file = self.base / "server-cert.pem"
        self._key_file = self.base / "server-key.pem"
        # The chain (leaf first) so clients can verify against the CA alone.
        self._cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(self._key_file))
        self._key_file.chmod(0o600)

    def _write_config(self) -> None:
        imap_port = self.port if self.tls in ("none", "starttls") else 0
        imaps_port = self.port if self.tls == "imaps" else 0
        if self.tls == "none":
            ssl_lines = "ssl = no\ndisable_plaintext_auth = no\n"
        else:
            # "required": a client that skips STARTTLS cannot log in, so a silent
            # plaintext fallback in the client shows up as a failure, not a pass.
            ssl_lines = (
                f"ssl = required\nssl_cert = <{self._cert_file}\nssl_key = <{self._key_file}\n"
            )
        capability = "" if self.idle else f"imap_capability = {_CAPABILITIES_WITHOUT_IDLE}\n"
        passwd = self._passwd
        passdb_file = self._passwd.parent / "passwd-%{secured}"
        chroot_lines = ""
        if os.geteuid() != 0:
            # A normal user cannot chroot; Dovecot needs these cleared to start at all.
            chroot_lines = (
                "service imap-login {\n  chroot =\n}\n"
                "service imap-urlauth-login {\n  chroot =\n}\n"
                "service pop3-login {\n  chroot =\n}\n"
                "service submission-login {\n  chroot =\n}\n"
                "service managesieve-login {\n  chroot =\n}\n"
            )
        text = f"""# Written by intake.localservers.LocalDovecot; a throwaway test server.
base_dir = {self.base_dir}
state_dir = {self.base / "state"}
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols = imap
listen = 127.0.0.1
auth_mechanisms = plain login
auth_verbose = yes
# Tests of wrong passwords should not sleep; production keeps the default 2 s.
auth_failure_delay = 0
{ssl_lines}{capability}first_valid_uid = 1
default_internal_user = {self._internal_user}
default_login_user = {self._login_user}
{self._internal_group_line}default_vsz_limit = 1G
mail_max_userip_connections = 100
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passdb_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
# No auth penalty: a failed login would otherwise delay the next ones from 127.0.0.1
# by seconds (auth cannot reach a mode-0 socket, so Dovecot turns the penalty off).
service anvil {{
  {"chroot =" if os.geteuid() != 0 else ""}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{chroot_lines}"""
        self.conf.write_text(text)

    def _launch(self, binary: str) -> None:
        stderr_path = self.base / "dovecot.stderr"
        with stderr_path.open("wb") as stderr:
            # -F: stay in the foreground so we own the process and can wait for it.
            self._proc = subprocess.Popen(
                [binary, "-F", "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise LocalDovecotError(
                    f"dovecot -c {self.conf} exited at start-up; see {self.log_path}.\n"
                    + self._log_tail()
                )
            if self._greets():
                return
            time.sleep(0.05)
        self.stop()
        raise LocalDovecotError(
            f"dovecot did not listen on {self.host}:{self.port} within {self.start_timeout:g} s "
            f"(raise start_timeout on a slow machine); see {self.log_path}.\n" + self._log_tail()
        )

    def _greets(self) -> bool:
        """True when the port answers with Dovecot's ``* OK`` greeting (TLS for imaps).

        An open port alone is not proof: another program may hold it while our Dovecot
        is failing to bind.
        """
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as raw:
                raw.settimeout(1.0)
                if self.tls == "imaps":
                    with self.ssl_context().wrap_socket(raw, server_hostname=self.host) as tls:
                        return tls.recv(200).startswith(b"* OK")
                return raw.recv(200).startswith(b"* OK")
        except (OSError, ssl.SSLError):
            return False

    def _log_tail(self, lines: int = 30) -> str:
        parts: list[str] = []
        for path in (self.base / "dovecot.stderr", self.log_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").strip()
                if text:
                    tail = "\n".join(text.splitlines()[-lines:])
                    parts.append(f"--- {path.name} (last {lines} lines) ---\n{tail}")
        return "\n".join(parts) or "(no log output)"


def _wait_for_group_exit(pgid: int, timeout: float) -> None:
    """Wait until no live process of group ``pgid`` is left; SIGKILL stragglers at timeout.

    Zombies do not count: once the master is gone its dead children are reparented to
    pid 1, which in a container may take seconds to reap them.
    """
    deadline = time.monotonic() + timeout
    while _live_group_members(pgid):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            return
        time.sleep(0.05)


def _live_group_members(pgid: int) -> bool:
    """True while a non-zombie process in group ``pgid`` exists (Linux /proc; else killpg)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces, so split after ")".
        fields = stat_line.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _check_traversable(path: Path) -> None:
    """Fail clearly when Dovecot's unprivileged users could not reach ``path``."""
    for part in path.parents:
        if not part.stat().st_mode & stat.S_IXOTH:
            raise LocalDovecotError(
                f"{part} is not searchable by other users (o+x), so Dovecot's mail and "
                f"auth users cannot reach {path}; point TMPDIR at a folder such as /tmp"
            )


def _appenduid_last(response: bytes | Any) -> int | None:
    """The UID in an ``[APPENDUID <validity> <uid>]`` response code, if present (RFC 4315)."""
    text = response.decode(errors="replace") if isinstance(response, bytes) else str(response)
    marker = "[APPENDUID "
    if marker not in text:
        return None
    try:
        inner = text.split(marker, 1)[1].split("]", 1)[0]
        uid_part = inner.split()[1]
        return int(uid_part.split(":")[-1].split(",")[-1])
    except (IndexError, ValueError):
        return None


def _new_uidvalidity(old: int) -> int:
    """A UIDVALIDITY different from ``old`` and in range (RFC 3501: a non-zero 32-bit number)."""
    candidate = int(time.time()) & 0xFFFFFFFF
    if candidate in (0, old):
        candidate = (old + 1) & 0xFFFFFFFF or 1
    return candidate


@atexit.register
def _stop_all() -> None:
    """Do not leave Dovecot masters behind when the interpreter exits without stop()."""
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop(timeout=5.0)


# ====================================================================== SMTP


@dataclass(frozen=True)
class ReceivedMail:
    """One message the local SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: EmailMessage = field(repr=False)


class LocalSMTP:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it accepts.

    ``messages`` (a copy) and ``wait_for(count, timeout)`` give the recorded mails.
    Fault switches: set ``reject_with = "451 try later"`` (or a 5xx) and every message
    is refused with that reply until it is set back to None; ``stop()`` makes the port
    refuse connections and ``start()`` brings the server back on the same port.
    Without an explicit ``port`` the port is reserved at construction (``reserve_port``)
    and held while stopped, so ``port`` can be configured before ``start()`` and no other
    program can take it in between; only the moment inside ``stop()`` between closing the
    listener and binding again is open.
    ``starttls=True`` offers STARTTLS with a throwaway ``trustme`` certificate
    (``cafile`` / ``ssl_context()`` for clients); ``require_starttls=True`` refuses mail
    before STARTTLS.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        starttls: bool = False,
        require_starttls: bool = False,
        cafile_dir: Path | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        # Held (bound, not listening) whenever the server is not running; see reserve_port.
        self._reserved: socket.socket | None = None
        if port:
            self.port = port
        else:
            self._reserved = reserve_port()
            self.port = self._reserved.getsockname()[1]
        self.reject_with: str | None = None
        self.starttls = starttls or require_starttls
        self.require_starttls = require_starttls
        self.cafile: Path | None = None
        self._cafile_dir = cafile_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server_ctx: ssl.SSLContext | None = None
        self._lock = threading.Condition()
        self._messages: list[ReceivedMail] = []
        self._controller: Any = None

    def __enter__(self) -> LocalSMTP:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop for good and remove the temporary CA folder (if one was made)."""
        self.stop()
        self._release()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def running(self) -> bool:
        """True while the server accepts connections."""
        return self._controller is not None

    def start(self) -> LocalSMTP:
        """Start (or restart, on the same port) the server thread; returns self.

        Raises ``OSError`` (EADDRINUSE) only when an explicit ``port`` is taken, or the
        port was lost in the moment ``stop()`` left open.
        """
        if self._controller is not None:
            return self
        kwargs: dict[str, Any] = {}
        if self.starttls:
            kwargs["tls_context"] = self._tls_context()
            kwargs["require_starttls"] = self.require_starttls
        sock, self._reserved = self._reserved or reserve_port(self.port), None
        self._controller = serve_smtp(_RecordingHandler(self), sock, **kwargs)
        return self

    def stop(self) -> None:
        """Stop the server; connections to the port are refused until ``start()``.

        The port stays reserved for this server (see ``reserve_port``); when it cannot be
        bound again right away, ``start()`` tries once more.
        """
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
            with contextlib.suppress(OSError):
                self._reserved = reserve_port(self.port)

    def _release(self) -> None:
        """Give the reserved port up (``close()``)."""
        reserved, self._reserved = self._reserved, None
        if reserved is not None:
            reserved.close()

    @property
    def messages(self) -> list[ReceivedMail]:
        """A copy of every recorded mail, in arrival order."""
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        """Forget every recorded mail."""
        with self._lock:
            self._messages.clear()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[ReceivedMail]:
        """Wait until at least ``count`` mails are recorded; returns them all.

        Raises ``TimeoutError`` naming how many arrived, so a failing test says why. The
        default is generous (was 5 s): it bounds a wait for mail that is on its way, which
        a slow, loaded machine can take seconds to send, and costs a passing caller
        nothing; pass a short ``timeout`` to assert that no more arrives.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"LocalSMTP on port {self.port} received {len(self._messages)} "
                        f"of {count} expected mails within {timeout:g} s"
                    )
                self._lock.wait(remaining)
            return list(self._messages)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this server's throwaway CA."""
        if self.cafile is None:
            raise RuntimeError("LocalSMTP was started without starttls=True; no CA exists")
        return ssl.create_default_context(cafile=str(self.cafile))

    def _record(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._messages.append(mail)
            self._lock.notify_all()

    def _tls_context(self) -> ssl.SSLContext:
        if self._server_ctx is not None:
            return self._server_ctx
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        folder = self._cafile_dir
        if folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="localsmtp-")
            folder = Path(self._tmp.name)
        self.cafile = folder / f"smtp-ca-{self.port}.pem"
        ca.cert_pem.write_to_path(str(self.cafile))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        self._server_ctx = ctx
        return ctx


class _RecordingHandler:
    """aiosmtpd handler: implements only DATA, the one hook the tests need."""

    def __init__(self, owner: LocalSMTP) -> None:
        self.owner = owner

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.owner.reject_with
        if reply is not None:
            return reply
        data: bytes = envelope.original_content or envelope.content or b""
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.owner._record(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                data=data,
                message=message,
            )
        )
        return "250 OK"
