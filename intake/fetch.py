"""Fetch: the IMAP edge. Reads the consultation mailbox; never changes it.

Why it is written this way (RFC 3501 and IMAPClient's own advice):
- UIDs, never sequence numbers, and a cursor of (UIDVALIDITY, highest processed UID):
  a poll costs one ``UID SEARCH UID n:*`` whatever the mailbox size.
- The folder is opened with EXAMINE (read-only) and bodies are fetched with
  ``BODY.PEEK[]``: reading never sets ``\\Seen``, so staff who also read the mailbox in
  a mail client see it as it was.
- imapclient has no socket timeout by default; a worker without one can hang for ever on
  a half-open connection, so a timeout is always set.
- Plain text is allowed only to loopback hosts (enforced in config); TLS verifies
  certificates against the system store or the configured CA file.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.imapclient import _parse_untagged_response
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from intake.config import MailboxSettings
from intake.errors import MailboxError

log = logging.getLogger(__name__)

IDLE_RENEW_SECONDS = 25 * 60  # RFC 2177: servers may drop IDLE after 30 minutes
# How often a wait in IDLE looks at its stop flag: a local socket wait, no IMAP command.
STOP_CHECK_SECONDS = 1.0
# imaplib's read buffer (``_widen_reader``): above TLS's largest record, 16 KB.
READ_BUFFER = 64 * 1024
# Empty answers in a row from ``idle_check`` well before its timeout that mean the server
# closed the connection (see ``Mailbox._idle``).
QUICK_EMPTY_LIMIT = 20
# UIDs per RFC822.SIZE FETCH: a command line of a whole backlog's UIDs could pass the
# server's line limit (Dovecot's imap_max_line_length is 64 kB).
SIZES_PER_FETCH = 1000


def _transient(exc: BaseException) -> bool:
    """Worth retrying: network trouble or the server saying it is temporarily unavailable."""
    cause = exc.__cause__ if isinstance(exc, MailboxError) else exc
    if isinstance(cause, (OSError, ssl.SSLError)) and not isinstance(
        cause, ssl.SSLCertVerificationError
    ):
        return True
    text = str(cause)
    # [INUSE]: Dovecot while another process holds the maildir's lock (RFC 5530).
    return any(word in text for word in ("UNAVAILABLE", "INUSE", "Temporary", "BYE"))


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None
    idle: bool  # the server offers IDLE


def _widen_reader(client: IMAPClient) -> None:
    """Give imaplib a read buffer larger than TLS's largest record (16 KB).

    Why: imaplib reads through an 8 KB buffer. When the answer at IDLE start is one TLS
    record over 8 KB (staff's mail client flagged a few hundred mails as a mail came
    in), one read takes only part of it and the rest stays decrypted inside the TLS
    layer, where neither a socket poll nor ``_buffered_lines`` sees it: the EXISTS in
    that rest waited for the whole IDLE (review rv8d). With a buffer of ``READ_BUFFER``
    one read drains a whole record. Called between commands (after LOGIN), when nothing
    is left unread; the old reader is kept if it still holds bytes.
    """
    imap = client._imap
    old, sock = getattr(imap, "file", None), getattr(imap, "sock", None)
    if old is None or sock is None or not hasattr(old, "peek"):
        return
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        held = old.peek(1)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        held = b""
    finally:
        sock.settimeout(timeout)
    if held:
        return
    imap.file = sock.makefile("rb", buffering=READ_BUFFER)
    old.close()  # the reader only; the socket stays open


def _buffered_lines(client: IMAPClient) -> list[object]:
    """The whole response lines imaplib already holds, unseen by a poll, parsed as
    ``idle_check`` parses them; never waits.

    Why: Dovecot syncs the folder when IDLE starts and sends ``+ idling`` and
    ``* N EXISTS`` back to back. imaplib's buffered reader takes both off the socket while
    ``idle()`` consumes only the first line, and ``idle_check`` polls the socket, which
    then has nothing: the EXISTS of a mail that landed between the NOOP and the IDLE sat
    unseen until DONE, i.e. for the whole wait (proven: an urgent mail alerted after 30 s
    instead of 0.6 s). Only whole lines are taken (half a line stays for ``idle_check``,
    which the rest of it wakes); a TLS record already received counts too. The same
    imaplib and imapclient internals ``idle_check`` itself uses.
    """
    reader = getattr(client._imap, "file", None)
    if reader is None or not hasattr(reader, "peek"):
        return []
    lines: list[object] = []
    sock = client.socket()
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            try:
                held = reader.peek(1)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if b"\n" not in held:
                break
            lines.append(_parse_untagged_response(client._imap._get_line()))
    finally:
        sock.settimeout(timeout)
    return lines


def tls_context(cafile: Any = None) -> ssl.SSLContext:
    """Certificate and host name checks on, always; a CA file adds trust to the system's."""
    context = ssl.create_default_context()
    if cafile:
        context.load_verify_locations(cafile=str(cafile))
    return context


