"""The test servers themselves: prove that the fixtures behave like the real thing.

Every later integration test trusts these fixtures, so each property they promise
(no \\Seen on peek, IDLE present or absent, TLS verified against the throwaway CA,
UIDVALIDITY changes, mail surviving a restart, SMTP faults) is checked here against
the real Dovecot and aiosmtpd. All mails are synthetic.
"""

from __future__ import annotations

import asyncio
import email.policy
import errno
import socket
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from conftest import require_dovecot
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from intake import localservers
from intake.localservers import LocalDovecot, LocalDovecotError, LocalSMTP

pytestmark = pytest.mark.timeout(60)


def synthetic_mail(n: int = 1, subject: str = "相談です") -> bytes:
    """A small synthetic Japanese consultation mail (no real person), as raw bytes."""
    msg = EmailMessage()
    msg["From"] = f"resident{n}@example.jp"
    msg["To"] = "soudan@city.example.jp"
    msg["Subject"] = f"{subject} {n}"
    msg["Message-ID"] = f"<test-{n}@example.jp>"
    msg.set_content(f"テスト用の架空の相談です。番号 {n}。\n", charset="iso-2022-jp")
    return msg.as_bytes(policy=email.policy.SMTP)  # CRLF, as mail is stored on the server


# ----------------------------------------------------------------------- Dovecot


@pytest.mark.integration
def test_peek_fetch_leaves_mail_unseen(dovecot: LocalDovecot) -> None:
    uid = dovecot.append(synthetic_mail())
    assert uid == 1
    with dovecot.connect() as client:
        client.select_folder("INBOX")  # read-write, as the service selects it
        fetched = client.fetch([uid], ["BODY.PEEK[]"])
    assert fetched[uid][b"BODY[]"] == synthetic_mail()
    assert b"\\Seen" not in dovecot.flags(uid)


@pytest.mark.integration
def test_flags_helper_does_see_seen_after_a_non_peek_fetch(dovecot: LocalDovecot) -> None:
    # Control for the test above: a plain BODY[] fetch sets \Seen, and flags() notices.
    uid = dovecot.append(synthetic_mail())
    assert uid is not None
    with dovecot.connect() as client:
        client.select_folder("INBOX")
        client.fetch([uid], ["BODY[]"])
    assert b"\\Seen" in dovecot.flags(uid)


@pytest.mark.integration
def test_append_keeps_given_flags(dovecot: LocalDovecot) -> None:
    uid = dovecot.append(synthetic_mail(), flags=[b"\\Flagged"])
    assert uid is not None
    assert b"\\Flagged" in dovecot.flags(uid)


@pytest.mark.integration
def test_default_server_offers_idle(dovecot: LocalDovecot) -> None:
    with dovecot.connect() as client:
        assert client.has_capability("IDLE")


@pytest.mark.integration
def test_idle_false_server_hides_only_idle(
    dovecot: LocalDovecot, dovecot_factory: Callable[..., LocalDovecot]
) -> None:
    no_idle = dovecot_factory(idle=False)
    with dovecot.connect() as client:
        default_caps = set(client.capabilities())
    with no_idle.connect() as client:
        no_idle_caps = set(client.capabilities())
    assert b"IDLE" not in no_idle_caps
    assert no_idle_caps == default_caps - {b"IDLE"}


@pytest.mark.integration
def test_imaps_verifies_against_the_throwaway_ca(
    dovecot_factory: Callable[..., LocalDovecot],
) -> None:
    server = dovecot_factory(tls="imaps")
    assert server.cafile is not None and server.cafile.is_file()
    context = ssl.create_default_context(cafile=str(server.cafile))
    with IMAPClient(server.host, port=server.port, ssl=True, ssl_context=context, timeout=10) as c:
        c.login(server.user, server.password)
        assert c.select_folder("INBOX")[b"EXISTS"] == 0


