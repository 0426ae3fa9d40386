"""``Mailbox.wait`` against a scripted IMAP server on loopback: servers that behave in
ways Dovecot does not (review rv8b N2, N3; the scripted server is the reviewer's).

The real-server behaviour of ``wait`` (news during a command, news announced with
``+ idling``, a worker in IDLE) is tested against Dovecot in tests/test_worker.py.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time

import pytest
from imapclient import IMAPClient

from intake import fetch
from intake.fetch import Mailbox


class ScriptedIMAP(threading.Thread):
    """Answers LOGIN/EXAMINE/NOOP/IDLE/DONE for one client. ``on_idle``:
    ``"unchanged-exists"`` sends ``+ idling`` and the unchanged ``* 3 EXISTS`` in one
    write (a server that reports the count at every IDLE start); ``"close"`` sends
    ``+ idling`` and then closes the connection without BYE (a proxy or a NAT reset)."""

    def __init__(self, on_idle: str, tls: object = None, flags: int = 0):
        super().__init__(daemon=True)
        self.on_idle = on_idle
        self.tls = tls  # a trustme CA's server context, or None for plain text
        self.flags = flags
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(30)
        self.port = self.sock.getsockname()[1]
        self.idles = 0

    def run(self) -> None:
        conn, _ = self.sock.accept()
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True)  # type: ignore[attr-defined]
        with conn, self.sock:
            reader = conn.makefile("rb")
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n")
            tag = b"*"
            while True:
                line = reader.readline()
                if not line:
                    return
                parts = line.split()
                if parts and parts[0].upper() == b"DONE":
                    conn.sendall(tag + b" OK Idle completed.\r\n")
                    continue
                tag, command = parts[0], parts[1].upper()
                if command == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1 IDLE\r\n" + tag + b" OK done\r\n")
                elif command == b"LOGIN":
                    conn.sendall(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n")
                elif command in (b"EXAMINE", b"SELECT"):
                    conn.sendall(
                        b"* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] ok\r\n"
                        b"* OK [UIDNEXT 4] ok\r\n" + tag + b" OK [READ-ONLY] done\r\n"
                    )
                elif command == b"IDLE":
                    self.idles += 1
                    if self.on_idle == "unchanged-exists":
                        conn.sendall(b"+ idling\r\n* 3 EXISTS\r\n")
                    elif self.on_idle == "burst":
                        flags = b"* 2 FETCH (FLAGS (\\Seen))\r\n" * self.flags
                        conn.sendall(b"+ idling\r\n" + flags + b"* 4 EXISTS\r\n")
                    else:
                        conn.sendall(b"+ idling\r\n")
                        time.sleep(0.2)
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                elif command == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    conn.sendall(tag + b" OK done\r\n")


def _mailbox(port: int, tls: object = None) -> Mailbox:
    """A ``Mailbox`` on the scripted server (its settings are not needed for ``wait``),
    logged in as ``Mailbox.open`` does (``_widen_reader`` after LOGIN)."""
    mailbox = Mailbox.__new__(Mailbox)
    Mailbox.__init__(mailbox, settings=None)  # type: ignore[arg-type]
    if tls is None:
        client = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30)
    else:
        client = IMAPClient("127.0.0.1", port=port, ssl=True, ssl_context=tls, timeout=30)
    client.login("u", "p")
    fetch._widen_reader(client)
    client.select_folder("INBOX", readonly=True)
    mailbox.client = client
    mailbox._exists = 3
    mailbox._news_reported()
    return mailbox


def _close(mailbox: Mailbox) -> None:
    with contextlib.suppress(Exception):
        assert mailbox.client is not None
        mailbox.client.shutdown()


def test_an_unchanged_count_sent_with_every_idle_answer_does_not_make_the_worker_spin() -> None:
    """Ending the IDLE on any buffered byte made such a server loop the worker through
    NOOP, IDLE and DONE without pause (30,721 IDLEs in 3 s, review rv8b N2)."""
    server = ScriptedIMAP("unchanged-exists")
    server.start()
    mailbox = _mailbox(server.port)
    started = time.monotonic()
    results = []
    try:
        while time.monotonic() - started < 3:  # the worker's loop: wait, (poll), wait, ...
            results.append(mailbox.wait(2.0))
    finally:
        _close(mailbox)
    assert not any(results)  # no news
    assert len(results) <= 2 and server.idles <= 4, (len(results), server.idles)


def test_a_connection_closed_during_idle_is_noticed_at_once_without_spinning() -> None:
    """``idle_check`` returns nothing at once on a closed connection; the wait spun a core
    until its deadline (30 s by default) before anyone noticed (review rv8b N3)."""
    server = ScriptedIMAP("close")
    server.start()
    mailbox = _mailbox(server.port)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    try:
        with pytest.raises((OSError, Exception)):
            mailbox.wait(30.0)
    finally:
        _close(mailbox)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # Noticed well before the 30-s deadline the spinning wait ran to (15 s: the server's
    # 0.2 s and a slow, loaded machine's margin), and without burning a core meanwhile
    # (spinning for 15 s costs several CPU seconds even on a busy machine; this process's
    # other threads, such as the scripted server, count too).
    assert time.monotonic() - started < 15.0
    assert cpu < 2.0, cpu


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("flags", [10, 350], ids=["small", "over-8k"])
def test_a_new_count_at_the_end_of_a_long_idle_answer_is_seen_at_once(
    tls: bool, flags: int
) -> None:
    """``+ idling``, hundreds of flag changes (staff's mail client) and the EXISTS of a
    new mail, in one write: over TLS one record over 8 KB, of which imaplib's 8 KB buffer
    took only part; the rest stayed decrypted inside TLS, unseen by a socket poll, and
    the mail waited for the whole IDLE (review rv8d, its scripted server)."""
    import ssl

    trustme = pytest.importorskip("trustme")
    server_context = client_context = None
    if tls:
        ca = trustme.CA()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_context)
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
    server = ScriptedIMAP("burst", tls=server_context, flags=flags)
    server.start()
    mailbox = _mailbox(server.port, client_context)
    try:
        started = time.monotonic()
        news = mailbox.wait(30.0)
        waited = time.monotonic() - started
    finally:
        _close(mailbox)
    assert news
    # not the 30-s IDLE the unseen EXISTS waited for (15 s: a slow, loaded machine's margin)
    assert waited < 15.0, waited