class Mailbox:
    """One open, selected IMAP connection; use as a context manager."""

    def __init__(self, settings: MailboxSettings, attempts: int = 4):
        self.settings = settings
        self.attempts = attempts
        self.client: IMAPClient | None = None
        self.state: FolderState | None = None
        self._exists: int | None = None  # messages in the folder, as last announced
        # When the pipeline last looked for stored-but-unprocessed rows and unreadable mail
        # on this connection (``pipeline._sweep``); None: not yet.
        self.swept_at: datetime | None = None
        # The poll (its ``now``) in which a whole FETCH batch failed alike on this
        # connection (``pipeline._fetch_batch``): the server refuses, not a mail, so that
        # poll counts a failed try for one mail at most.
        self.refused_at: datetime | None = None
        # The poll whose FETCH failures were last logged at WARNING (``pipeline._fetch_log``).
        self.fetch_warned_at: datetime | None = None

    def __enter__(self) -> Mailbox:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> FolderState:
        """Connect, log in and EXAMINE the folder, retrying transient failures.

        Servers answer ``[UNAVAILABLE]`` or drop the connection while restarting or when
        their auth workers are busy; a few retries with backoff ride that out (tenacity),
        anything else fails at once with a message that says what to check.
        """
        for attempt in Retrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.5, max=8),
            reraise=True,
        ):
            with attempt:
                return self._open_once()
        raise AssertionError("unreachable")

    def _open_once(self) -> FolderState:
        s = self.settings
        client: IMAPClient | None = None
        try:
            if s.security == "tls":
                client = IMAPClient(
                    s.host,
                    port=s.port,
                    ssl=True,
                    ssl_context=tls_context(s.cafile),
                    timeout=s.timeout,
                )
            else:
                client = IMAPClient(s.host, port=s.port, ssl=False, timeout=s.timeout)
                if s.security == "starttls":
                    # A failed STARTTLS raises: never fall back to plain text.
                    client.starttls(tls_context(s.cafile))
            password = s.password.get() or ""
            if password.isascii() and s.username.isascii():
                client.login(s.username, password)
            else:
                # LOGIN's quoted strings are ASCII (imaplib raised UnicodeEncodeError,
                # whose repr held the password: review rv9b F1); AUTHENTICATE PLAIN
                # carries UTF-8 (RFC 4616).
                client.plain_login(s.username, password)
            _widen_reader(client)
            caps = client.capabilities()
            if s.move_to and not client.folder_exists(s.move_to):
                client.create_folder(s.move_to)
            # EXAMINE (read-only) unless housekeeping needs to move mail out of the folder.
            info = client.select_folder(s.folder, readonly=not s.move_to)
        except (IMAPClientError, OSError, ssl.SSLError) as exc:
            if client is not None:
                with contextlib.suppress(OSError):
                    client.shutdown()
            raise MailboxError(
                f"IMAP {s.host}:{s.port} ({s.security}) user {s.username} folder {s.folder}: "
                f"{type(exc).__name__}: {exc}. Check [mailbox] host, port, security, "
                "credentials and that the folder exists."
            ) from exc
        client.normalise_times = False  # keep INTERNALDATE's zone (aware datetimes)
        self.client = client
        exists = info.get(b"EXISTS")
        self._exists = int(exists) if exists is not None else None
        self._news_reported()  # SELECT's own EXISTS is not news: the first poll follows
        uidnext = info.get(b"UIDNEXT")
        self.state = FolderState(
            uidvalidity=int(info[b"UIDVALIDITY"]),
            uidnext=int(uidnext) if uidnext is not None else None,
            idle=s.idle and b"IDLE" in caps,
        )
        log.info(
            "mailbox opened", extra={"host": s.host, "folder": s.folder, "idle": self.state.idle}
        )
        return self.state

    def close(self) -> None:
        if self.client is None:
            return
        try:
            self.client.logout()
        except (IMAPClientError, OSError):
            with contextlib.suppress(OSError):
                self.client.shutdown()
        self.client = None

    def _client(self) -> IMAPClient:
        if self.client is None:
            raise MailboxError("mailbox is not open")
        return self.client

    def current_uidvalidity(self) -> int:
        """UIDVALIDITY as the server says now (STATUS), to notice a recreated mailbox."""
        status = self._client().folder_status(self.settings.folder, [b"UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    def new_uids(self, last_uid: int) -> list[int]:
        """UIDs above ``last_uid``, ascending. ``n:*`` always matches the highest UID, so filter."""
        uids = self._client().search(["UID", f"{last_uid + 1}:*"])
        return sorted(u for u in uids if u > last_uid)

    def fetch(self, uids: list[int]) -> Iterator[tuple[int, bytes, datetime | None]]:
        """Raw bytes and arrival time (INTERNALDATE) of each UID, in UID order.

        BODY.PEEK[] never sets \\Seen. The arrival time is the server's, so a mail read
        after an outage still shows when the resident sent it to us.
        """
        if not uids:
            return
        data = self._client().fetch(uids, [b"BODY.PEEK[]", b"INTERNALDATE"])
        for uid in sorted(data):
            raw = data[uid].get(b"BODY[]")
            if raw is None:  # expunged between SEARCH and FETCH
                continue
            when = data[uid].get(b"INTERNALDATE")
            if isinstance(when, datetime) and when.tzinfo is None:
                when = None  # a server that gave no zone: use our own clock instead
            yield uid, bytes(raw), when if isinstance(when, datetime) else None

    def header(self, uid: int) -> bytes | None:
        """The header block alone (``BODY.PEEK[HEADER]``) of a mail whose whole body cannot
        be fetched, or None when that fails too: a placeholder for such a mail can then
        still say who wrote it, so the resident is acknowledged and staff can find the mail.
        """
        try:
            data = self._client().fetch([uid], [b"BODY.PEEK[HEADER]"])
        except (IMAPClientError, OSError):
            self.recover()
            return None
        raw = data.get(uid, {}).get(b"BODY[HEADER]")
        return bytes(raw) if raw else None

    def recover(self) -> None:
        """After a failed command: keep the connection if it still answers (a server ``NO``
        leaves it usable), else open a new one on the same folder.

        Why: Dovecot drops the connection when it meets a damaged mail file (a truncated
        file whose name still gives its size); the caller goes on with the other mails.
        Raises ``MailboxError`` when the server cannot be reached again, or when the
        folder was recreated meanwhile (another UIDVALIDITY): UIDs then mean other mails,
        so the caller must start again from its cursor.
        """
        before = self.state.uidvalidity if self.state else None
        if self.client is not None:
            try:
                self.client.noop()
                return
            except (IMAPClientError, OSError):
                with contextlib.suppress(OSError):
                    self.client.shutdown()
                self.client = None
        self.open()
        if self.state is None or self.state.uidvalidity != before:
            raise MailboxError(
                f"folder {self.settings.folder} changed UIDVALIDITY while it was being read"
            )

    def sizes(self, uids: list[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID (a few bytes a mail on the wire): lets a caller that
        reads a whole folder fetch it in batches of bounded bytes, not of a mail count."""
        sizes: dict[int, int] = {}
        for start in range(0, len(uids), SIZES_PER_FETCH):
            data = self._client().fetch(uids[start : start + SIZES_PER_FETCH], [b"RFC822.SIZE"])
            sizes.update({uid: int(d.get(b"RFC822.SIZE", 0)) for uid, d in data.items()})
        return sizes

    def move_done(self, uids: list[int]) -> int:
        """Housekeeping: move stored mail to ``move_to`` (MOVE, RFC 6851, when offered; else
        COPY + \\Deleted + UID EXPUNGE). Called only after the cases are committed."""
        target = self.settings.move_to
        if not target or not uids:
            return 0
        client = self._client()
        if client.has_capability("MOVE"):
            client.move(uids, target)
        else:
            client.copy(uids, target)
            client.add_flags(uids, [b"\\Deleted"], silent=True)
            if client.has_capability("UIDPLUS"):
                client.uid_expunge(uids)
            else:
                client.expunge()
        return len(uids)

    def stored_but_not_moved(self, last_uid: int) -> list[int]:
        """UIDs at or below the cursor still in the folder (a crash between commit and move)."""
        if not self.settings.move_to or last_uid < 1:
            return []
        return sorted(u for u in self._client().search(["UID", f"1:{last_uid}"]) if u <= last_uid)

    def wait(self, seconds: float, stop: Callable[[], bool] | None = None) -> bool:
        """Block up to ``seconds`` in IDLE (RFC 2177) for news; True when the server reported
        something. Only for servers that offer IDLE; the worker polls the others.

        One IDLE command for the whole wait: ``stop`` (the worker's stop flag) is looked at
        every ``STOP_CHECK_SECONDS`` by waiting on the socket, which sends nothing. (The
        first worker left and re-entered IDLE every second, with a NOOP, a STATUS and a
        UID SEARCH each time: some 400,000 commands a day on an idle mailbox, which a hosted
        IMAP service may throttle or lock out.)

        Why the checks before IDLE: Dovecot brings a session's view of the folder up to
        date at the *end* of each command, and IDLE reports only what changes after it
        starts. A mail that arrives while the worker is busy is therefore either announced
        as an EXISTS tacked onto some earlier command's answer (even the UID SEARCH that did
        not list it yet), or not announced at all until the next command. Both would wait
        out the whole IDLE (measured: a mail appended just before IDLE was reported only at
        DONE). So: an EXISTS already received means news now; otherwise one NOOP (one round
        trip) makes the server announce what arrived since the last command; only then
        IDLE. Dovecot reports a mail that lands between the NOOP and IDLE right after
        ``+ idling``, in bytes imaplib may already have read off the socket
        (``_buffered_lines``), so the wait also ends on those. ``seconds``
        (``[mailbox] idle_seconds``) bounds how long a connection that died silently
        (a NAT dropping it) goes unnoticed, and any server news this code does not
        foresee.
        """
        client = self._client()
        if self._news_reported():
            return True
        client.noop()
        if self._news_reported():
            return True
        deadline = time.monotonic() + min(seconds, IDLE_RENEW_SECONDS)
        news = self._idle(client, deadline, stop)
        # then the answers to DONE; the poll that follows will look
        return self._news_reported() or news

    def _count(self, responses: list[object]) -> bool:
        """Keep the known message count in step with ``responses``, in the order they
        came; True when they may announce new mail: a count other than the one known, or
        an answer this code does not know to be harmless (looking costs one poll).

        Harmless: a flag change (FETCH), an EXPUNGE, an unchanged EXISTS or RECENT, and
        Dovecot's keepalive ``* OK Still here``."""
        news = False
        for response in responses:
            if not isinstance(response, tuple) or len(response) < 2:
                news = True
            elif response[1] == b"EXISTS" and isinstance(response[0], int):
                news = news or response[0] != self._exists
                self._exists = response[0]
            elif response[1] == b"EXPUNGE":
                if self._exists is not None:
                    self._exists -= 1
            elif response[1] in (b"FETCH", b"RECENT") or response[0] == b"OK":
                continue
            else:
                news = True
        return news

    def _idle(self, client: IMAPClient, deadline: float, stop: Callable[[], bool] | None) -> bool:
        """One IDLE until news, ``deadline`` or ``stop``; True when it ended on news. The
        answers to DONE are left in imaplib's record for ``_news_reported``.

        Whatever the server announces, with ``+ idling`` (lines imaplib already holds,
        ``_buffered_lines``) or later (``idle_check``), ends the IDLE only when it is news
        by ``_count``; otherwise (a flag change or expunge by staff's mail client, a
        server that repeats an unchanged count at every IDLE start) the IDLE goes on, so
        the worker neither loops without pause (review rv8b N2) nor stops seeing mail that
        arrives later in the same IDLE (review rv8c). A change announced in the middle of
        the IDLE used to end it, and the poll that followed found nothing: the mail that
        came a second later waited for the next NOOP.

        A closed connection makes ``idle_check`` return nothing at once, every time (it
        swallows the end of the stream); ``QUICK_EMPTY_LIMIT`` such quick empty returns
        in a row (microseconds apart on a closed connection; a TLS record split over a
        few segments gives one or two) end the wait with ``OSError`` so the worker
        reconnects, instead of spinning a core until the deadline (review rv8b N3)."""
        client.idle()
        quick = 0
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop()):
                    return False
                held = _buffered_lines(client)
                if held:
                    if self._count(held):
                        return True
                    continue
                timeout = min(STOP_CHECK_SECONDS, left)
                began = time.monotonic()
                responses = list(client.idle_check(timeout=timeout))
                if responses:
                    if self._count(responses):
                        return True
                    quick = 0
                    continue
                if time.monotonic() - began >= timeout / 2:
                    quick = 0
                    continue
                quick += 1
                if quick >= QUICK_EMPTY_LIMIT:
                    raise OSError("the IMAP connection was closed during IDLE")
        finally:
            client.idle_done()

    def forget_news(self) -> None:
        """Drop what commands announced (keeping the count in step) without waiting: for
        the worker's loops that do not wait in IDLE, so the record cannot grow."""
        self._news_reported()

    def _news_reported(self) -> bool:
        """Did a command's answer since the last look announce a new message count
        (EXISTS)? Forget those answers.

        Only a count that differs from the last one known counts as news (each EXPUNGE
        announced meanwhile lowers the known count by one): a server that repeated an
        unchanged EXISTS on every NOOP would otherwise keep the worker polling without
        pause. A stale count can only make the worker miss the fast path, never mail:
        it polls after every wait anyway.

        imaplib keeps every unsolicited response in ``untagged_responses`` until the next
        SELECT, and imapclient does not read EXISTS from there; the worker never reselects,
        so clearing it here also keeps that record from growing for the life of the worker.
        Between commands it holds only such leftovers (each command takes its own answers).
        """
        record = getattr(self._client()._imap, "untagged_responses", None)
        if not isinstance(record, dict):
            return False
        exists = record.get("EXISTS")
        expunged = len(record.get("EXPUNGE") or ())
        record.clear()
        if exists and expunged:
            # imaplib keeps one list per response name, so which came first is lost (a
            # poll's EXISTS, then our own MOVE's EXPUNGE?): the count is unknown until the
            # next EXISTS, and this may be news.
            self._exists = None
            return True
        known = self._exists - expunged if self._exists is not None else None
        if not exists:
            self._exists = known
            return False
        try:
            count = int(exists[-1])
        except (TypeError, ValueError):
            return True  # unreadable: look (one poll), as before
        self._exists = count
        return count != known