@pytest.mark.integration
def test_imaps_is_refused_without_the_throwaway_ca(
    dovecot_factory: Callable[..., LocalDovecot],
) -> None:
    server = dovecot_factory(tls="imaps")
    system_only = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(server.host, port=server.port, ssl=True, ssl_context=system_only, timeout=10)


@pytest.mark.integration
def test_starttls_server_refuses_login_before_starttls(
    dovecot_factory: Callable[..., LocalDovecot],
) -> None:
    server = dovecot_factory(tls="starttls")
    with (
        IMAPClient(server.host, port=server.port, ssl=False, timeout=10) as client,
        pytest.raises(IMAPClientError),
    ):
        client.login(server.user, server.password)
    with server.connect() as client:  # STARTTLS verified against the CA, then login
        assert client.select_folder("INBOX")[b"EXISTS"] == 0


@pytest.mark.integration
def test_set_uidvalidity_changes_what_select_reports(dovecot: LocalDovecot) -> None:
    dovecot.append(synthetic_mail())
    before = dovecot.uidvalidity()
    new = before + 1000
    dovecot.set_uidvalidity(new)
    with dovecot.connect() as client:
        assert client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"] == new
    assert dovecot.uidvalidity() == new


@pytest.mark.integration
def test_restart_keeps_mail_uids_and_port(dovecot: LocalDovecot) -> None:
    dovecot.append_many([synthetic_mail(n) for n in range(3)])
    port, uids, validity = dovecot.port, dovecot.uids(), dovecot.uidvalidity()
    dovecot.restart()
    assert dovecot.port == port
    assert dovecot.uids() == uids == [1, 2, 3]
    assert dovecot.uidvalidity() == validity


@pytest.mark.integration
def test_stopped_dovecot_refuses_connections(dovecot: LocalDovecot) -> None:
    dovecot.stop()
    with pytest.raises(OSError):
        socket.create_connection((dovecot.host, dovecot.port), timeout=2).close()


@pytest.mark.integration
def test_no_other_program_can_take_a_stopped_dovecots_port_before_it_starts_again(
    dovecot: LocalDovecot,
) -> None:
    """start() after stop() must use the same port (the service under test is configured
    with it). It used to be free meanwhile: a busy machine could hand it to another
    program's connection or server, and the start failed with EADDRINUSE. (No IMAP
    session before the stop: Dovecot's side of one would linger in TIME_WAIT on the port
    and keep the old code's port taken too.)"""
    port = dovecot.port
    dovecot.stop()
    with pytest.raises(OSError) as info:
        take_port(port, reuse=False).close()
    assert info.value.errno == errno.EADDRINUSE
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((dovecot.host, port), timeout=10).close()
    dovecot.start()
    assert dovecot.port == port
    dovecot.append(synthetic_mail())
    assert dovecot.uids() == [1]
    dovecot.cleanup()
    take_port(port).close()  # given up for good


@pytest.mark.integration
@pytest.mark.parametrize("folder", ["INBOX", "Consultations"])
def test_recreate_mailbox_keeps_mails_under_new_uidvalidity(
    dovecot: LocalDovecot, folder: str
) -> None:
    raws = [synthetic_mail(n) for n in range(4)]
    dovecot.append_many(raws, folder=folder)
    dovecot.append(synthetic_mail(99), folder=folder, flags=[b"\\Seen"])
    old_validity = dovecot.uidvalidity(folder)

    new_validity = dovecot.recreate_mailbox(folder)

    assert new_validity != old_validity
    assert dovecot.uidvalidity(folder) == new_validity
    # UIDs start again from 1, as after a restore: a client that ignores UIDVALIDITY
    # and keeps its old "last UID = 5" cursor would miss every mail.
    assert dovecot.uids(folder) == [1, 2, 3, 4, 5]
    with dovecot.connect() as client:
        client.select_folder(folder, readonly=True)
        bodies = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])
    assert [bodies[uid][b"BODY[]"] for uid in sorted(bodies)] == [*raws, synthetic_mail(99)]
    assert b"\\Seen" in dovecot.flags(5, folder)
    assert b"\\Seen" not in dovecot.flags(1, folder)


@pytest.mark.integration
def test_append_many_stores_a_thousand_mails_in_order(dovecot: LocalDovecot) -> None:
    raws = [synthetic_mail(n) for n in range(1000)]
    assert dovecot.append_many(raws) == 1000
    assert dovecot.uids() == list(range(1, 1001))
    with dovecot.connect() as client:
        client.select_folder("INBOX", readonly=True)
        last = client.fetch([1000], ["BODY.PEEK[]"])[1000][b"BODY[]"]
    assert last == raws[-1]


@pytest.mark.integration
def test_start_on_a_taken_port_fails_with_the_log_tail(
    tmp_path: Path,
) -> None:
    require_dovecot()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = LocalDovecot(tmp_path, port=port, start_timeout=5)
        try:
            with pytest.raises(LocalDovecotError, match="Address already in use"):
                server.start()
        finally:
            server.cleanup()
    assert not server.running


def test_missing_dovecot_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localservers, "dovecot_binary", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI"):
        require_dovecot()


def test_missing_dovecot_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localservers, "dovecot_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="dovecot-imapd"):
        require_dovecot()


# ----------------------------------------------------------------------- SMTP


def outgoing(subject: str = "受付しました", to: str = "resident@example.jp") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "soudan@city.example.jp"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("架空の受付確認です。\n")
    return msg


def send(server: LocalSMTP, msg: EmailMessage, **kwargs: Any) -> None:
    """Send one mail with aiosmtplib and return only once its socket is really closed.

    With STARTTLS the TLS shutdown can outlive ``quit()``; if ``asyncio.run`` closes the
    loop first, the socket is garbage-collected later and its ResourceWarning fails a
    random later test (``filterwarnings = error``). Waiting for ``fileno() == -1``
    avoids that (the same race as python/cpython#90476).
    """

    async def run() -> None:
        client = aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=10, **kwargs)
        await client.connect()  # on failure aiosmtplib closes the connection itself
        assert client.transport is not None
        sock = client.transport.get_extra_info("socket")
        try:
            await client.send_message(msg)
        finally:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()
            for _ in range(500):
                if sock is None or sock.fileno() == -1:
                    break
                await asyncio.sleep(0.01)

    asyncio.run(run())


@pytest.mark.integration
def test_smtp_records_a_mail_sent_with_aiosmtplib(smtp_server: LocalSMTP) -> None:
    send(smtp_server, outgoing(to="a@example.jp, b@example.jp"))
    [mail] = smtp_server.wait_for(1, timeout=5)
    assert mail.mail_from == "soudan@city.example.jp"
    assert mail.rcpt_tos == ["a@example.jp", "b@example.jp"]
    assert mail.message["Subject"] == "受付しました"
    assert "架空の受付確認です" in mail.message.get_content()
    assert b"Subject:" in mail.data


@pytest.mark.integration
@pytest.mark.parametrize(("reply", "code"), [("451 try later", 451), ("550 no such user", 550)])
def test_smtp_rejects_while_reject_with_is_set(
    smtp_server: LocalSMTP, reply: str, code: int
) -> None:
    smtp_server.reject_with = reply
    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        send(smtp_server, outgoing())
    assert info.value.code == code
    assert smtp_server.messages == []

    smtp_server.reject_with = None
    send(smtp_server, outgoing())
    assert len(smtp_server.wait_for(1, timeout=5)) == 1


@pytest.mark.integration
def test_smtp_is_unreachable_while_stopped_and_back_on_the_same_port(
    smtp_server: LocalSMTP,
) -> None:
    port = smtp_server.port
    smtp_server.stop()
    with pytest.raises(aiosmtplib.SMTPConnectError):
        send(smtp_server, outgoing())
    smtp_server.start()
    assert smtp_server.port == port
    send(smtp_server, outgoing())
    assert len(smtp_server.wait_for(1, timeout=5)) == 1


def take_port(port: int, *, reuse: bool = True) -> socket.socket:
    """Bind and listen on ``port`` as another program's server would (asyncio sets
    ``SO_REUSEADDR``; ``reuse=False`` binds as an outgoing connection does, without
    it); the caller closes the socket."""
    intruder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if reuse:
            intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        intruder.bind(("127.0.0.1", port))
        intruder.listen()
    except OSError:
        intruder.close()
        raise
    return intruder


@pytest.mark.integration
def test_no_other_program_can_take_the_smtp_port_between_creation_and_start() -> None:
    """The port is known (and written into configs) before ``start()``. It used to be
    merely free at construction: a busy machine could hand it to someone else first,
    and ``start()`` then failed with EADDRINUSE."""
    server = LocalSMTP()
    try:
        with pytest.raises(OSError) as info:
            take_port(server.port).close()
        assert info.value.errno == errno.EADDRINUSE
        with pytest.raises(ConnectionRefusedError):  # reserved, yet down
            socket.create_connection((server.host, server.port), timeout=10).close()
        server.start()
        send(server, outgoing())
        assert len(server.wait_for(1, timeout=30)) == 1
    finally:
        server.close()


@pytest.mark.integration
def test_no_other_program_can_take_the_smtp_port_while_it_is_stopped(
    smtp_server: LocalSMTP,
) -> None:
    """Without a mail before the stop, no connection of the server's own lingers in
    TIME_WAIT on the port: the old code left it free for anyone."""
    smtp_server.stop()
    with pytest.raises(OSError) as info:
        take_port(smtp_server.port, reuse=False).close()
    assert info.value.errno == errno.EADDRINUSE
    smtp_server.start()
    send(smtp_server, outgoing())
    assert len(smtp_server.wait_for(1, timeout=30)) == 1


@pytest.mark.integration
@pytest.mark.parametrize("starttls", [False, True], ids=["plain", "starttls"])
def test_smtp_starts_again_on_its_port_after_mail_went_through_it(
    smtp_factory: Callable[..., LocalSMTP], starttls: bool
) -> None:
    """The server closes a connection after QUIT, so its side waits in TIME_WAIT for a
    minute; start() after stop() must still bind the port (it failed with EADDRINUSE
    when the reserved socket was listened on without SO_REUSEADDR)."""
    server = smtp_factory(starttls=starttls)
    tls: dict[str, Any] = (
        {"start_tls": True, "tls_context": server.ssl_context()} if starttls else {}
    )
    for round_ in range(1, 4):
        send(server, outgoing(), **tls)
        assert len(server.wait_for(round_, timeout=30)) == round_
        server.stop()
        server.start()


@pytest.mark.integration
def test_a_closed_smtp_server_gives_its_port_up() -> None:
    server = LocalSMTP()
    server.close()
    take_port(server.port).close()


@pytest.mark.integration
def test_smtp_wait_for_says_how_many_arrived(smtp_server: LocalSMTP) -> None:
    send(smtp_server, outgoing())
    with pytest.raises(TimeoutError, match="received 1 of 2"):
        smtp_server.wait_for(2, timeout=0.3)
    smtp_server.clear()
    assert smtp_server.messages == []


@pytest.mark.integration
def test_smtp_starttls_verifies_against_the_throwaway_ca(
    smtp_factory: Callable[..., LocalSMTP],
) -> None:
    server = smtp_factory(starttls=True, require_starttls=True)
    send(server, outgoing(), start_tls=True, tls_context=server.ssl_context())
    assert len(server.wait_for(1, timeout=5)) == 1
    with pytest.raises((aiosmtplib.SMTPException, ssl.SSLCertVerificationError)):
        send(server, outgoing(), start_tls=True, tls_context=ssl.create_default_context())
    with pytest.raises(aiosmtplib.SMTPException):
        send(server, outgoing(), start_tls=False)
    assert len(server.messages) == 1
