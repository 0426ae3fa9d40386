"""Pipeline: ``process_new_mail`` — the one function ``once``, ``run`` and the tests share.

Order of work for each batch of new UIDs, and why:
1. Transaction 1 stores the raw bytes (deduplicated by SHA-256 per mailbox) and counts an
   attempt. From here on the mail cannot be lost, whatever crashes next.
2. The pure work (parse, triage, route) of each stored message is done before transaction
   2 opens, from the bytes in memory. Transaction 2 (on SQLite holding the write lock from
   its first statement) creates or extends each message's case, queues the acknowledgement
   and the alert in the outbox, and advances the IMAP cursor — all in one commit, so the
   cursor never runs ahead of what is stored. Letters that open a new case are written
   with a few multi-row statements; replies, bounces and the like go one by one, each in a
   SAVEPOINT, after the letters before them are written. In a batch of at least
   ``POOL_MIN_BATCH`` messages the pure work is done by the prepare pool's processes
   (``intake.prepare_pool``, ``[service] prepare_processes``), the next batch read ahead
   and prepared there while this one is written; the writes stay here, in the same order,
   so nothing below changes with the pool (a failure in a child is tried once more here).
   A message whose pure work raises is quarantined (stage and error class recorded, never
   the body) as a case for a human; if the batch fails as a whole, nothing of it is
   committed and it is redone one message per transaction, as after a crash; a message
   that crashed the whole process three times is quarantined without another try.
3. The outbox is delivered afterwards (alerts first) by ``intake.send``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.utils import getaddresses
from functools import cached_property
from json.encoder import encode_basestring as _json_str  # what ensure_ascii=False uses
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from jinja2 import Environment
from sqlalchemy import Table, bindparam, func, insert, update
from sqlalchemy import select as core_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from intake.automatic import automatic_reason, spam_reason
from intake.businessdays import BusinessCalendar
from intake.compose import (
    ACK_CODE_LENGTH,
    LOOP_HEADER,
    MARKER_HEADER,
    Sender,
    ack_bytes,
    ack_code,
    render_ack,
    render_alert,
    template_environment,
)
from intake.config import Settings
from intake.errors import IntakeError
from intake.fetch import Mailbox, _transient
from intake.letter import Letter
from intake.parse import parse
from intake.partners import Directory, Partner, assign_partner
from intake.phones import find_phones
from intake.prepare_pool import Failed, PreparePool, Ticket
from intake.quotes import ATTRIBUTION_MARK, quote_depth
from intake.read_marks import ReadMark, mark_path
from intake.read_marks import load as load_read_mark
from intake.read_marks import save as save_read_mark
from intake.read_marks import updating as read_mark_updating
from intake.rules import RuleSet
from intake.send import SendReport, deliver_outbox
from intake.store import (
    Case,
    Cursor,
    Event,
    Outbox,
    StoredMessage,
    dumps,
    from_db,
    get_cursor,
    open_database,
    record_event,
    session_scope,
    to_db,
)
from intake.triage import Match, Triage, classify, classify_text, match_dict

if TYPE_CHECKING:
    from intake.last_good_rules import Fallback

log = logging.getLogger(__name__)

# The tables behind the models, for the batch path's multi-row Core statements (the ORM
# unit of work costs more per row than the SQL it sends).
_MESSAGES: Table = StoredMessage.__table__  # type: ignore[attr-defined]
_CASES: Table = Case.__table__  # type: ignore[attr-defined]
_OUTBOX: Table = Outbox.__table__  # type: ignore[attr-defined]
_EVENTS: Table = Event.__table__  # type: ignore[attr-defined]

MAX_ATTEMPTS = 3
# A batch with at least this many messages to prepare goes through the prepare pool
# (``intake.prepare_pool``); smaller ones, like a lone urgent mail seen in IDLE, are
# prepared in this process without any inter-process round trip.
POOL_MIN_BATCH = 64
CASE_NUMBER = re.compile(r"\bC(\d{6})\b")


@dataclass
class Service:
    """Everything a stage needs, built once at start-up and passed in (no globals)."""

    settings: Settings
    engine: Engine
    rules: RuleSet
    directory: Directory
    env: Environment
    calendar: BusinessCalendar
    sender: Sender
    # Worker processes for the pure work of large batches (``[service] prepare_processes``);
    # None: everything in this process. Started on first use, stopped by ``close``.
    pool: PreparePool | None = None
    # Set by ``process_new_mail`` for the first read of a folder that holds old mail: mail
    # received before it is read, triaged and alerted, but not acknowledged (it may have
    # been acknowledged already, by a lost database, or answered by staff by hand).
    no_ack_before: datetime | None = None
    # Per mailbox key, once it has a cursor row: the first read's cutoff (None: none), so
    # an empty poll costs no extra database read (a cursor row is never deleted).
    first_read: dict[str, datetime | None] = field(default_factory=dict)
    # Set by ``process_new_mail`` while it writes a batch that a lost database had read
    # already (``intake.read_marks``): that batch's mail is not acknowledged again.
    no_ack_reason: str | None = None
    # Set by ``process_new_mail`` for its whole read: the read mark's UID when the
    # database is behind it; a placeholder for a mail at or below it (written while
    # fetching, outside any batch) is not acknowledged again either.
    read_before_uid: int | None = None
    # Per mailbox key: the read mark as this process last read or wrote it (one file read
    # per process, not per poll); see ``intake.read_marks``.
    read_marks: dict[str, ReadMark | None] = field(default_factory=dict)
    # Mailbox keys whose database-behind-the-read-mark ERROR this process has logged.
    read_mark_told: set[str] = field(default_factory=set)
    # Set when the live rules have problems and this service runs with the last rules
    # that loaded (``intake.last_good_rules``; only ``run`` and ``once`` fall back).
    rules_fallback: Fallback | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, last_good: bool = False, read_only: bool = False
    ) -> Service:
        """Build the service. ``last_good`` (``run``, ``once``): save the rules when they
        load, run with the last rules that loaded when they do not, and queue the staff
        notice of that (``intake.last_good_rules``). ``read_only`` (staff commands): use
        the last rules that loaded when the live ones are broken, save and tell nothing.
        Otherwise broken rules raise."""
        from datetime import time

        from intake import last_good_rules

        def hhmm(value: str) -> time:
            hour, minute = value.split(":")
            return time(int(hour), int(minute))

        calendar = BusinessCalendar(
            tz=settings.timezone,
            open=hhmm(settings.office_open),
            close=hhmm(settings.office_close),
            closures=BusinessCalendar().closures + settings.closures,
            # the acknowledgement promises a reply "today" only before the last digest
            digest_times=tuple(hhmm(t) for t in settings.digest_times),
        )
        # The fingerprint is taken before the rules are read: a pool child refuses to work
        # with other rules than these (staff may edit rules/ meanwhile), and it loads them
        # from where the worker did (the last good copy when the live rules are broken).
        loaded = last_good_rules.load(settings, last_good, read_only=read_only)
        pooled = settings.prepare_processes > 0
        svc = cls(
            settings=settings,
            engine=open_database(settings.database_url),
            rules=loaded.rules,
            directory=loaded.directory,
            env=template_environment(settings.templates_dir),
            calendar=calendar,
            sender=Sender(settings.smtp.from_address, settings.smtp.from_name),
            pool=(
                PreparePool(
                    settings,
                    settings.prepare_processes,
                    fingerprint=loaded.fingerprint,
                    rules_dir=loaded.rules_dir,
                )
                if pooled
                else None
            ),
            rules_fallback=loaded.fallback,
        )
        if loaded.fallback is not None and last_good:
            try:
                last_good_rules.notify(svc, loaded.fallback, datetime.now(calendar.tz))
            except Exception:
                # the notice must never keep the worker (and its alerts) from starting
                log.error("could not queue the staff notice of the rules problem", exc_info=True)
        return svc

    @cached_property
    def staff(self) -> frozenset[str]:
        """``staff_addresses`` of this service, computed once (settings and partners are
        fixed for its life), not for every mail."""
        return staff_addresses(self.settings, self.directory)

    def settle(self) -> None:
        """Tell the garbage collector that what is loaded now lives as long as the process.

        The compiled rules, the analyser's caches and the learned model are hundreds of
        thousands of objects that never die; without ``gc.freeze`` every full collection
        walks them again (measured: parse + triage 3.0 -> 2.7 ms CPU a mail). Only for a
        process that keeps one Service (``run``, ``once``): frozen objects are never
        collected, so a test building many Services must not call it.
        """
        gc.collect()
        gc.freeze()

    def close(self) -> None:
        """Stop the prepare pool's processes, if any were started (the worker's shutdown).

        The Service stays usable: a later large batch starts the pool again."""
        if self.pool is not None:
            self.pool.close()

    def deliver(self, now: datetime, should_stop: Callable[[], bool] | None = None) -> SendReport:
        """Deliver this mailbox's due outbox rows (alerts first), ended early once
        ``should_stop`` says so (the worker's stop flag); then move the read mark over the
        mail whose acknowledgement is now settled (``note_read``)."""
        report = deliver_outbox(
            self.settings.smtp,
            self.engine,
            now,
            self.settings.mailbox.key,
            should_stop=should_stop,
        )
        if report.sent or report.failed:
            note_read(self)
        return report


@dataclass
class RunReport:
    fetched: int = 0
    stored: int = 0
    duplicates: int = 0
    cases: int = 0
    followups: int = 0
    quarantined: int = 0
    acks: int = 0
    alerts: int = 0
    moved: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)


# Why a letter from a staff address gets no acknowledgement (see ``staff_addresses``).
STAFF_BLOCK = "staff-address"
# A reply to our alert, escalation or digest whose own words are urgent: it answers (or
# acknowledges) that mail and alerts nobody, but the case keeps a note that it said so.
STAFF_URGENT_WORDS_EVENT = "staff-reply-urgent-words"


def staff_addresses(settings: Settings, directory: Directory) -> frozenset[str]:
    """The addresses of this mailbox's own people, lower-cased: on-call, backup and off-hours
    recipients, the coordinator and every partner's digest recipients.

    Why: their mail is staff traffic (a reply to an alert, a digest, a note), never a
    consultation. Phone and carrier mailers drop In-Reply-To, so their reply to an alert
    cannot always be told by its thread; without this it opened a case "from" the on-call
    person, was acknowledged like a resident and listed in a partner digest. Our own
    address is left out: our own mail keeps its own guards (``acknowledgement_block``).
    """
    own = settings.smtp.from_address.lower()
    everyone = (
        *settings.oncall.everyone,
        *settings.coordinator,
        *(address for partner in directory.partners for address in partner.digest_to),
    )
    return frozenset(a.lower() for a in everyone if a and a.lower() != own)


def acknowledgement_block(
    letter: Letter, own_address: str, staff: Collection[str] = frozenset()
) -> str | None:
    """Why this letter gets no acknowledgement, or None. Pure; shared with ``classify``.

    ``staff``: lower-cased staff addresses (``staff_addresses``; none for ``classify``,
    which has no config). A staff address never gets the residents' acknowledgement; an
    automatic reason (an out-of-office reply) still wins over ``STAFF_BLOCK``, because the
    pipeline must not take an auto-reply for the on-call person's answer to an alert.
    """
    if not letter.from_addr:
        return "no-sender"
    if letter.from_addr.lower() == own_address.lower():
        return "own-address"
    if letter.header(MARKER_HEADER):
        return "own-mail-marker"
    reason = automatic_reason(letter) or spam_reason(letter)
    looped = any(
        _addresses_in(value) & {own_address.lower()}
        for value in letter.headers.get(LOOP_HEADER.lower(), [])
    )
    if looped and reason is not None and not reason.startswith("content:"):
        # An X-Loop naming us on automatic mail: our mail come back through an automatic
        # system is not answered. A person's mail with one is: an alias that forwards the
        # public address to the mailbox adds it to every resident's mail (``formail -A
        # "X-Loop: ..."``; review rv9d F3); our own mail carries the marker header
        # (above), and a sender gets one acknowledgement a day at most, bounding a loop.
        return "own-mail-loop"
    if letter.from_addr.lower() in staff and (reason is None or reason.startswith("content:")):
        # Not a content heuristic: ``decide`` lifts those for urgent or on-topic words.
        return STAFF_BLOCK
    return reason


def _addresses_in(value: str) -> set[str]:
    """The mail addresses in a header value, lower-cased (whole addresses, not pieces)."""
    return {addr.lower() for _name, addr in getaddresses([value]) if "@" in addr}


def _is_own_mail(block: str | None) -> bool:
    """Whether the block says the mail is the service's own: from our address, or with
    our marker header. Not an X-Loop naming us alone (``own-mail-loop``): an alias that
    forwards the public address to the mailbox adds that to residents' mail too (review
    rv9d F3); such mail is still not acknowledged (a loop guard), but it is a resident's
    consultation, routed and listed."""
    return block in ("own-address", "own-mail-marker")


# A reply whose own words open like a phone's or mailer's automatic answer ("【自動返信】
# ただいま運転中です。") sent without any automatic header: it acknowledges no alert,
# since nobody read it (review rv10c R2: the on-call box forwarded to a phone).
_AUTO_WORDS = (
    r"(?:自動(?:返信|応答|送信)(?:メール|メッセージ)?|auto(?:matic)?[ -]?(?:reply|response))"
)
AUTO_REPLY_TEXT = re.compile(
    r"\s*(?:"
    # in any brackets (【】≪≫■■※※《》〔〕), not the object of a sentence (【自動返信】の設定を…)
    rf"[^\w\s]{{1,2}}\s*{_AUTO_WORDS}\s*[^\w\s]{{1,2}}"
    r"(?!\s*(?:[のをがはにでとも]|設定|機能|解除|オフ|停止|off\b))"
    rf"|{_AUTO_WORDS}\s*[:：]"  # 自動返信：, Auto Reply:
    r"|(?:この|本)メールは自動(?:返信|応答|送信)"
    r"|自動(?:返信|応答)(?:メール|メッセージ)?(?:です|でお送り)"
    r"|this is an? auto(?:matic|mated)?[ -]?(?:reply|response|generated))",
    re.I,
)
QUOTED_LABEL = "quoted"  # urgent reasons found in quoted words (``decide``)
JOINED_LABEL = "lines-joined"  # urgent reasons found once short lines were joined
QUOTED_JOINED_LABEL = "quoted-lines-joined"  # the same in quoted words
# A letter whose only crisis words quote a mail of its thread read before (``_quoted_before``).
QUOTED_BEFORE_EVENT = "quoted-urgent-words-read-before"
SHORT_LINE = 5  # characters: a line this short may be a piece of a phrase
_SENTENCE_END = tuple("。．.！!？?…」』）)♪")


# Wording by which a quoted sentence is an organisation's advice pointing to help (a
# school's or help line's mail the resident replied to), not a person's crisis: requests
# to consult or call, "to those who ...", and directions to a service.
_ADVICE = re.compile(
    r"ご相談ください|相談できます|相談してください|ご相談を|電話してください|お電話ください|"
    r"ご連絡ください|おかけください|ご利用ください|の方へ|[るたい]方へ|ホットライン[（(]|"
    r"(?:センター|窓口|ダイヤル|ライン|電話)(?:へ|まで)[ \t\u3000]*(?:[。．.）)]|$)"
)
# A sentence: up to 。！？ (also a full-width space, which phones put between sentences)
_SENTENCES = re.compile(r"[^。．！？!?\n\u3000]*(?:[。．！？!?\u3000]+|\n|$)")


_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _addresses_in_text(text: str) -> set[str]:
    """The mail addresses written in ``text``, lower-cased."""
    return {m.lower() for m in _ADDRESS.findall(text)}


def without_advice(words: str) -> str:
    """``words`` without the sentences that give advice (``_ADVICE``).

    Why: quoted words are read for a crisis because a resident may pass on a friend's
    mail by replying to it; but a reply to a school's or help line's mail quotes its
    advice (「死にたいほどつらいときは、いのちの電話にご相談ください。」), which names the
    very words the urgent rules look for. Only the advising sentence goes: a friend's
    「相談窓口とか意味ない。もう死にたい。」 keeps its second sentence (review rv10b F3).
    Only for quoted words: the resident's own lines are read whole."""
    if not _ADVICE.search(words):
        return words
    kept: list[str] = []
    for piece in _SENTENCES.findall(words):
        if _ADVICE.search(piece):
            piece = "\n" if piece.endswith("\n") else ""  # the line break stays
        kept.append(piece)
    return "".join(kept)


def quoted_text_read(letter: Letter, own_address: str, staff: Collection[str] = ()) -> str:
    """The quoted words ``decide`` reads for a crisis (``_quoted_before`` maps its offsets
    into the same text): without the blocks whose attribution names our mailbox or a staff
    address (staff replying to a resident from the mailbox ask 「死にたいと思うことはあり
    ますか？」, and the resident's 「いいえ」 below it alerted on-call: review rv10c R4),
    without the attribution lines, and without advice."""
    ours_addresses = {a.lower() for a in (own_address, *staff) if a}
    kept: list[str] = []
    ours = False
    for line in letter.quoted_words.split("\n"):
        if line.startswith(ATTRIBUTION_MARK):
            # each block by its own attribution: our mailbox's or a staff address (review
            # rv10d: the whole city domain hid a friend's mail from any city address)
            ours = bool(_addresses_in_text(line) & ours_addresses)
            continue
        if not ours:
            kept.append(line)
    return without_advice("\n".join(kept))


def short_lines_joined(text: str) -> str:
    """``text`` with the line break between two short pieces (``SHORT_LINE`` characters
    or fewer each; one blank line between them is skipped) removed when the
    first does not end a sentence; "" when there is none.

    Why: a resident on a phone may write one piece a line (もう / 死に / たい, 生きて /
    いたくない, a poem with blank lines between); the rules take a line break for the end
    of a phrase and read none of it. Only breaks between two short pieces are joined, so
    the sentences of an ordinary mail keep their bounds and a list under a heading
    (「やることリスト」 / 「カット」) stays apart (review rv10b F7); the pieces are
    compared, not the joined line (F8), and joined once (F9: it was quadratic)."""
    lines = text.split("\n")
    if len(lines) < 2 or all(len(line.strip()) > SHORT_LINE for line in lines):
        return ""
    out: list[list[str]] = []  # output lines, each a list of pieces
    previous = ""  # the last non-blank piece
    blank = 0  # blank lines since it
    joined = False
    for line in lines:
        here = line.strip()
        if not here:
            blank += 1
            continue
        if (
            out
            and blank <= 1
            and len(here) <= SHORT_LINE
            and len(previous) <= SHORT_LINE
            and not previous.endswith(_SENTENCE_END)
        ):
            out[-1].append(here)
            joined = True
        else:
            out.extend([[]] * min(blank, 1))
            out.append([here])
        previous, blank = here, 0
    if not joined:
        return ""
    return "\n".join("".join(pieces) for pieces in out)


def _add_urgency(triage: Triage, text: str, rules: RuleSet, label: str) -> None:
    """Make ``triage`` urgent when ``text`` (words of the sender that are not the new text:
    a forward, a signature) is, with its reasons marked ``label:`` so staff see where."""
    extra = classify_text("", text, rules)
    if extra.urgent:
        triage.urgent = True
        triage.urgent_reasons = [
            *triage.urgent_reasons,
            *(replace(m, rule=f"{label}:{m.rule}") for m in extra.urgent_reasons),
        ]


def decide(
    letter: Letter, rules: RuleSet, own_address: str, staff: Collection[str] = frozenset()
) -> tuple[Triage, str | None]:
    """Triage plus the acknowledgement decision: the one function the pipeline and
    ``classify --json`` share, so the command line shows what the service would do."""
    block = acknowledgement_block(letter, own_address, staff)
    triage = classify(letter, rules)
    if block and block.startswith("content:") and (triage.urgent or triage.topic != "other"):
        # Content heuristics only decide when nothing says "person": a resident describing
        # the scam mail that took their money, or the loan advert, is still answered.
        block = None
    if not triage.urgent and letter.signature.strip() and block is None and not letter.bounce:
        # The sender's own lines below "-- " that looked like a signature: ｼﾆﾀｲ or 練炭
        # alone on a line does (review rv9d F1). Only for a resident's mail (no block):
        # a staff member's signature may name a service (自殺対策係), and that is no crisis.
        _add_urgency(triage, letter.signature, rules, "signature")
    resident = block is None and not letter.bounce
    if not triage.urgent and resident:
        joined = short_lines_joined(letter.text)
        if joined:
            # もう / 死に / たい, one piece a line (a phone, a poem): the rules read a line
            # break as the end of a phrase, so the words are read once more joined. Only a
            # resident's mail: a newsletter's list is no crisis (review rv10b F6).
            _add_urgency(triage, joined, rules, JOINED_LABEL)
    if not triage.urgent and resident and letter.quoted_words.strip():
        # Quoted words that are not our mail: a friend's mail a resident passes on by
        # replying to it, lines marked with ＞ for emphasis (review rv9c R7, R10), also
        # written one piece a line. Only in a resident's mail: staff quote residents, and
        # automatic mail quotes what it answers. Words of the thread already alerted on
        # are not news (``_quoted_before``).
        words = quoted_text_read(letter, own_address, staff)
        if words.strip():
            _add_urgency(triage, words, rules, QUOTED_LABEL)
        joined = short_lines_joined(words) if not triage.urgent else ""
        if joined:
            _add_urgency(triage, joined, rules, QUOTED_JOINED_LABEL)
    if letter.forwarded.strip() and not letter.bounce and not _is_own_mail(block):
        # A resident forwarding a friend's mail is asking for that friend: crisis words in
        # the forwarded text need the same-day callback too (marked as forwarded). So is a
        # staff member forwarding a resident's mail to the mailbox, and so is automatic
        # mail carrying one (an Exchange rule forwarding as an attachment, a school's
        # footer outside it: review rv9a F8); its acknowledgement stays blocked. Our own
        # acknowledgement, alert, escalation or digest is already left out of each forward
        # by the parser (``quotes.without_own_text``; the inline one by ``split_body``).
        _add_urgency(triage, letter.forwarded, rules, "forwarded")
    return triage, block


# The evidence column is the largest thing stored per case (~110 matches a 3 KB mail):
# ``dumps([match_dict(m) ...])`` built a dict per match and encoded it (~180 us a mail). The
# same text is written here from the fields: everything but the offsets is the same on every
# match of a rule with the same words, so it is encoded once (strings through the encoder
# ``json.dumps(ensure_ascii=False)`` itself uses) and kept in a bounded table. A match with
# a field of another type than ``Match`` declares goes the ``dumps`` way, and so does every
# match if a probe written both ways differs (``match_dict`` changed): the text never changes.
_MATCH_FIELDS = attrgetter(
    "rule", "kind", "topic", "pattern", "surface", "start", "end", "discounted", "parts"
)
_MATCH_TEXTS: dict[tuple[Any, ...], tuple[str, str] | None] = {}
_MATCH_TEXTS_MAX = 4096  # distinct (rule, words) pairs kept; the table is emptied beyond
_FAST_MATCHES: list[bool] = []  # [whether the probe passed], filled on first use


def _match_texts(key: tuple[Any, ...]) -> tuple[str, str] | None:
    """The JSON of a match around its offsets (before "start", after "end"), or None when a
    field is not of its declared type."""
    rule, kind, topic, pattern, surface, why = key
    if not (
        all(type(f) is str for f in (rule, kind, pattern, surface))
        and all(f is None or type(f) is str for f in (topic, why))
    ):
        return None
    if len(_MATCH_TEXTS) >= _MATCH_TEXTS_MAX:
        _MATCH_TEXTS.clear()
    topic_text = "null" if topic is None else _json_str(topic)
    why_text = "null" if why is None else _json_str(why)
    texts = (
        f'{{"rule": {_json_str(rule)}, "kind": {_json_str(kind)}, "topic": {topic_text}, '
        f'"pattern": {_json_str(pattern)}, "surface": {_json_str(surface)}, "start": ',
        f', "discounted": {why_text}, "parts": []}}',
    )
    _MATCH_TEXTS[key] = texts
    return texts


def _matches_text(matches: list[Match]) -> str:
    out: list[str] = []
    for m in matches:
        rule, kind, topic, pattern, surface, start, end, why, parts = _MATCH_FIELDS(m)
        key = (rule, kind, topic, pattern, surface, why)
        try:
            texts = _MATCH_TEXTS.get(key) or _match_texts(key)
        except TypeError:  # an unhashable field (never made today): the dumps way below
            texts = None
        if texts is None or parts or type(start) is not int or type(end) is not int:
            out.append(dumps(match_dict(m)))  # signal combinations (parts) and odd types
        else:
            out.append(f'{texts[0]}{start}, "end": {end}{texts[1]}')
    return "[" + ", ".join(out) + "]"


def matches_json(matches: list[Match]) -> str:
    """``dumps([match_dict(m) for m in matches])``: the same text, about twice as fast."""
    if not _FAST_MATCHES:
        probes = [
            Match("r.1", "topic", None, "p", "s", 0, 2),
            Match("u.\"x\"", "urgent", "自殺", "死に\\たい", "死に\u2028\x00", 3, 7, "negated"),
            Match("s.1", "urgent", "x", "p", "s", 1, 5, None, (("死", "死に"),)),
        ]  # fmt: skip
        _FAST_MATCHES.append(_matches_text(probes) == dumps([match_dict(m) for m in probes]))
        if not _FAST_MATCHES[0]:
            log.warning("match_dict changed: evidence is encoded the slow way (same text)")
    if not _FAST_MATCHES[0]:
        return dumps([match_dict(m) for m in matches])
    return _matches_text(matches)


class _Stage:
    """Which stage a message is in, so a quarantine can say where it broke."""

    name = "start"


_MESSAGE_ID_LINE = re.compile(rb"^message-id:\s*(<[^>\s]+>)", re.I | re.M)


def _bounced_ids(raw: bytes, own_id: str | None) -> list[str]:
    """Message-IDs quoted inside a bounce (RFC 3464 returned headers or message)."""
    found = [m.group(1).decode("ascii", "replace") for m in _MESSAGE_ID_LINE.finditer(raw)]
    return [f for f in found if f != own_id]


class _Thread(NamedTuple):
    """What ``_find_thread`` found for a letter."""

    case: Case | None
    answered: Outbox | None  # our outgoing mail the letter answers
    # A staff letter names ``case`` by number but keeps the confirmation code of none of
    # its alerts or escalations: kept with the case for staff, never an acknowledgement.
    unconfirmed: bool = False
    by_code: bool = False  # ``answered`` was found by its confirmation code, not a thread


def _find_thread(
    session: Session,
    letter: Letter,
    raw: bytes,
    mailbox: str,
    *,
    staff: bool = False,
    urgent: bool = False,
) -> _Thread:
    """The case this letter continues, and our outgoing mail it answers, if any.

    Replies name it in In-Reply-To/References; bounces carry our Message-ID inside the
    returned headers; a resident may also type the case number in the subject.

    ``staff``: the letter comes from a staff address of this mailbox (``staff_addresses``).
    Phone and carrier mailers drop In-Reply-To, so a case number in a staff member's
    subject (``Re: 【至急】… C000001 確認コード K7QXA``) names the case whoever its
    resident is. A From address can be forged and case numbers are no secret (the
    resident's acknowledgement names theirs), so the letter answers one of the case's
    alerts or escalations, as a threaded reply would, only when its subject also keeps
    that mail's confirmation code (``ack_code``: only its readers have seen it). Without
    one it is ``unconfirmed`` when the case has alerts (a note for staff, no
    acknowledgement: the escalation goes on), a follow-up when it has none; and when its
    own words are ``urgent``, a follow-up that alerts again (anyone can forge a From).
    The code wins over ``urgent``, as a threaded reply does: it proves the writer read
    the alert, and the on-call person's reply may well repeat the crisis words ("死にたい
    と書いている方ですね、すぐ電話します", or the alert quoted in a way we did not
    recognise); alerting on it again would leave the on-call person unable to acknowledge
    by reply at all, and put their words in the partner's digest as the resident's.
    """
    refs = [r for r in [letter.in_reply_to, *letter.references] if r]
    if letter.bounce:
        refs += _bounced_ids(raw, letter.message_id)
    if refs:
        ours = session.exec(
            select(Outbox).where(Outbox.mailbox == mailbox, col(Outbox.message_id).in_(refs))
        ).first()
        if ours is not None:  # a digest has no case: still ours (staff traffic)
            return _Thread((session.get(Case, ours.case_id) if ours.case_id else None), ours)
        earlier = session.exec(
            select(StoredMessage).where(
                StoredMessage.mailbox == mailbox,
                col(StoredMessage.message_id).in_(refs),
                col(StoredMessage.case_id).is_not(None),
                # Staff mail kept for staff (``_keep_for_staff``) starts no thread: a
                # reply to it continuing its case would put it in the desk's digest.
                StoredMessage.status != "staff",
            )
        ).first()
        if earlier is not None:
            return _Thread(session.get(Case, earlier.case_id), None)
    if staff:
        number, codes = _staff_subject(letter.subject)
        case = session.get(Case, number) if number is not None else None
        if case is not None and case.mailbox == mailbox:
            answered = _latest_alert(session, case, codes)
            if answered is not None:
                return _Thread(case, answered, by_code=True)
            if urgent:
                return _Thread(case, None)
            return _Thread(case, None, unconfirmed=_latest_alert(session, case) is not None)
        return _Thread(None, None)
    if not letter.bounce:
        # Another address keeping an alert's case number and confirmation code: the on-call
        # box forwarded to a personal phone, whose reply comes from there (review rv10a
        # F8). The code proves the writer read that alert, so it answers it as a staff
        # address's would; without the code it is what any other mail is.
        number, codes = _staff_subject(letter.subject)
        case = session.get(Case, number) if number is not None and codes else None
        if case is not None and case.mailbox == mailbox:
            answered = _latest_alert(session, case, codes)
            if answered is not None:
                return _Thread(case, answered, by_code=True)
    m = CASE_NUMBER.search(letter.subject)
    if m:
        case = session.get(Case, int(m.group(1)))
        if (
            case is not None
            and case.mailbox == mailbox
            and letter.from_addr
            and case.sender == letter.from_addr
        ):
            return _Thread(case, None)
    return _Thread(None, None)


# In a staff subject normalised by ``_staff_subject``: the case number (a space before or
# after it may be dropped, so no \b: 相談C000123確認コード), and a confirmation code
# candidate, ``ACK_CODE_LENGTH`` letters or digits standing on their own, one space
# allowed between them (a mailer or a thumb may add one).
_STAFF_CASE_NUMBER = re.compile(r"(?<![A-Z0-9])C([0-9]{6})(?![0-9])")
_CODE_CANDIDATE = re.compile(
    rf"(?<![A-Z0-9])[A-Z0-9](?:\s?[A-Z0-9]){{{ACK_CODE_LENGTH - 1}}}(?![A-Z0-9])"
)
# More candidates than this and the subject confirms nothing: a subject stuffed with
# guesses must not get one guess per word.
_MAX_CODE_CANDIDATES = 3


def _staff_subject(subject: str) -> tuple[int | None, set[str]]:
    """The case number and the confirmation-code candidates in a staff letter's subject.

    Phone mailers keep the subject in a reply but may add ``Re:``/``RE:``/``Fw:``, turn
    letters and digits full-width, or drop or add a space; people type codes in lower
    case. So the subject is read NFKC-normalised and upper-cased, the case number taken
    out, and every free-standing run of ``ACK_CODE_LENGTH`` letters/digits (one space
    allowed inside) is a candidate; too many (``_MAX_CODE_CANDIDATES``) confirm nothing.
    """
    text = unicodedata.normalize("NFKC", subject).upper()
    m = _STAFF_CASE_NUMBER.search(text)
    if m is None:
        return None, set()
    rest = text[: m.start()] + " " + text[m.end() :]
    found = ["".join(c.split()) for c in _CODE_CANDIDATE.findall(rest)]
    return int(m.group(1)), (set(found) if len(found) <= _MAX_CODE_CANDIDATES else set())


def _latest_alert(session: Session, case: Case, codes: set[str] | None = None) -> Outbox | None:
    """The case's latest alert or escalation; with ``codes``, the latest one whose
    confirmation code (``ack_code`` of its Message-ID) is among them: what a staff member
    naming the case without thread headers answers. Any of the case's alerts and
    escalations may be answered (each reader has the code of the mail they got); the
    acknowledgement then covers the case's alerts up to now, as a threaded reply does."""
    rows = session.exec(
        select(Outbox)
        .where(
            Outbox.mailbox == case.mailbox,
            Outbox.case_id == case.id,
            col(Outbox.kind).in_(["alert", "escalation"]),
        )
        .order_by(col(Outbox.created_at).desc(), col(Outbox.id).desc())
    ).all()
    if codes is None:
        return rows[0] if rows else None
    return next((row for row in rows if ack_code(row.message_id) in codes), None)


_ACKED = "acked_senders"  # session.info: sender (lower case) -> received times acked


def _acked_in_session(session: Session) -> dict[str, list[datetime]]:
    """The senders this transaction acknowledged, with the received time of each mail
    acknowledged: the guard's queries run without flushing the batch's pending cases."""
    acked: dict[str, list[datetime]] = session.info.setdefault(_ACKED, {})
    return acked


def _within(times: Collection[datetime], received: datetime, window: timedelta) -> bool:
    """Whether a mail received at ``received`` arrived within ``window`` of any of ``times``."""
    # SQLite hands the stored times back naive (UTC): ``from_db`` makes them aware.
    return any(abs(received - moment) <= window for t in times if (moment := from_db(t)))


def _recent_ack(
    session: Session, mailbox: str, sender: str, received: datetime, window: timedelta
) -> bool:
    """Whether ``sender`` was acknowledged for a mail that arrived within ``window`` of
    this one, received at ``received`` (flood and loop guard).

    Measured between the mails' received times (IMAP INTERNALDATE, the cases'
    ``created_at``), not from the time the worker reads them: after an outage longer than
    the window, a sender's mails in different batches each got an ack, since the earlier
    case was older than ``now - window`` (review rvt F4). So the answer does not depend on
    when, or in which batches, the mail is read: two mails that arrived further apart
    than the window are each acknowledged, as they would have been when read on arrival.

    Senders acknowledged earlier in this transaction are remembered in ``session.info``,
    so the query runs without flushing the batch's pending changes first. Addresses are
    compared without case: Taro@Example.jp and taro@example.jp are one resident.
    """
    if _within(_acked_in_session(session).get(sender.lower(), ()), received, window):
        return True
    with session.no_autoflush:
        row = session.exec(
            select(Case.id).where(
                Case.mailbox == mailbox,
                func.lower(Case.sender) == sender.lower(),
                col(Case.ack_state).in_(["queued", "sent"]),
                Case.created_at >= to_db(received - window),
                Case.created_at <= to_db(received + window),
            )
        ).first()
    return row is not None


def _queue_ack(
    svc: Service,
    session: Session,
    case: Case,
    to: str,
    *,
    in_reply_to: str | None,
    references: list[str],
    received: datetime,
    now: datetime,
) -> None:
    """Queue the resident's acknowledgement of ``case`` (one per case: its outbox key).

    The case's language adds the English block for a mail not in Japanese, and its
    partner's own digest times (if any) decide whether a reply today can be promised.
    """
    partner = svc.directory.get(case.partner)
    ack = render_ack(
        svc.env,
        sender=svc.sender,
        to=to,
        case_number=case.number,
        in_reply_to=in_reply_to,
        references=references,
        received=received,
        calendar=svc.calendar,
        directory=svc.directory,
        now=now,
        language=case.language,
        digest_times=(partner.digest_times or None) if partner else None,
    )
    queue_mail(
        session,
        kind="ack",
        key=f"ack:case:{case.id}",
        case=case,
        to=[to],
        message=ack,
        priority=1,
        now=now,
    )
    case.ack_state = "queued"


def _acknowledge(
    svc: Service,
    session: Session,
    case: Case,
    letter: Letter,
    block: str | None,
    received: datetime,
    now: datetime,
    report: RunReport,
) -> str | None:
    """Queue the acknowledgement of ``case`` unless ``block`` or the flood guard says no.

    Returns why it was not queued ("rate-limited": the sender had one within
    ``ack_window_hours``), or None when it was. One place for a new case and for mail
    read after its placeholder, so both keep the same guard and the same ack state.
    """
    window = timedelta(hours=svc.settings.ack_window_hours)
    if block is None:
        block = _no_ack_reason(svc, received)
    if block is None and _recent_ack(session, case.mailbox, letter.from_addr, received, window):
        block = "rate-limited"
    if block is not None:
        return block
    _queue_ack(
        svc,
        session,
        case,
        letter.from_addr,
        in_reply_to=letter.message_id,
        references=letter.references,
        received=received,
        now=now,
    )
    _acked_in_session(session).setdefault(letter.from_addr.lower(), []).append(received)
    report.acks += 1
    return None


def queue_mail(
    session: Session,
    *,
    kind: str,
    key: str,
    case: Case | None,
    to: list[str],
    message: Any,
    priority: int,
    now: datetime,
    partner: str | None = None,
    mailbox: str = "",
) -> Outbox:
    row = Outbox(
        mailbox=mailbox or (case.mailbox if case else ""),
        kind=kind,
        priority=priority,
        dedupe_key=key,
        case_id=case.id if case else None,
        partner=partner,
        recipients=json.dumps(to),
        message_id=str(message["Message-ID"]),
        content=bytes(message),
        created_at=to_db(now),
        next_attempt_at=to_db(now),
    )
    session.add(row)
    return row


def alert_context(
    svc: Service,
    case: Case,
    received: datetime,
    automatic: str | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """What the on-call alert template (``templates/oncall/urgent_alert.txt.j2``) reads.

    Besides the case's facts, how to word the callback deadline, decided here rather than
    in the staff-editable template: ``office_hours`` (received while the office was open:
    the deadline is that day's closing), ``due_today`` (the deadline falls on the day the
    mail is written, ``now``, so "本日" is true) and ``overdue`` (the mail is written after
    the deadline, e.g. read late after an outage). Why: at night the deadline is the next
    business morning, and a woken on-call person who reads only "期限 月曜 8:30" reads
    "it can wait until Monday", the opposite of why they were woken.
    """
    from intake.escalate import callback_due

    partner = svc.directory.get(case.partner)
    due = callback_due(received, svc.calendar)
    written = now or received
    tz = svc.calendar.tz
    return {
        "number": case.number,
        "received": received,
        "callback_due": due,
        "office_hours": svc.calendar.is_open(received),
        "due_today": due.astimezone(tz).date() == written.astimezone(tz).date(),
        "overdue": written > due,
        "partner_name": partner.name if partner else case.partner,
        "sender": case.sender,
        "phones": json.loads(case.phone or "[]"),
        "reasons": json.loads(case.urgent_reasons),  # dicts: Jinja reads r.surface as r["surface"]
        "automatic": automatic,
        "ack_command": service_command(svc, "ack", case.number),
        "show_command": service_command(svc, "show", case.number),
    }


def service_command(svc: Service, *args: str) -> str:
    """A ``service.py`` command as this worker would run it: its Python, its service.py,
    its config. Why: the alert said ``python service.py ack C…``, which fails in a shell
    at night (no virtualenv, no config; review rv10a F9)."""
    import shlex
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "service.py"
    command = [sys.executable, str(script), *args]
    if svc.settings.path:
        command += ["--config", str(svc.settings.path)]
    return shlex.join(command)


def _queue_alert(
    svc: Service,
    session: Session,
    case: Case,
    msg: StoredMessage,
    received: datetime,
    automatic: str | None,
    now: datetime,
) -> None:
    to = svc.settings.oncall.alert_recipients(svc.calendar.is_open(now))
    message = render_alert(
        svc.env,
        sender=svc.sender,
        to=to,
        case=alert_context(svc, case, received, automatic, now),
        now=now,
        tz=svc.calendar.tz,
        fallback=True,
    )
    queue_mail(
        session,
        kind="alert",
        key=f"alert:message:{msg.id}",
        case=case,
        to=to,
        message=message,
        priority=0,
        now=now,
    )
    record_event(session, "alert-queued", case.id, f"message {msg.id}", at=now)


@dataclass
class _Prepared:
    """A message's pure work (no database): what it says, its triage and its route."""

    letter: Letter
    triage: Triage
    block: str | None
    partner: Partner
    phones: list[str]
    reasons: list[dict[str, Any]]
    staff: bool = False  # from a staff address of this mailbox (``staff_addresses``)


class _Preparing(Protocol):
    """What ``_prepare`` reads: a ``Service``, or a prepare-pool child's lighter context."""

    @property
    def settings(self) -> Settings: ...
    @property
    def rules(self) -> RuleSet: ...
    @property
    def directory(self) -> Directory: ...
    @property
    def sender(self) -> Sender: ...
    @property
    def staff(self) -> frozenset[str]: ...


def _prepare(svc: _Preparing, raw: bytes, stage: _Stage) -> _Prepared:
    """Parse, triage, route and find phone numbers; ``stage`` names the step that raised."""
    stage.name = "parse"
    letter = parse(raw, max_size=svc.settings.max_message_bytes)
    stage.name = "triage"
    staff = svc.staff
    triage, block = decide(letter, svc.rules, svc.sender.address, staff)
    stage.name = "route"
    partner: Partner = assign_partner(triage, svc.directory)
    stage.name = "store"
    phones = find_phones(letter.subject + "\n" + letter.text)
    reasons = [match_dict(m) for m in triage.urgent_reasons]
    is_staff = bool(letter.from_addr) and letter.from_addr.lower() in staff
    return _Prepared(letter, triage, block, partner, phones, reasons, is_staff)


def _attempt(svc: _Preparing, raw: bytes) -> _Prepared | Failed:
    """``_prepare``, or the stage that raised and the exception's class name: the one
    function the batch runs per message, in this process or in a prepare-pool child."""
    stage = _Stage()
    try:
        return _prepare(svc, raw, stage)
    except Exception as exc:
        return Failed(stage.name, type(exc).__name__)


def _opens_case(letter: Letter, staff: bool = False, block: str | None = None) -> bool:
    """Whether ``_find_thread`` is certain to find nothing, so the letter opens a new case.

    Only such letters take the batch's bulk path; a reply, a bounce or a subject with a
    case number needs the database as the messages before it in the batch left it, and
    mail from a staff address (``staff``) or our own mail come back (``block``) is staff
    traffic, which ``handle_message`` sorts.
    """
    return not (
        staff
        or _is_own_mail(block)
        or letter.in_reply_to
        or letter.references
        or letter.bounce
        or CASE_NUMBER.search(letter.subject)
        or _staff_subject(letter.subject)[1]  # a case number and code, maybe full-width
    )


def _fill_message(msg: StoredMessage, letter: Letter) -> None:
    """Copy what the parse found onto the stored row (a new mail, or one read after its
    placeholder): one place, so both keep the same columns."""
    msg.message_id = letter.message_id
    msg.from_addr = letter.from_addr
    msg.subject = letter.subject
    msg.body = letter.body
    msg.new_text = letter.text
    msg.problems = dumps(letter.problems)


def handle_message(
    svc: Service,
    session: Session,
    msg: StoredMessage,
    now: datetime,
    stage: _Stage,
    report: RunReport,
    prepared: _Prepared | None = None,
) -> str:
    """Turn one stored message into a case (or a follow-up); queue its mail. Returns the outcome.

    ``prepared`` is the message's pure work when the batch already did it (see
    ``_prepare``); the stages that fail are named the same either way.
    """
    if prepared is None:
        prepared = _prepare(svc, msg.raw or b"", stage)
    letter, triage, block = prepared.letter, prepared.triage, prepared.block
    partner, phones, reasons = prepared.partner, prepared.phones, prepared.reasons
    _fill_message(msg, letter)

    stage.name = "thread"
    earlier = _same_mail(session, msg, letter)
    if earlier is not None and triage.urgent:
        # Urgent words again after staff closed the case: a person must see them again
        # whatever the Message-ID says (a client reusing one is rare, a missed crisis is
        # not acceptable), so they open a case and alert as new mail would.
        first = session.get(Case, earlier.case_id)
        if first is not None and first.status == "closed":
            earlier = None
    if earlier is not None:
        # The same mail delivered again (an MTA retry after a timeout, an alias copy) or
        # brought back with other bytes (a folder migrated or restored: new headers, a
        # re-encoded body): it is kept and shown with its case, never a second case,
        # acknowledgement, alert or digest line.
        msg.case_id = earlier.case_id
        msg.is_followup = True
        msg.status = "duplicate"
        repeats = f"message {msg.id} repeats message {earlier.id}"
        record_event(session, "duplicate", earlier.case_id, repeats, at=now)
        report.duplicates += 1
        return "duplicate"
    repeated = _quoted_before(session, msg, letter, triage, svc.sender.address, svc.staff)
    if repeated is not None:
        # Its only crisis words are quoted from a mail of the thread that we have read
        # already (a resident replying to their own earlier mail to add a line): they were
        # triaged, and alerted, when that mail came. Not a second alert.
        triage.urgent = False
        triage.urgent_reasons = []
        reasons = []
    # Mail from a staff address is staff traffic (``staff_addresses``); a bounce never is.
    from_staff = prepared.staff and not letter.bounce
    thread = _find_thread(
        session, letter, msg.raw or b"", msg.mailbox, staff=from_staff, urgent=triage.urgent
    )
    case, answered = thread.case, thread.answered
    msg.automatic = block

    stage.name = "store"
    received = from_db(msg.received_at) or now
    if answered is not None and answered.kind != "ack":
        # Staff traffic: a reply or bounce to our own alert, escalation or digest. It is
        # stored (nothing is lost) but opens no case, is never triaged as a consultation
        # (a bounced alert quotes crisis words: alerting on it would loop), gets no
        # acknowledgement and stays out of partner digests.
        msg.status = "processed"
        staff = [a.lower() for a in svc.settings.oncall.everyone]
        if (
            answered.kind in ("alert", "escalation")
            and not letter.bounce
            and block in (None, STAFF_BLOCK)
            and (
                letter.from_addr.lower() in staff
                or thread.by_code
                or ack_code(answered.message_id) in _staff_subject(letter.subject)[1]
            )
            and not AUTO_REPLY_TEXT.match(letter.text)
        ):
            # The on-call person answered the alert: that acknowledges it. An out-of-office
            # reply (block set) does not: it must not stop the escalation.
            kind = "alert-acknowledged"
        elif letter.bounce:
            kind = f"{answered.kind}-bounced"
        elif block is not None:
            kind = f"{answered.kind}-auto-reply"
        else:
            kind = f"{answered.kind}-reply"
        # Names the outbox row answered: ``intake.escalate`` treats a bounced alert or
        # escalation like one the server refused (ERROR, failover to the others), and
        # counts an acknowledgement for the alert it answers (and those before it), not
        # for a newer alert of the same case that happened to be queued in the same batch.
        detail = f"outbox {answered.id}: message {msg.id} from {letter.from_addr}"
        if thread.by_code and not letter.bounce:
            # No thread headers: the subject kept the code of this alert or escalation.
            detail += f", confirmation code of {answered.kind} outbox {answered.id}"
        record_event(
            session,
            kind,
            answered.case_id,
            detail,
            actor=letter.from_addr or "unknown",
            at=now,
        )
        if triage.urgent and not letter.bounce:
            # Its words read as urgent, yet it answers our alert (threaded, or keeping the
            # code only the alert's readers have): staff traffic, not a crisis of its own.
            # Recorded, so whoever handles the case can read what was said (``show``);
            # like every staff reply it opens no case and reaches no digest.
            record_event(
                session,
                STAFF_URGENT_WORDS_EVENT,
                answered.case_id,
                f"message {msg.id} from {letter.from_addr}, answering {answered.kind} "
                f"outbox {answered.id}, has urgent words "
                f"({len(reasons)} rule(s)); not alerted again",
                actor=letter.from_addr or "unknown",
                at=now,
            )
        return "staff"
    if (
        from_staff
        and case is None
        and triage.urgent
        and _quotes_our_mail(session, svc.settings.mailbox.key, letter, triage, now)
    ):
        # A partner's or on-call person's reply from a phone that dropped the thread and
        # re-wrapped the quote without ">": the crisis words are our digest's or alert's
        # (the resident's, already alerted), not the staff member's (review rv9c R3).
        _keep_for_staff(svc, session, msg, letter, block, received, now)
        record_event(
            session,
            STAFF_URGENT_WORDS_EVENT,
            msg.case_id,
            f"message {msg.id} from {letter.from_addr} has urgent words found word for "
            "word in mail we sent to that address; kept for staff, not alerted again",
            actor=letter.from_addr or "unknown",
            at=now,
        )
        return "staff"
    if (from_staff or _is_own_mail(block)) and case is None and not triage.urgent:
        # Also our own mail come back (a digest redirected to the mailbox, an alias of it
        # in digest_to, a loop): kept for staff, never a consultation of its own nor a
        # line in the next digest (review rv9c R1).
        _keep_for_staff(svc, session, msg, letter, block, received, now)
        return "staff"
    if from_staff and case is not None and thread.unconfirmed and not triage.urgent:
        _keep_unconfirmed(session, msg, letter, case, now)
        return "staff"
    # From here a staff address only comes with a case (a follow-up) or with words that are
    # urgent by themselves: those alert as anyone's would (a From can be forged), and
    # ``block`` (STAFF_BLOCK) keeps the acknowledgement away from the staff member.
    if letter.bounce:
        # A bounce is never a crisis itself (it may quote one of our mails).
        triage.urgent = False
        triage.urgent_reasons = []
        reasons = []
    if case is not None and letter.bounce and answered is not None and answered.kind == "ack":
        msg.case_id = case.id
        msg.is_followup = True
        msg.status = "processed"
        if letter.delivery_delayed_only:
            # "Still trying" (RFC 3464 Action: delayed): no failure, and staff must not be
            # told to phone a resident whose acknowledgement may yet arrive. A failure
            # reported later still marks it.
            record_event(session, "ack-delayed", case.id, f"message {msg.id}", at=now)
            return "bounce"
        case.ack_state = "ack_failed"
        record_event(session, "ack-bounced", case.id, f"message {msg.id}", at=now)
        return "bounce"
    if case is None:
        case = Case(
            mailbox=svc.settings.mailbox.key,
            created_at=to_db(received),
            sender=letter.from_addr,
            topic=triage.topic,
            topics=dumps(triage.topics),
            urgent=triage.urgent,
            urgent_reasons=dumps(reasons),
            matches=matches_json(triage.matches),
            language=triage.language,
            needs_human=triage.needs_human,
            partner=partner.id,
            phone=dumps(phones),
        )
        session.add(case)
        session.flush()
        record_event(session, "case-opened", case.id, f"partner {partner.id}", at=now)
        outcome = "case"
        newly_urgent = triage.urgent
    else:
        msg.is_followup = True
        newly_urgent = triage.urgent
        if triage.urgent:
            old = json.loads(case.urgent_reasons)
            case.urgent_reasons = dumps(old + reasons)
            case.urgent = True
        known = json.loads(case.phone or "[]")
        case.phone = dumps(known + [p for p in phones if p not in known])
        case.status = "open" if case.status == "closed" else case.status
        record_event(session, "follow-up", case.id, f"message {msg.id}", at=now)
        outcome = "followup"
    msg.case_id = case.id
    if repeated is not None:
        record_event(
            session,
            QUOTED_BEFORE_EVENT,
            case.id,
            f"message {msg.id} quotes urgent words of message {repeated.id}, read before; "
            "not alerted again",
            at=now,
        )

    stage.name = "compose"
    if outcome == "case":
        block = _acknowledge(svc, session, case, letter, block, received, now, report)
        if block is not None:
            case.ack_state = f"suppressed:{block}"
            report.suppressed[block] = report.suppressed.get(block, 0) + 1
    if newly_urgent:
        _queue_alert(svc, session, case, msg, received, block, now)
        report.alerts += 1
    msg.status = "processed"
    return outcome


def _quoted_before(
    session: Session,
    msg: StoredMessage,
    letter: Letter,
    triage: Triage,
    own_address: str,
    staff: Collection[str] = (),
) -> StoredMessage | None:
    """The earlier mail of this thread, already alerted on, whose lines are the very lines
    that made this letter urgent, when only its quoted words did (``QUOTED_LABEL``); else
    None.

    Why: ``decide`` reads quoted words that are not ours for crisis words (a friend's mail
    passed on by replying to it), but a resident replying to their own earlier mail to add
    a line quotes words we read, and alerted on, when that mail came. Only a mail that
    vouches fully spares the second alert (review rv10b F1, F5): found by the thread's
    Message-IDs (indexed), from the same sender, its case urgent and not closed (urgent
    words after a close alert again, as ``handle_message`` rules), and each crisis line
    one of its lines word for word (quote marks and spaces aside; its subject counts, also
    as an Outlook header line), not merely a piece of one: a second friend's 「もう死にた
    い」 in a thread that spoke of a first friend's still alerts."""
    if not triage.urgent or not all(
        m.rule.startswith(QUOTED_LABEL + ":") for m in triage.urgent_reasons
    ):
        return None
    ids = [i for i in (letter.in_reply_to, *letter.references) if i]
    if not ids:
        return None
    # The very text decide classified; classify_text("", words) analyses "\n" + words,
    # so offsets are one past the words'.
    words = quoted_text_read(letter, own_address, staff)
    wanted: list[list[str]] = []
    for m in triage.urgent_reasons:
        start = max(0, min(m.start - 1, len(words)))
        end = max(start, min(m.end - 1, len(words)))
        first = words.rfind("\n", 0, start) + 1
        last = words.find("\n", end)
        span = words[first : last if last >= 0 else len(words)]
        wanted.append([_line_key(line) for line in span.split("\n")])
    earlier = session.exec(
        select(StoredMessage).where(
            StoredMessage.mailbox == msg.mailbox,
            col(StoredMessage.message_id).in_(ids[-50:]),
            StoredMessage.id != msg.id,
            col(StoredMessage.case_id).is_not(None),
        )
    ).all()
    sender = letter.from_addr.lower()
    for row in earlier:
        if not sender or (row.from_addr or "").lower() != sender:
            continue
        case = session.get(Case, row.case_id)
        if case is None or not case.urgent or case.status == "closed":
            continue
        subject = _line_key(row.subject or "")
        keys = [_line_key(line) for line in (row.body or "").split("\n")]
        keys += [subject, "件名:" + subject, "subject:" + subject]
        if all(_holds_lines(keys, lines) for lines in wanted):
            return row
    return None


_LINE_MARKS = re.compile(r"^[\s|｜》≫>＞]*")


def _line_key(line: str) -> str:
    """A line as ``_quoted_before`` compares it: without quote marks, spaces or case."""
    return "".join(_LINE_MARKS.sub("", line).split()).lower()


def _holds_lines(keys: list[str], lines: list[str]) -> bool:
    """Whether ``lines`` (non-empty keys) stand in ``keys`` one after another."""
    lines = [line for line in lines if line]
    if not lines:
        return False
    width = len(lines)
    return any(keys[k : k + width] == lines for k in range(len(keys) - width + 1))


def _same_mail(session: Session, msg: StoredMessage, letter: Letter) -> StoredMessage | None:
    """An earlier stored message that is this very mail, or None.

    The bytes differ (else the SHA-256 would have matched at storage), but the
    Message-ID, the sender and the words the resident wrote are the same: an MTA
    delivering twice, or a folder migrated or restored with new headers or another
    transfer encoding. The words must match too, so a reused or forged Message-ID
    can never hide a different mail (nor its urgent words) behind an earlier one.
    """
    if not letter.message_id or letter.bounce:
        return None
    return session.exec(
        select(StoredMessage).where(
            StoredMessage.mailbox == msg.mailbox,
            StoredMessage.message_id == letter.message_id,
            StoredMessage.from_addr == letter.from_addr,
            StoredMessage.new_text == letter.text,
            StoredMessage.id != msg.id,
            col(StoredMessage.case_id).is_not(None),
            col(StoredMessage.status).in_(["processed", "quarantined", "staff"]),
        )
    ).first()


QUOTED_LINE_MIN = 8  # characters: a shorter line could be the staff member's own words
QUOTE_LOOKBACK = timedelta(days=14)


def _squeezed(text: str) -> str:
    return "".join(text.split())


def _quotes_our_mail(
    session: Session, mailbox: str, letter: Letter, triage: Triage, now: datetime
) -> bool:
    """Whether every line of a staff member's mail that holds urgent words is the rest of
    a quoted line of a digest, alert or escalation we sent to that address lately.

    Why: a phone reply to a digest that drops In-Reply-To and re-wraps the quoted lines,
    leaving ">" off the continuations, put the resident's crisis words into the partner's
    own text: a second alert, and a new case "from" the partner carrying the resident's
    words (review rv9c R3). Such a line follows a ">" line, and the two together are word
    for word part of our mail. A line the staff member wrote is not: a crisis they report
    in words that also stand in a digest (もう死にたいです。) is no continuation of the
    quoted line above it (review rv9d F2)."""
    import email
    from email import policy

    # The lines of the body as sent (the split moved the unmarked rest of a re-wrapped
    # quoted line into ``text``, away from the ">" line it continues).
    lines = letter.body.splitlines()
    own = set(letter.text.splitlines())
    pairs: set[str] = set()
    for reason in triage.urgent_reasons:
        found = [
            i
            for i, line in enumerate(lines)
            if reason.surface in line and line in own and not quote_depth(line)[0]
        ]
        if not found:
            return False  # the words are in the subject or spread over lines: not a quote
        for i in found:
            # back over the unmarked rest of a re-wrapped line to the ">" line it began on
            j = i - 1
            while j >= 0 and lines[j].strip() and not quote_depth(lines[j])[0]:
                j -= 1
            depth, bare = quote_depth(lines[j]) if j >= 0 else (0, "")
            if not depth:
                return False  # not the unmarked rest of a quoted line
            pairs.add(_squeezed(bare + "".join(lines[j + 1 : i + 1])))
    if any(len(pair) < QUOTED_LINE_MIN for pair in pairs):
        return False
    address = letter.from_addr.lower()
    rows = session.exec(
        select(Outbox).where(
            Outbox.mailbox == mailbox,
            col(Outbox.kind).in_(["digest", "alert", "escalation"]),
            col(Outbox.created_at) >= to_db(now - QUOTE_LOOKBACK),
        )
    ).all()
    sent: list[str] = []
    for row in rows:
        try:
            recipients = {str(r).lower() for r in json.loads(row.recipients or "[]")}
        except ValueError:
            continue
        if address not in recipients or not row.content:
            continue
        message = email.message_from_bytes(row.content, policy=policy.default)
        body = message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
        if body is not None:
            sent.append(_squeezed(body.get_content()))
    return bool(sent) and all(any(pair in text for text in sent) for pair in pairs)


def _keep_for_staff(
    svc: Service,
    session: Session,
    msg: StoredMessage,
    letter: Letter,
    block: str | None,
    received: datetime,
    now: datetime,
) -> None:
    """Staff mail that neither continues a thread nor names a case of this mailbox, and
    whose own words are not urgent (a note, a question, a reply whose mailer dropped both
    the thread and the case number): kept for a person to read, never a consultation.

    It must not be lost, so it gets what other mail that needs a human gets: a case at the
    general desk flagged ``needs_human`` (listed by ``cases``, read with ``show``), with
    the message in it. But it is no resident's: no acknowledgement (it would go to the
    staff member), no alert, and the message's status ``staff`` keeps it out of every
    digest (digests list processed and quarantined messages), so no partner reads it.
    """
    case = Case(
        mailbox=svc.settings.mailbox.key,
        created_at=to_db(received),
        sender=letter.from_addr,
        needs_human=True,
        partner=svc.directory.general_desk.id,
        ack_state=f"suppressed:{block or STAFF_BLOCK}",
    )
    session.add(case)
    session.flush()
    msg.case_id = case.id
    msg.status = "staff"
    record_event(
        session,
        "staff-mail",
        case.id,
        f"message {msg.id} from {letter.from_addr}: a staff address, no case number; "
        "for staff to read (no acknowledgement, no digest)",
        actor=letter.from_addr,
        at=now,
    )
    log.warning(
        "mail from a staff address names no case; kept for staff", extra={"case": case.number}
    )


def _keep_unconfirmed(
    session: Session, msg: StoredMessage, letter: Letter, case: Case, now: datetime
) -> None:
    """Staff mail naming an alerted case without the confirmation code of any of its
    alerts or escalations (``_find_thread``): perhaps the on-call person's reply whose
    mailer cut the subject, perhaps a forged From. It must not acknowledge (that would
    stop the escalation of someone in crisis), and must not be lost.

    So it is kept with the case it names, where whoever handles the case reads it
    (``show``), with status ``staff``: out of every digest (a forged "already handled"
    must not reach a partner as the case's news) and no thread for later mail to follow.
    No acknowledgement, no alert; the escalation goes on and reaches the real on-call
    person again, whose reply to it (threaded, or keeping the code) acknowledges.
    """
    msg.case_id = case.id
    msg.is_followup = True
    msg.status = "staff"
    record_event(
        session,
        "staff-mail",
        case.id,
        f"message {msg.id} from {letter.from_addr}: a staff address naming the case without "
        "the confirmation code of its alert; not an acknowledgement (no digest)",
        actor=letter.from_addr,
        at=now,
    )
    log.warning(
        "mail from a staff address names an alerted case without its confirmation code; "
        "kept with the case, the alert stays unacknowledged",
        extra={"case": case.number},
    )


_FROM = re.compile(rb"^From:[^\r\n]*?([\w.!#$%&'*+/=?^`{|}~-]+@[\w.-]+)", re.I | re.M)
_AUTO_HINT = re.compile(
    rb"^(auto-submitted:\s*(?!no\b)|precedence:\s*(bulk|junk|list)|list-id:)", re.I | re.M
)


def quarantine(
    svc: Service, session: Session, msg: StoredMessage, stage: str, error: str, now: datetime
) -> None:
    """A message that broke a stage becomes a case for a human, with where it broke."""
    raw = msg.raw or b""
    head = raw[:65536].split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    m = _FROM.search(head)
    sender = m.group(1).decode("ascii", "replace").lower() if m else ""
    desk = svc.directory.general_desk
    # Dated by the mail's arrival like every case: the flood guard compares arrival times
    # (a quarantined case dated by the read after an outage let the same resident's next
    # mail be acknowledged a second time).
    received = from_db(msg.received_at) or now
    case = Case(
        mailbox=svc.settings.mailbox.key,
        created_at=to_db(received),
        sender=sender,
        needs_human=True,
        partner=desk.id,
        ack_state="pending",
    )
    session.add(case)
    session.flush()
    msg.status = "quarantined"
    msg.stage_error = f"{stage}:{error}"
    msg.case_id = case.id
    msg.from_addr = sender
    record_event(session, "quarantined", case.id, f"message {msg.id} at {stage}: {error}", at=now)
    log.error("message quarantined", extra={"message_row": msg.id, "stage": stage, "error": error})
    # Still acknowledge a person: a crash may delay an acknowledgement, never lose it.
    window = timedelta(hours=svc.settings.ack_window_hours)
    no_ack = _no_ack_reason(svc, received, msg.uid)
    if no_ack is not None:
        case.ack_state = f"suppressed:{no_ack}"
    elif sender and _recent_ack(session, case.mailbox, sender, received, window):
        case.ack_state = "suppressed:rate-limited"
    elif sender and not _AUTO_HINT.search(head) and sender != svc.sender.address.lower():
        _queue_ack(
            svc, session, case, sender, in_reply_to=None, references=[], received=received, now=now
        )
        _acked_in_session(session).setdefault(sender, []).append(received)
    else:
        case.ack_state = "suppressed:quarantined"
    # Nobody could read it, so nobody can say it is not urgent: the on-call person is told
    # at once (the alert says the mail could not be read). A failure here must not undo
    # the quarantine itself, so it is caught and logged.
    try:
        with session.begin_nested():
            _queue_alert(
                svc, session, case, msg, from_db(msg.received_at) or now, "quarantined", now
            )
    except Exception as exc:
        log.error("alert for a quarantined message failed", extra={"error": type(exc).__name__})


def ingest_batch(
    svc: Service,
    items: list[tuple[int, bytes, datetime | None]],
    uidvalidity: int,
    high_uid: int,
    now: datetime,
    report: RunReport,
    ahead: Ticket | None = None,
) -> None:
    """Store, then process, one batch of fetched mail; advance the cursor with the cases.

    ``ahead``: the batch's raw messages already handed to the prepare pool (by
    ``process_new_mail``, while the batch before was written); used for the normal
    path only, and every message it lacks is prepared here.

    Transaction 1 writes the raw bytes (one multi-row INSERT) and counts an attempt.
    Transaction 2 is the normal path: the whole batch in one transaction without a
    SAVEPOINT per message (``_process_batch``). If it fails as a whole, nothing of it
    was committed and the batch is redone one message per transaction (``_recover``),
    as it is after a crash, so one bad message still cannot hold back the others.
    """
    key = svc.settings.mailbox.key
    hashes = {hashlib.sha256(raw).hexdigest(): (uid, raw, when) for uid, raw, when in items}
    table = _MESSAGES
    with session_scope(svc.engine) as session:
        conn = session.connection()
        known = {
            row.sha256: row
            for row in conn.execute(
                core_select(table.c.id, table.c.sha256, table.c.status, table.c.attempts).where(
                    table.c.mailbox == key, table.c.sha256.in_(list(hashes))
                )
            )
        }
        entries: list[tuple[str, Any]] = []
        for sha in hashes:
            row = known.get(sha)
            if row is None:
                report.stored += 1
            elif row.status != "received":
                report.duplicates += 1
                continue
            entries.append((sha, row))
        # After a crash (a message already tried), go one message per transaction, so only
        # the message that kills the process collects attempts and reaches quarantine; the
        # others in its batch are processed normally. Otherwise: one transaction per batch.
        recovering = any(row is not None and row.attempts > 0 for _sha, row in entries)
        fresh = [
            _message_row(key, uidvalidity, sha, *hashes[sha], 0 if recovering else 1, now)
            for sha, row in entries
            if row is None
        ]
        new_ids = iter(
            [
                r[0]
                for r in conn.execute(
                    insert(table).returning(table.c.id, sort_by_parameter_order=True), fresh
                )
            ]
            if fresh
            else []
        )
        old_ids = [row.id for _sha, row in entries if row is not None]
        if old_ids and not recovering:
            conn.execute(
                update(table).where(table.c.id.in_(old_ids)).values(attempts=table.c.attempts + 1)
            )
        pending: list[int] = [next(new_ids) if row is None else row.id for _sha, row in entries]
    if recovering:
        if ahead is not None and svc.pool is not None:
            svc.pool.discard(ahead)
        _recover(svc, pending, uidvalidity, high_uid, now, report)
        return
    part = RunReport()
    try:
        # The pure work first, outside any transaction: the raw bytes are in memory, and
        # a transaction open during ~100 x 2.5 ms of parsing would hold SQLite's write
        # lock that long (or, reading first, see its snapshot go stale; ``_process_batch``).
        raws = [hashes[sha][1] for sha, _row in entries]
        outcomes = _prepare_batch(svc, list(zip(pending, raws, strict=True)), ahead)
        with session_scope(svc.engine) as session:
            _process_batch(svc, session, pending, now, part, outcomes)
            _advance(session, key, uidvalidity, high_uid, now)
    except Exception as exc:
        log.warning(
            "batch failed as a whole; redoing it one message per transaction",
            extra={"error": type(exc).__name__, "messages": len(pending)},
        )
        _recover(svc, pending, uidvalidity, high_uid, now, report)
        return
    _merge(report, part)


def _message_row(
    key: str,
    uidvalidity: int,
    sha: str,
    uid: int,
    raw: bytes,
    when: datetime | None,
    attempts: int,
    now: datetime,
) -> dict[str, Any]:
    """A new ``message`` row as the bulk INSERT writes it (every column, no ORM defaults)."""
    return {
        "mailbox": key, "uidvalidity": uidvalidity, "uid": uid, "sha256": sha, "raw": raw,
        "size": len(raw), "received_at": to_db(when or now), "message_id": None,
        "from_addr": "", "subject": "", "body": "", "new_text": "", "problems": "[]",
        "status": "received", "attempts": attempts, "stage_error": None, "automatic": None,
        "case_id": None, "is_followup": False,
    }  # fmt: skip


def _merge(report: RunReport, part: RunReport) -> None:
    """Add a committed batch's outcome counts to the run's report."""
    report.cases += part.cases
    report.followups += part.followups
    report.quarantined += part.quarantined
    report.acks += part.acks
    report.alerts += part.alerts
    for why, n in part.suppressed.items():
        report.suppressed[why] = report.suppressed.get(why, 0) + n


def _recover(
    svc: Service,
    pending: list[int],
    uidvalidity: int,
    high_uid: int,
    now: datetime,
    report: RunReport,
) -> None:
    """One message per transaction, an attempt counted (and committed) before each try."""
    for row_id in pending:
        with session_scope(svc.engine) as session:
            msg = session.get(StoredMessage, row_id)
            if msg is None or msg.status != "received":
                continue
            msg.attempts += 1
        with session_scope(svc.engine) as session:
            msg = session.get(StoredMessage, row_id, with_for_update={"skip_locked": True})
            if msg is not None:
                _process_one(svc, session, msg, now, report)
    with session_scope(svc.engine) as session:
        _advance(session, svc.settings.mailbox.key, uidvalidity, high_uid, now)


def _prepare_batch(
    svc: Service, todo: list[tuple[int, bytes]], ahead: Ticket | None = None
) -> dict[int, _Prepared | Failed]:
    """The pure work of a batch's stored messages (row id, raw bytes), before transaction 2.

    In this process, or for a large batch (or one read ahead, ``ahead``) in the prepare
    pool. ``_prepare`` is a function of the raw bytes alone, so an outcome found by its
    bytes is the one computing it here would give; a message the ticket lacks is prepared
    here. A ``Failed`` that came from a pool child is tried once more here: a child's
    MemoryError or broken state must not cost the mail its triage (a failure in this
    process is final, as it always was).
    """
    pool = svc.pool
    if pool is None or (ahead is None and len(todo) < POOL_MIN_BATCH):
        return {row_id: _attempt(svc, raw) for row_id, raw in todo}
    here: set[bytes] = set()  # computed in this process (stolen chunks, fallbacks)

    def local(raw: bytes) -> _Prepared | Failed:
        here.add(raw)
        return _attempt(svc, raw)

    if ahead is not None:
        done = pool.collect(ahead, local, wanted={raw for _id, raw in todo})
        pairs = zip(ahead.raws, done, strict=True)
    else:
        # The pure work of a large batch in the pool's processes, in order; every write
        # stays in this process, in mailbox order, exactly as without the pool.
        raws = [raw for _id, raw in todo]
        pairs = zip(raws, pool.prepare(raws, local), strict=True)
    by_raw = {raw: outcome for raw, outcome in pairs if outcome is not None}
    outcomes: dict[int, _Prepared | Failed] = {}
    for row_id, raw in todo:
        outcome = by_raw.get(raw)
        if outcome is None:
            outcome = local(raw)
        elif isinstance(outcome, Failed) and raw not in here:
            log.warning(
                "a message failed in a prepare-pool child; trying it once in this process",
                extra={"message_row": row_id, "stage": outcome.stage, "error": outcome.error},
            )
            outcome = _attempt(svc, raw)
        outcomes[row_id] = outcome
    return outcomes


def _process_batch(
    svc: Service,
    session: Session,
    pending: list[int],
    now: datetime,
    report: RunReport,
    outcomes: dict[int, _Prepared | Failed] | None = None,
) -> None:
    """The normal path: every stored message of the batch, in one transaction.

    ``outcomes``: the pure work already done (``_prepare_batch``); a message it lacks is
    prepared here. Letters that open a new case (most of them) are written in a few
    multi-row statements per run of such letters (``_open_cases``). Any other letter
    (a reply, a bounce, a case number in the subject, one that failed a stage, one that
    crashed the process before) first has the run before it written, then goes through
    ``_process_one``, so it sees the database exactly as the messages before it left it.
    """
    table = _MESSAGES
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        # Take the write lock before the first read. With the deferred BEGIN in WAL mode a
        # transaction that reads first and writes later fails at once ("database is
        # locked", SQLITE_BUSY_SNAPSHOT, busy_timeout not applied) when any other
        # connection (the outbox thread, a job, a staff command) committed in between,
        # and the batch would be redone message by message. A statement that writes takes
        # the RESERVED lock even when it changes no row (checked on SQLite 3.40), so from
        # here other writers wait in busy_timeout and this snapshot cannot go stale.
        conn.exec_driver_sql(f"UPDATE {table.name} SET attempts = attempts WHERE 0 = 1")
    rows = {
        row.id: row
        # Row locks (PostgreSQL): a second worker that lost the mailbox lock mid-batch
        # skips rows this one is processing.
        for row in conn.execute(
            core_select(
                table.c.id, table.c.raw, table.c.status, table.c.attempts, table.c.received_at
            )
            .where(table.c.id.in_(pending))
            .with_for_update(skip_locked=True)
        )
    }
    outcomes = outcomes or {}
    run: list[tuple[int, _Prepared, datetime]] = []
    for row_id in pending:
        row = rows.get(row_id)
        if row is None or row.status != "received":
            continue
        prepared: _Prepared | None = None
        failed: tuple[str, str] | None = None
        if row.attempts <= MAX_ATTEMPTS:
            outcome = outcomes.get(row_id)
            if outcome is None:
                outcome = _attempt(svc, row.raw or b"")
            if isinstance(outcome, Failed):
                failed = (outcome.stage, outcome.error)
            else:
                prepared = outcome
                if _opens_case(prepared.letter, prepared.staff, prepared.block):
                    run.append((row_id, prepared, from_db(row.received_at) or now))
                    continue
        _open_cases(svc, session, run, now, report)
        run = []
        msg = session.get(StoredMessage, row_id)
        assert msg is not None  # locked above
        if failed is not None:
            quarantine(svc, session, msg, failed[0], failed[1], now)
            report.quarantined += 1
        else:
            _process_one(svc, session, msg, now, report, prepared)
    _open_cases(svc, session, run, now, report)


def _open_cases(
    svc: Service,
    session: Session,
    run: list[tuple[int, _Prepared, datetime]],
    now: datetime,
    report: RunReport,
) -> None:
    """Write a run of letters that open new cases; a repeat of a stored mail goes singly.

    One query for the run's Message-IDs finds the letters that may repeat a mail already
    stored (or one earlier in the run): those go through ``handle_message`` (its
    ``_same_mail`` decides, words and all), after everything before them is written.
    """
    if not run:
        return
    ids = {p.letter.message_id for _, p, _ in run if p.letter.message_id}
    known: set[str] = set()
    if ids:
        found = session.exec(
            select(StoredMessage.message_id).where(
                StoredMessage.mailbox == svc.settings.mailbox.key,
                col(StoredMessage.message_id).in_(ids),
                col(StoredMessage.case_id).is_not(None),
            )
        ).all()
        known = {mid for mid in found if mid}
    if not known and len(ids) == sum(1 for _, p, _ in run if p.letter.message_id):
        _open_new_cases(svc, session, run, now, report)  # the common case: nothing repeats
        return
    seen: set[str] = set()
    segment: list[tuple[int, _Prepared, datetime]] = []
    for item in run:
        mid = item[1].letter.message_id
        if mid and (mid in known or mid in seen):
            _open_new_cases(svc, session, segment, now, report)
            segment = []
            msg = session.get(StoredMessage, item[0])
            assert msg is not None  # locked by the batch
            _process_one(svc, session, msg, now, report, item[1])
        else:
            segment.append(item)
        if mid:
            seen.add(mid)
    _open_new_cases(svc, session, segment, now, report)


def _open_new_cases(
    svc: Service,
    session: Session,
    run: list[tuple[int, _Prepared, datetime]],
    now: datetime,
    report: RunReport,
) -> None:
    """A case per letter of ``run``, with its events, acknowledgement and alert, in a few
    multi-row statements (what ``handle_message`` does for a new case, one at a time).

    The flood guard is one query for all the run's senders plus the senders acknowledged
    earlier in this transaction; case numbers come back from the INSERT (RETURNING).
    """
    if not run:
        return
    key = svc.settings.mailbox.key
    conn = session.connection()
    acked = _acked_in_session(session)
    window = timedelta(hours=svc.settings.ack_window_hours)
    wanting = [(p.letter.from_addr.lower(), r) for _id, p, r in run if p.block is None]
    earlier: dict[str, list[datetime]] = {}
    if wanting:
        # As ``_recent_ack``: against each mail's received time. One query for the run,
        # its senders' acknowledged cases from the first mail's time - window to the
        # last one's + window; each mail then looks at those of its own window.
        case_t = _CASES
        for sender, created in conn.execute(
            core_select(func.lower(case_t.c.sender), case_t.c.created_at).where(
                case_t.c.mailbox == key,
                func.lower(case_t.c.sender).in_({sender for sender, _r in wanting}),
                case_t.c.ack_state.in_(["queued", "sent"]),
                case_t.c.created_at >= to_db(min(r for _s, r in wanting) - window),
                case_t.c.created_at <= to_db(max(r for _s, r in wanting) + window),
            )
        ):
            earlier.setdefault(sender, []).append(created)
    blocks: list[str | None] = []
    cases: list[dict[str, Any]] = []
    for _row_id, p, received in run:
        sender = p.letter.from_addr
        block = p.block
        if block is None:
            block = _no_ack_reason(svc, received)
        if block is None and (
            _within(earlier.get(sender.lower(), ()), received, window)
            or _within(acked.get(sender.lower(), ()), received, window)
        ):
            block = "rate-limited"
        if block is None:
            acked.setdefault(sender.lower(), []).append(received)
        blocks.append(block)
        cases.append(
            {
                "mailbox": key, "created_at": to_db(received), "sender": sender,
                "topic": p.triage.topic, "topics": dumps(p.triage.topics),
                "urgent": p.triage.urgent, "urgent_reasons": dumps(p.reasons),
                "matches": matches_json(p.triage.matches),
                "language": p.triage.language, "needs_human": p.triage.needs_human,
                "partner": p.partner.id, "phone": dumps(p.phones), "status": "new",
                "ack_state": "queued" if block is None else f"suppressed:{block}",
            }
        )  # fmt: skip
    case_table = _CASES
    ids = [
        r[0]
        for r in conn.execute(
            insert(case_table).returning(case_table.c.id, sort_by_parameter_order=True), cases
        )
    ]
    events: list[dict[str, Any]] = []
    outbox: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    at = to_db(now)
    for (row_id, p, received), block, values, case_id in zip(run, blocks, cases, ids, strict=True):
        letter = p.letter
        events.append(_event_row("case-opened", case_id, f"partner {p.partner.id}", at))
        if block is None:
            message_id, content = ack_bytes(
                svc.env,
                sender=svc.sender,
                to=letter.from_addr,
                case_number=f"C{case_id:06d}",
                in_reply_to=letter.message_id,
                references=letter.references,
                received=received,
                calendar=svc.calendar,
                directory=svc.directory,
                now=now,
                language=p.triage.language,
                digest_times=p.partner.digest_times or None,
            )
            outbox.append(
                _outbox_row(
                    mailbox=key, kind="ack", key=f"ack:case:{case_id}", case_id=case_id,
                    to=[letter.from_addr], message_id=message_id, content=content,
                    priority=1, now=now,
                )
            )  # fmt: skip
            report.acks += 1
        else:
            report.suppressed[block] = report.suppressed.get(block, 0) + 1
        if p.triage.urgent:
            case = Case(id=case_id, **values)  # transient: alert_context reads it
            to = svc.settings.oncall.alert_recipients(svc.calendar.is_open(now))
            alert = render_alert(
                svc.env,
                sender=svc.sender,
                to=to,
                case=alert_context(svc, case, received, block, now),
                now=now,
                tz=svc.calendar.tz,
                fallback=True,
            )
            outbox.append(
                _outbox_row(
                    mailbox=key, kind="alert", key=f"alert:message:{row_id}", case_id=case_id,
                    to=to, message_id=str(alert["Message-ID"]), content=bytes(alert),
                    priority=0, now=now,
                )
            )  # fmt: skip
            events.append(_event_row("alert-queued", case_id, f"message {row_id}", at))
            report.alerts += 1
        messages.append(
            {
                "_id": row_id, "message_id": letter.message_id, "from_addr": letter.from_addr,
                "subject": letter.subject, "body": letter.body, "new_text": letter.text,
                "problems": dumps(letter.problems), "automatic": p.block, "case_id": case_id,
                "status": "processed",
            }
        )  # fmt: skip
        report.cases += 1
    if outbox:
        conn.execute(insert(_OUTBOX), outbox)
    conn.execute(insert(_EVENTS), events)
    table = _MESSAGES
    conn.execute(
        update(table)
        .where(table.c.id == bindparam("_id"))
        .values({name: bindparam(name) for name in messages[0] if name != "_id"}),
        messages,
    )


def _outbox_row(
    *,
    mailbox: str,
    kind: str,
    key: str,
    case_id: int | None,
    to: list[str],
    message_id: str,
    content: bytes,
    priority: int,
    now: datetime,
    partner: str | None = None,
) -> dict[str, Any]:
    """An ``outbox`` row as ``queue_mail`` writes it, for a multi-row INSERT."""
    return {
        "mailbox": mailbox, "kind": kind, "priority": priority, "dedupe_key": key,
        "case_id": case_id, "partner": partner, "recipients": json.dumps(to),
        "message_id": message_id, "content": content, "created_at": to_db(now),
        "status": "queued", "claimed_by": None, "claimed_at": None, "attempts": 0,
        "next_attempt_at": to_db(now), "last_error": None, "sent_at": None,
        "smtp_response": None,
    }  # fmt: skip


def _event_row(kind: str, case_id: int | None, detail: str, at: datetime) -> dict[str, Any]:
    """An ``event`` row as ``record_event`` writes it (the pipeline's clock, actor service)."""
    return {"at": at, "case_id": case_id, "kind": kind, "detail": detail, "actor": "service"}


def _process_one(
    svc: Service,
    session: Session,
    msg: StoredMessage,
    now: datetime,
    report: RunReport,
    prepared: _Prepared | None = None,
) -> None:
    """One stored message in its own SAVEPOINT: a case, or a quarantine when a stage fails."""
    if msg.status != "received":
        return
    if msg.attempts > MAX_ATTEMPTS:
        quarantine(svc, session, msg, "repeated-crash", f"{msg.attempts - 1} attempts", now)
        report.quarantined += 1
        return
    stage = _Stage()
    # The senders acknowledged so far in this transaction: a failure rolls back the
    # SAVEPOINT, so an acknowledgement queued in it must be forgotten too, or the
    # quarantine below would take the resident for acknowledged and send nothing.
    acked = {sender: list(times) for sender, times in _acked_in_session(session).items()}
    try:
        with session.begin_nested():
            outcome = handle_message(svc, session, msg, now, stage, report, prepared)
    except Exception as exc:
        session.info[_ACKED] = acked
        session.refresh(msg)
        quarantine(svc, session, msg, stage.name, type(exc).__name__, now)
        report.quarantined += 1
        return
    if outcome == "case":
        report.cases += 1
    elif outcome == "followup":
        report.followups += 1


def _advance(session: Session, key: str, uidvalidity: int, high_uid: int, now: datetime) -> None:
    """Move the IMAP cursor, in the transaction that committed the batch's cases."""
    cursor = get_cursor(session, key)
    if cursor.uidvalidity == uidvalidity and high_uid > cursor.last_uid:
        cursor.last_uid = high_uid
        cursor.updated_at = to_db(now)


# A mail the server cannot hand over (FETCH answered NO, or the connection dropped on it)
# becomes a placeholder (and the cursor passes it) only once both hold: it failed on this
# many polls, and for this long since its first counted failure. Why both: the worker
# polls about every second in IDLE, so a count alone turned a few seconds of server
# trouble (storage or NFS hiccup, a maildir lock held: ``NO [UNAVAILABLE]``/``[INUSE]``)
# into "could not be read" alerts for good mail; and Dovecot drops the connection for a
# damaged file as it does for other trouble, so the error alone cannot tell a lasting
# failure from a passing one: only time can. 15 minutes holds an unreadable mail's
# "could not be read" alert back that long (the other mail is not held up).
MAX_FETCH_FAILURES = 3
UNREADABLE_AFTER = timedelta(minutes=15)
# The ``sha256`` of the row that counts those failures (one per UIDVALIDITY + UID; no
# content hash can look like it); it becomes the placeholder's row.
UNFETCHABLE = "unfetchable:"
# A placeholder whose mail could be fetched later on (``_sweep``); never tried again.
READ_LATER = "read-later:"
# A placeholder whose mail left the folder, or stayed unreadable for ``GIVE_UP_AFTER``:
# never fetched again (its case is all there is).
GIVEN_UP = "given-up:"
GIVE_UP_AFTER = timedelta(days=30)
# How often a connection looks for stored-but-unprocessed rows and unreadable mail.
SWEEP_EVERY = timedelta(minutes=10)


def _unfetchable_key(uidvalidity: int, uid: int) -> str:
    return f"{UNFETCHABLE}{uidvalidity}:{uid}"


def _count_fetch_attempt(
    svc: Service, uidvalidity: int, uid: int, now: datetime
) -> tuple[int, datetime] | None:
    """Count one more try at fetching ``uid`` alone, committed *before* the try, so that
    neither a restart nor a crash during the FETCH itself starts the count again; returns
    the count and the time of the first counted try, or None when a placeholder already
    stands for this mail."""
    key = svc.settings.mailbox.key
    sha = _unfetchable_key(uidvalidity, uid)
    with session_scope(svc.engine) as session:
        row = session.exec(
            select(StoredMessage).where(StoredMessage.mailbox == key, StoredMessage.sha256 == sha)
        ).first()
        if row is None:
            row = StoredMessage(
                mailbox=key,
                uidvalidity=uidvalidity,
                uid=uid,
                sha256=sha,
                raw=None,
                received_at=to_db(now),
                status="unfetchable",
                attempts=0,
            )
            session.add(row)
        elif row.status != "unfetchable":
            return None
        row.attempts += 1
        return row.attempts, from_db(row.received_at) or now


def _uncount_fetch_attempt(svc: Service, uidvalidity: int, uid: int) -> None:
    """Give back the try counted before a FETCH whose failure says nothing about the mail
    (a temporary answer, or the whole batch refused alike); a count back at zero goes, so
    its first failure is not dated from a try that did not count."""
    with session_scope(svc.engine) as session:
        row = session.exec(
            select(StoredMessage).where(
                StoredMessage.mailbox == svc.settings.mailbox.key,
                StoredMessage.sha256 == _unfetchable_key(uidvalidity, uid),
                StoredMessage.status == "unfetchable",
            )
        ).first()
        if row is None:
            return
        row.attempts -= 1
        if row.attempts <= 0:
            session.delete(row)


def _temporary_answer(exc: IMAPClientError) -> bool:
    """The server answered that it cannot do it *for now* (``NO [UNAVAILABLE]``, ``[INUSE]``,
    "Temporary"): not the mail's fault, so not counted. A dropped connection is counted
    all the same (Dovecot drops it for a damaged mail file)."""
    return not isinstance(exc, IMAPClientAbortError) and _transient(exc)


# At most one poll's FETCH failures a minute are logged at WARNING (the rest at DEBUG).
FETCH_WARN_EVERY = timedelta(minutes=1)


def _fetch_log(mailbox: Mailbox, now: datetime) -> Callable[..., None]:
    """WARNING for the first poll with FETCH failures on this connection and then once a
    minute, DEBUG in between. Why: a mail is now retried for ``UNREADABLE_AFTER`` and a
    temporary answer for as long as it lasts, at every poll (about every second in IDLE);
    a WARNING each time would be thousands of lines for one mail."""
    if mailbox.fetch_warned_at is None or now - mailbox.fetch_warned_at >= FETCH_WARN_EVERY:
        mailbox.fetch_warned_at = now
    return log.warning if mailbox.fetch_warned_at == now else log.debug


def _signature(exc: BaseException) -> str:
    """An error as compared for "the whole batch failed alike": its type and words without
    digits (Dovecot stamps a time into some answers)."""
    return f"{type(exc).__name__}:{re.sub(r'[0-9]', '', str(exc))}"


def _forget_fetch_attempts(svc: Service, uidvalidity: int, uid: int) -> None:
    """The mail was fetched after all: its failure count goes."""
    with session_scope(svc.engine) as session:
        session.connection().execute(
            _MESSAGES.delete().where(
                _MESSAGES.c.mailbox == svc.settings.mailbox.key,
                _MESSAGES.c.sha256 == _unfetchable_key(uidvalidity, uid),
                _MESSAGES.c.status == "unfetchable",
            )
        )


def _store_unreadable(
    svc: Service,
    mailbox: Mailbox,
    uidvalidity: int,
    uid: int,
    error: str,
    now: datetime,
    report: RunReport,
) -> None:
    """A mail the server would not hand over on ``MAX_FETCH_FAILURES`` polls: its counter
    row becomes a placeholder (its header block when the server gives that, else no
    bytes), quarantined as quarantine does a mail that broke a stage: a ``needs_human``
    case, an acknowledgement when a sender can be read, and the on-call alert that says
    the mail could not be read. The mail still reaches a person; the cursor may pass it."""
    head = mailbox.header(uid) or b""
    with session_scope(svc.engine) as session:
        msg = session.exec(
            select(StoredMessage).where(
                StoredMessage.mailbox == svc.settings.mailbox.key,
                StoredMessage.sha256 == _unfetchable_key(uidvalidity, uid),
            )
        ).one()
        attempts = msg.attempts
        msg.raw = head
        msg.size = len(head)
        msg.status = "received"
        quarantine(svc, session, msg, "fetch", error, now)
    report.quarantined += 1
    log.error(
        "mail could not be fetched; a placeholder case goes to staff",
        extra={"uid": uid, "uidvalidity": uidvalidity, "error": error, "attempts": attempts},
    )


def _fetch_batch(
    svc: Service,
    mailbox: Mailbox,
    uids: list[int],
    uidvalidity: int,
    now: datetime,
    report: RunReport,
) -> tuple[list[tuple[int, bytes, datetime | None]], int | None]:
    """The mails of ``uids`` the server hands over, and the lowest UID the cursor must
    not pass yet (None: it may pass the whole batch).

    One FETCH normally. Why the rest: a single mail file the server cannot read (wrong
    owner after a restore, a truncated file) makes it answer NO for the whole command or
    drop the connection, every time; without this, no mail of the batch, nor any after
    it, would ever be stored. So a FETCH the server refused or broke off
    (``IMAPClientError``: NO, BAD, or the connection closed on this command) is retried
    in halves down to one UID at a time (reconnecting when the connection dropped): every
    readable mail is returned, and a UID that fails alone is counted
    (``_count_fetch_attempt``) and, once it failed on ``MAX_FETCH_FAILURES`` polls over
    ``UNREADABLE_AFTER``, replaced by a placeholder (``_store_unreadable``).

    Not counted, as they say nothing about the mail: a temporary answer
    (``_temporary_answer``), and, when every FETCH of the batch failed alike, all UIDs
    but the lowest (the server is refusing, not a mail; once per poll, the later batches
    of that poll none).
    """
    try:
        return list(mailbox.fetch(uids)), None
    except IMAPClientError as exc:  # an OSError (timeout, reset) is the network's: raised
        _fetch_log(mailbox, now)(
            "FETCH failed; fetching the batch in smaller pieces",
            extra={"error": type(exc).__name__, "mails": len(uids)},
        )
        mailbox.recover()
        signatures = {_signature(exc)}
    items: list[tuple[int, bytes, datetime | None]] = []
    blocked: list[int] = []
    failures: list[tuple[int, int, datetime, IMAPClientError]] = []  # counted, failed alone
    fetched_any = False
    pending = [uids[: len(uids) // 2], uids[len(uids) // 2 :]] if len(uids) > 1 else [uids]
    while pending:
        part = pending.pop(0)
        if not part:
            continue
        counted: tuple[int, datetime] | None = None
        if len(part) == 1:
            counted = _count_fetch_attempt(svc, uidvalidity, part[0], now)
            if counted is None:
                continue  # a placeholder already stands for it
        try:
            got = list(mailbox.fetch(part))
        except IMAPClientError as exc:
            mailbox.recover()
            signatures.add(_signature(exc))
            if len(part) > 1:
                half = len(part) // 2
                pending[:0] = [part[:half], part[half:]]
            elif counted is not None and _temporary_answer(exc):
                _uncount_fetch_attempt(svc, uidvalidity, part[0])
                _fetch_log(mailbox, now)(
                    "the server cannot hand a mail over for now; trying again at the next poll",
                    extra={"uid": part[0], "error": type(exc).__name__},
                )
                blocked.append(part[0])
            elif counted is not None:
                failures.append((part[0], counted[0], counted[1], exc))
            continue
        fetched_any = True
        if counted is not None:
            _forget_fetch_attempts(svc, uidvalidity, part[0])
        items.extend(got)
    if failures and not fetched_any and len(signatures) == 1:
        # Every FETCH of the batch failed alike: the server's trouble, not each mail's.
        keep = failures[:1] if mailbox.refused_at != now else []
        mailbox.refused_at = now
        for uid, _count, _first, _error in failures[len(keep) :]:
            _uncount_fetch_attempt(svc, uidvalidity, uid)
            blocked.append(uid)
        failures = keep
    for uid, count, first, error in failures:
        if count >= MAX_FETCH_FAILURES and now - first >= UNREADABLE_AFTER:
            _store_unreadable(svc, mailbox, uidvalidity, uid, type(error).__name__, now, report)
        else:
            _fetch_log(mailbox, now)(
                "a mail could not be fetched; trying again at the next poll",
                extra={"uid": uid, "error": type(error).__name__, "attempts": count},
            )
            blocked.append(uid)
    items.sort(key=lambda item: item[0])
    return items, min(blocked, default=None)


def _sweep(
    svc: Service, mailbox: Mailbox, uidvalidity: int, now: datetime, report: RunReport
) -> None:
    """What a poll of new UIDs cannot find, looked for once per connection and then every
    ``SWEEP_EVERY``.

    1. Rows whose raw bytes were stored (transaction 1) but never processed: a crash came
       before transaction 2, and the mail has left the folder since (staff moved it, a
       restore), so it is not fetched again. They carry their bytes; they go through
       ``_recover`` as after any crash (an attempt counted, quarantine after
       ``MAX_ATTEMPTS``).
    2. Placeholders of mail that could not be fetched (``_store_unreadable``): if the
       server hands the mail over now (permissions fixed), it joins the placeholder's
       case as a follow-up (``_attach_read_later``): triaged, alerted again when urgent,
       never a second case nor a second acknowledgement. A placeholder whose mail left
       the folder (FETCH gives nothing: UIDs are never reused), or that has stayed
       unreadable for ``GIVE_UP_AFTER``, is not fetched again (``GIVEN_UP``).
    """
    key = svc.settings.mailbox.key
    with session_scope(svc.engine) as session:
        stranded = list(
            session.exec(
                select(StoredMessage.id)
                .where(StoredMessage.mailbox == key, StoredMessage.status == "received")
                .order_by(col(StoredMessage.id))
            ).all()
        )
        unreadable = list(
            session.exec(
                select(StoredMessage.id, StoredMessage.uid, StoredMessage.received_at).where(
                    StoredMessage.mailbox == key,
                    StoredMessage.uidvalidity == uidvalidity,
                    StoredMessage.status == "quarantined",
                    col(StoredMessage.sha256).startswith(f"{UNFETCHABLE}{uidvalidity}:"),
                )
            ).all()
        )
        # Counters of mail that was fetched after all as part of a whole batch: the cursor
        # has passed them, so they will never be needed again.
        cursor = get_cursor(session, key)
        if cursor.uidvalidity == uidvalidity:
            session.connection().execute(
                _MESSAGES.delete().where(
                    _MESSAGES.c.mailbox == key,
                    _MESSAGES.c.status == "unfetchable",
                    _MESSAGES.c.uidvalidity == uidvalidity,
                    _MESSAGES.c.uid <= cursor.last_uid,
                )
            )
    if stranded:
        log.warning(
            "stored mail left unprocessed by a crash; processing it",
            extra={"messages": len(stranded)},
        )
        _recover(svc, [i for i in stranded if i is not None], uidvalidity, 0, now, report)
    for row_id, uid, first in unreadable:
        if row_id is None:
            continue
        if now - (from_db(first) or now) >= GIVE_UP_AFTER:
            _give_up(
                svc, row_id, uidvalidity, uid, f"unreadable for {GIVE_UP_AFTER.days} days", now
            )
            continue
        try:
            got = list(mailbox.fetch([uid]))
        except (IMAPClientError, OSError):
            mailbox.recover()
            continue
        if not got:
            _give_up(svc, row_id, uidvalidity, uid, "gone from the folder", now)
            continue
        _attach_read_later(svc, row_id, uidvalidity, got[0], now, report)
        report.fetched += 1
        log.warning(
            "a mail that could not be fetched was read later; added to its placeholder's case",
            extra={"uid": uid, "message_row": row_id},
        )


def _give_up(
    svc: Service, row_id: int, uidvalidity: int, uid: int, why: str, now: datetime
) -> None:
    """Stop fetching a placeholder's mail: its case is all there is. Why: otherwise every
    sweep (each connection, every 10 minutes) fetches it again for ever, and a file that
    makes the server drop the connection costs a reconnect each time."""
    with session_scope(svc.engine) as session:
        msg = session.get(StoredMessage, row_id)
        if msg is None:
            return
        msg.sha256 = f"{GIVEN_UP}{uidvalidity}:{uid}"
        record_event(
            session, "read-given-up", msg.case_id, f"message {row_id}: UID {uid} {why}", at=now
        )
    log.warning("a placeholder's mail is no longer looked for", extra={"uid": uid, "why": why})


def _attach_read_later(
    svc: Service,
    placeholder_id: int,
    uidvalidity: int,
    item: tuple[int, bytes, datetime | None],
    now: datetime,
    report: RunReport,
) -> None:
    """A placeholder's mail, readable after all, joins the placeholder's case as a
    follow-up, in one transaction (a crash leaves the placeholder to the next sweep).

    Why not as new mail: the placeholder already opened a case and told the on-call
    person; a second case for the same mail (a second alert, and a second acknowledgement
    once the window has passed) is the doubling the service promises never to do. As a
    follow-up it is triaged and, when urgent, alerts again. Its resident is acknowledged
    now only if the placeholder could not name a sender (no acknowledgement went out).
    """
    uid, raw, when = item
    key = svc.settings.mailbox.key
    sha = hashlib.sha256(raw).hexdigest()
    stage = _Stage()
    prepared: _Prepared | None = None
    broke = ""
    try:
        prepared = _prepare(svc, raw, stage)
    except Exception as exc:
        broke = f"{stage.name}:{type(exc).__name__}"
    with session_scope(svc.engine) as session:
        holder = session.get(StoredMessage, placeholder_id)
        if holder is None:
            return
        holder.sha256 = f"{READ_LATER}{uidvalidity}:{uid}"
        case = session.get(Case, holder.case_id) if holder.case_id is not None else None
        stored = session.exec(
            select(StoredMessage.id).where(
                StoredMessage.mailbox == key, StoredMessage.sha256 == sha
            )
        ).first()
        if case is None or stored is not None:
            record_event(
                session,
                "read-later",
                holder.case_id,
                f"message {placeholder_id}: UID {uid} could be read later; "
                f"already stored as message {stored}",
                at=now,
            )
            return
        msg = StoredMessage(**_message_row(key, uidvalidity, sha, uid, raw, when, 1, now))
        session.add(msg)
        session.flush()
        msg.case_id = case.id
        msg.is_followup = True
        report.stored += 1
        detail = (
            f"message {placeholder_id}: UID {uid} could be read later; stored as message {msg.id}"
        )
        if prepared is None:
            msg.status = "quarantined"
            msg.stage_error = broke
            record_event(session, "read-later", case.id, f"{detail}, broke at {broke}", at=now)
            report.quarantined += 1
            return
        letter, triage, block = prepared.letter, prepared.triage, prepared.block
        _fill_message(msg, letter)
        msg.automatic = block
        msg.status = "processed"
        urgent = triage.urgent and not letter.bounce  # a bounce may quote our own alert
        if urgent:
            case.urgent_reasons = dumps(json.loads(case.urgent_reasons) + prepared.reasons)
            case.urgent = True
        known = json.loads(case.phone or "[]")
        case.phone = dumps(known + [p for p in prepared.phones if p not in known])
        received = from_db(msg.received_at) or now
        record_event(session, "read-later", case.id, f"{detail}, a follow-up", at=now)
        report.followups += 1
        if not case.sender and letter.from_addr and not prepared.staff:
            case.sender = letter.from_addr
            _acknowledge(svc, session, case, letter, block, received, now, report)
        if urgent:
            _queue_alert(svc, session, case, msg, received, block, now)
            report.alerts += 1


# A database that has never read a mailbox reads its whole folder as new mail. That is
# right for a new installation whose folder holds only mail that just arrived, and wrong
# when the folder holds older mail: staff answered it by hand (a new installation that
# should run ``skip-existing``), or the service answered it with a database that is now
# lost, replaced or moved (every resident would be acknowledged and every urgent mail
# alerted a second time). Mail older than this in such a folder stops the first read.
FIRST_READ_MAX_AGE = timedelta(hours=24)


OLD_AT_FIRST_READ = "first-read-old"  # ack_state suppressed:<this>
FIRST_READ_EVENT = "first-read-of-old-folder"  # detail: "<mailbox key> <cutoff ISO>"


READ_BY_LOST_DATABASE = "read-before"  # ack_state suppressed:<this> (intake.read_marks)
READ_MARK_EVENT = "database-behind-read-mark"  # detail: "<key> <uidvalidity> <cursor> <mark>"


def _no_ack_reason(svc: Service, received: datetime, uid: int | None = None) -> str | None:
    """Why a mail received at ``received`` is not acknowledged at all, whoever sent it:
    the batch being written was read by a lost database (``Service.no_ack_reason``), or
    the mail is before the first read's cutoff (``Service.no_ack_before``); else None."""
    if svc.no_ack_reason is not None:
        return svc.no_ack_reason
    if svc.read_before_uid is not None and uid is not None and uid <= svc.read_before_uid:
        return READ_BY_LOST_DATABASE
    if svc.no_ack_before is not None and received < svc.no_ack_before:
        return OLD_AT_FIRST_READ
    return None


def _read_mark_above(svc: Service, uidvalidity: int, last_uid: int, now: datetime) -> int | None:
    """The read mark's UID when it is above the database's cursor ``last_uid`` for this
    folder (the database lost reads: ``intake.read_marks``), else None. The first time
    in this process, the operator is told at ERROR and an event is recorded."""
    key = svc.settings.mailbox.key
    if key not in svc.read_marks:
        svc.read_marks[key] = load_read_mark(mark_path(svc.settings, key), key)
    mark = svc.read_marks[key]
    if mark is None or mark.uidvalidity != uidvalidity or mark.last_uid <= last_uid:
        return None
    if key not in svc.read_mark_told:
        svc.read_mark_told.add(key)
        log.error(
            f"the database is behind mailbox {key}: it was read up to UID {mark.last_uid} "
            f"(read mark), the database's cursor is at UID {last_uid}. Was the database "
            "restored from an older backup? The mail in between is read, routed and "
            "alerted again, but NOT acknowledged again. If the database was rolled back "
            "on purpose to acknowledge that mail, run `service.py once --accept-existing`.",
            extra={"error": READ_MARK_EVENT},
        )
        with session_scope(svc.engine) as session:
            record_event(
                session,
                READ_MARK_EVENT,
                detail=f"{key} {uidvalidity} {last_uid} {mark.last_uid}",
                at=now,
            )
    return mark.last_uid


def note_read(svc: Service) -> None:
    """Move the read mark (``intake.read_marks``) up over the mail this database has read
    and whose acknowledgement is settled: up to the cursor, but below the first mail whose
    acknowledgement is still waiting in the outbox (queued or being sent).

    Why not simply the cursor: the mark says "acknowledged already". Were the database lost
    while acknowledgements wait (a relay down for hours) and restored from a backup, a
    mark over them would keep those residents from ever being acknowledged (review rv8
    F2). So it moves after each batch (over the mail that needs no acknowledgement) and
    after each delivery run (``Service.deliver``, ``worker.deliver``). It moves down only
    while this database is not behind it (an acknowledgement queued later for mail it
    had passed); a database behind it is what the mark is there to tell.

    Cost: two primary-key or indexed reads (the cursor; the outbox's waiting
    acknowledgements, then their cases' messages), whatever the
    mailbox's size. Never raises: a mark not moved only means a later restore of an
    older backup may acknowledge again what the mark would have covered."""
    try:
        _move_read_mark(svc)
    except Exception as exc:
        log.warning("read mark not moved", extra={"error": type(exc).__name__})


def _move_read_mark(svc: Service) -> None:
    key = svc.settings.mailbox.key
    with session_scope(svc.engine) as session:
        cursor = session.get(Cursor, key)
        if cursor is None or not cursor.uidvalidity or cursor.last_uid < 1:
            return
        uidvalidity, high = cursor.uidvalidity, cursor.last_uid
        # From the few waiting rows (``ix_outbox_waiting``, migration 0005) to their cases'
        # messages (``ix_message_case_status``); as a join, SQLite started from every
        # message or outbox row of the mailbox (13-26 ms at 50,000 mails; now ~1 ms).
        waiting_cases = core_select(_OUTBOX.c.case_id).where(
            _OUTBOX.c.status.in_(["queued", "sending"]),
            _OUTBOX.c.kind == "ack",
            _OUTBOX.c.mailbox == key,
        )
        waiting = (
            session.connection()
            .execute(
                core_select(func.min(_MESSAGES.c.uid)).where(
                    _MESSAGES.c.case_id.in_(waiting_cases),
                    _MESSAGES.c.uidvalidity == uidvalidity,
                )
            )
            .scalar()
        )
    if waiting is not None:
        high = min(high, int(waiting) - 1)
    read = cursor.last_uid
    path = mark_path(svc.settings, key)
    # Read, decided and written under the mark's lock: another process on this database
    # deciding at the same time could otherwise write an older decision last.
    with read_mark_updating(path):
        # The file, not this process's copy: another worker on this machine may have
        # moved it, and deciding on a stale copy could lower it below a database that is
        # behind it (review rv8c).
        mark = load_read_mark(path, key)
        svc.read_marks[key] = mark
        if mark is None or mark.uidvalidity != uidvalidity:
            if high < 1:
                return
        elif mark.last_uid == high or (mark.last_uid > high and read < mark.last_uid):
            # Unchanged, or the database is behind the mark: never lower it then, that
            # is what the mark is there to tell (``_read_mark_above``).
            return
        # Up; or down when this database, not behind, queued an acknowledgement for mail
        # the mark had passed (a placeholder that could not name its sender, read later:
        # review rv8b N5).
        mark = ReadMark(uidvalidity, max(high, 0))
        svc.read_marks[key] = mark
        save_read_mark(path, key, mark)


def _oldest_arrival(mailbox: Mailbox) -> tuple[bool, datetime | None]:
    """(folder holds mail, INTERNALDATE of its lowest UID or None when not given).

    Two commands whatever the folder's size: STATUS (MESSAGES) and a FETCH of message
    sequence number 1, which is the lowest UID; a UID SEARCH would list every UID."""
    client = mailbox.client
    if client is None:
        raise IntakeError("mailbox is not open")
    status = client.folder_status(mailbox.settings.folder, [b"MESSAGES"])
    if not int(status.get(b"MESSAGES", 0)):
        return False, None
    client.use_uid = False  # sequence number 1, not UID 1 (it may be long expunged)
    try:
        data = client.fetch([1], [b"INTERNALDATE"])
    finally:
        client.use_uid = True
    if not data:  # expunged between STATUS and FETCH: nothing there any more
        return False, None
    when = next(iter(data.values())).get(b"INTERNALDATE")
    if isinstance(when, datetime) and when.tzinfo is not None:
        return True, when
    return True, None


def first_read_cutoff(svc: Service, mailbox: Mailbox, now: datetime) -> datetime | None:
    """For the first read of a folder that already holds old mail: the time before which
    mail is not acknowledged (``now - FIRST_READ_MAX_AGE``); otherwise None.

    Why: the service cannot tell a new installation from a lost, replaced or moved
    database, and reading such a folder used to acknowledge every resident in it again
    (and, at installation, a late acknowledgement of mail staff answered by hand). So on
    a first read (no cursor row for this mailbox) old mail is read, triaged, routed and
    alerted as any mail (a duplicate alert costs a minute; a missed one may cost a life;
    fresh mail is never held back), but not acknowledged, and the operator is told at
    ERROR. ``skip-existing`` before the first read leaves old mail to staff altogether;
    ``once --accept-existing`` acknowledges it too. Cost: one primary-key read, and for a
    mailbox without a cursor two IMAP commands."""
    key = svc.settings.mailbox.key
    if key in svc.first_read:
        return svc.first_read[key]
    with session_scope(svc.engine) as session:
        if session.get(Cursor, key) is not None:
            # A first read that did not finish (a crash, a lost lock, a dropped connection)
            # keeps its cutoff: the rest of the old mail must not be acknowledged either.
            detail = session.exec(
                select(Event.detail)
                .where(Event.kind == FIRST_READ_EVENT, col(Event.detail).startswith(f"{key} "))
                .order_by(col(Event.id).desc())
            ).first()
            cutoff = _parse_cutoff(detail[len(key) + 1 :]) if detail else None
            svc.first_read[key] = cutoff
            return cutoff
    try:
        present, oldest = _oldest_arrival(mailbox)
    except IMAPClientError as exc:
        # Never let the check hold mail up: a server that will not answer STATUS on the
        # selected folder (RFC 3501 lets it refuse) or FETCH 1 is read as before.
        log.warning("first read: oldest mail not known", extra={"error": type(exc).__name__})
        return None
    if not present or (oldest is not None and now - oldest <= FIRST_READ_MAX_AGE):
        return None
    since = (
        f"mail that arrived on {oldest.astimezone(svc.calendar.tz):%Y-%m-%d %H:%M %Z}"
        if oldest is not None
        else "mail whose arrival time the server does not give"
    )
    from sqlalchemy.engine import make_url

    database = make_url(svc.settings.database_url).render_as_string(hide_password=True)
    hours = FIRST_READ_MAX_AGE.total_seconds() / 3600
    log.error(
        f"mailbox {key} is read for the first time with this database ({database}), and "
        f"folder {svc.settings.mailbox.folder} already holds {since}: mail older than "
        f"{hours:.0f} hours is read, routed and alerted but NOT acknowledged (it may have "
        "been acknowledged before, or answered by staff); newer mail is handled as usual. "
        "If the database was lost, replaced or moved, or the [mailbox] id, username, host "
        "or folder changed, stop the worker and restore them: old urgent mail is alerted "
        "again and old cases appear in the digests again. To acknowledge old mail too on a "
        "new installation, run `service.py once --accept-existing` before the first run; "
        "to leave it to staff, `service.py skip-existing`.",
        extra={"error": "first-read-of-old-folder"},
    )
    cutoff = now - FIRST_READ_MAX_AGE
    with session_scope(svc.engine) as session:
        record_event(session, FIRST_READ_EVENT, detail=f"{key} {cutoff.isoformat()}", at=now)
    svc.first_read[key] = cutoff
    return cutoff


def _parse_cutoff(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.split()[0])
    except (ValueError, IndexError):
        return None


def process_new_mail(
    svc: Service,
    mailbox: Mailbox,
    now: datetime,
    still_mine: Callable[[], bool] | None = None,
    after_batch: Callable[[RunReport], None] | None = None,
    accept_existing: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> RunReport:
    """Fetch everything above the cursor and turn it into cases. Cost grows with new mail only.

    ``after_batch`` is called with the running report after each batch is committed: the
    worker delivers new urgent alerts there, so on a backlog (after an outage) an alert in
    the first batch does not wait for the last one.

    ``should_stop`` (the worker's stop flag) is asked before each batch: a SIGTERM during
    a backlog of thousands of mails ends the read after the batch in hand (each batch is
    committed with the cursor, so the next start goes on from there) instead of running
    past systemd's stop timeout into a SIGKILL.

    The first read of a mailbox (no cursor) whose folder holds old mail does not
    acknowledge the mail older than a day (``first_read_cutoff``), unless
    ``accept_existing``: the operator's explicit choice to acknowledge all of it.
    """
    cutoff = None if accept_existing else first_read_cutoff(svc, mailbox, now)
    svc.no_ack_before = cutoff
    try:
        return _read_new_mail(
            svc, mailbox, now, still_mine, after_batch, should_stop, accept_existing
        )
    finally:
        svc.no_ack_before = None
        svc.no_ack_reason = None
        svc.read_before_uid = None


def _read_new_mail(
    svc: Service,
    mailbox: Mailbox,
    now: datetime,
    still_mine: Callable[[], bool] | None,
    after_batch: Callable[[RunReport], None] | None,
    should_stop: Callable[[], bool] | None = None,
    accept_existing: bool = False,
) -> RunReport:
    """``process_new_mail``'s work (see there)."""
    report = RunReport()
    state = mailbox.state
    assert state is not None
    key = svc.settings.mailbox.key
    with session_scope(svc.engine) as session:
        cursor = get_cursor(session, key)
        if cursor.uidvalidity != state.uidvalidity:
            if cursor.uidvalidity:
                # Mailbox recreated or restored: rescan; stored mail is recognised by its hash.
                log.warning(
                    "UIDVALIDITY changed; rescanning the folder",
                    extra={"old": cursor.uidvalidity, "new": state.uidvalidity},
                )
                record_event(
                    session,
                    "uidvalidity-changed",
                    detail=f"{cursor.uidvalidity} -> {state.uidvalidity}",
                )
            cursor.uidvalidity = state.uidvalidity
            cursor.last_uid = 0
        last_uid = cursor.last_uid
    if mailbox.swept_at is None or now - mailbox.swept_at >= SWEEP_EVERY:
        mailbox.swept_at = now
        _sweep(svc, mailbox, state.uidvalidity, now, report)
        note_read(svc)  # a mail read later may have queued an acknowledgement below it
    # Housekeeping left over by a crash between a commit and its move (no-op when off).
    mailbox.move_done(mailbox.stored_but_not_moved(last_uid))
    uids = mailbox.new_uids(last_uid)
    size = max(1, svc.settings.mailbox.batch_size)
    if len(uids) > 1:
        # Bounded in bytes too (one RFC822.SIZE fetch, a few bytes a mail): a backlog of
        # large mails must not be held in memory ``batch_size`` mails at a time.
        try:
            sizes = mailbox.sizes(uids)
        except IMAPClientError as exc:
            # Never let the bound hold mail up: a server that will not say a size (it
            # could not open a damaged file) gets batches by count, as before.
            log.warning("RFC822.SIZE fetch failed", extra={"error": type(exc).__name__})
            mailbox.recover()
            sizes = {}
        batches = _by_size(uids, sizes, max_mails=size)
    else:
        batches = [uids] if uids else []
    # Mail a lost database had read (``intake.read_marks``) goes in batches of its own,
    # written without acknowledgements.
    mark = (
        None
        if accept_existing or not uids
        else _read_mark_above(svc, state.uidvalidity, last_uid, now)
    )
    svc.read_before_uid = mark  # for placeholders written while fetching (quarantine)
    if mark is not None:
        batches = [
            part
            for batch in batches
            for part in ([u for u in batch if u <= mark], [u for u in batch if u > mark])
            if part
        ]
    ceiling: int | None = None  # the lowest UID not fetched yet: the cursor stays below it
    pool = svc.pool if svc.pool is not None and not svc.pool.disabled else None
    # With the prepare pool, batch N+1 is fetched and handed to the pool before batch N
    # is written, so the children parse and triage while this process writes. Reading
    # ahead changes nothing else: the cursor, the moves and every write follow batch N.
    # An urgent mail in batch N is committed one fetch later (~5-50 ms for a batch on
    # loopback) but not alerted later: the outbox (alerts first) is delivered after this
    # function returns (``worker``, ``once``), i.e. after batch N+1 has been fetched and
    # written anyway, so the read-ahead is kept even for batches with urgent mail. A
    # lone urgent mail seen in IDLE is a batch below POOL_MIN_BATCH: no read-ahead.
    following: tuple[list[tuple[int, bytes, datetime | None]], Ticket | None, int | None] | None = (
        None
    )
    try:
        for index, batch in enumerate(batches):
            if still_mine is not None and not still_mine():
                log.warning("mailbox lock lost; another worker takes over")
                break
            if index and should_stop is not None and should_stop():
                log.info(
                    "stopping between batches; the rest is read at the next start",
                    extra={"batches_left": len(batches) - index},
                )
                break
            if following is not None:
                items, ticket, blocked = following
                following = None
            else:
                items, blocked = _fetch_batch(svc, mailbox, batch, state.uidvalidity, now, report)
                ticket = _hand_over(pool, items)
            failed: Exception | None = None
            if ticket is not None and index + 1 < len(batches):
                try:
                    ahead, ahead_blocked = _fetch_batch(
                        svc, mailbox, batches[index + 1], state.uidvalidity, now, report
                    )
                except Exception as exc:  # raised after this batch is committed, as before
                    failed = exc
                else:
                    following = (ahead, _hand_over(pool, ahead), ahead_blocked)
            if blocked is not None and (ceiling is None or blocked < ceiling):
                ceiling = blocked
            high = max(batch) if ceiling is None else min(max(batch), ceiling - 1)
            report.fetched += len(items)
            svc.no_ack_reason = (
                READ_BY_LOST_DATABASE if mark is not None and max(batch) <= mark else None
            )
            ingest_batch(svc, items, state.uidvalidity, high, now, report, ticket)
            svc.no_ack_reason = None
            note_read(svc)
            # Only now, with the cases committed, may the mail leave the folder.
            report.moved += mailbox.move_done([uid for uid, _raw, _when in items])
            if after_batch is not None and index + 1 < len(batches):
                after_batch(report)  # the caller handles what follows the last batch
            if failed is not None:
                raise failed
    finally:
        if following is not None and following[1] is not None and pool is not None:
            pool.discard(following[1])
    return report


def _hand_over(
    pool: PreparePool | None, items: list[tuple[int, bytes, datetime | None]]
) -> Ticket | None:
    """Give a fetched batch to the prepare pool when it is large enough to be worth it."""
    if pool is None or pool.disabled or len(items) < POOL_MIN_BATCH:
        return None
    return pool.submit([raw for _uid, raw, _when in items])


SKIP_FETCH_MAILS = 200  # skip_existing fetches at most this many mails at a time,
SKIP_FETCH_BYTES = 20 * 1024 * 1024  # and about this many bytes (one mail may be larger)


def _by_size(
    uids: list[int], sizes: dict[int, int], max_mails: int | None = None
) -> list[list[int]]:
    """``uids`` in batches of at most ``max_mails`` (default SKIP_FETCH_MAILS) mails and
    about SKIP_FETCH_BYTES: a folder of large attachments must not be held in memory
    200 mails at a time."""
    limit = SKIP_FETCH_MAILS if max_mails is None else max_mails
    batches: list[list[int]] = []
    batch: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if batch and (len(batch) >= limit or total + size > SKIP_FETCH_BYTES):
            batches.append(batch)
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        batches.append(batch)
    return batches


def skip_existing(engine: Engine, mailbox: Mailbox, key: str, now: datetime) -> tuple[int, int]:
    """At installation: leave the mail already in the folder to staff; return (count, UID).

    Why: on its first start the service reads the whole folder, which is right after an
    outage but not for a mailbox that staff have been answering by hand: every resident
    there would get a late acknowledgement and the on-call person an alert per old urgent
    mail. This moves the cursor to the folder's highest UID instead, keeps a hash-only
    row (status "skipped") per mail so a later rescan recognises it, records an event and
    touches no mail (it stays in the folder, unread flags unchanged). Only before the
    first run: once the service has polled this mailbox at all (a cursor row exists, even
    for an empty folder) or stored mail of it, it raises ``IntakeError``, so it can never
    skip mail that arrived while the service was running. Not with ``move_to``: the
    housekeeping moves every mail up to the cursor out of the folder.
    """
    state = mailbox.state
    if state is None:
        raise IntakeError("mailbox is not open")
    if mailbox.settings.move_to:
        raise IntakeError(
            "skip-existing cannot be used with [mailbox] move_to: the housekeeping would move "
            "the mail left to staff out of the folder; remove move_to first"
        )
    # IMAP before the transaction: no write lock is held while the server answers. A mail
    # that arrives after the SEARCH has a higher UID and is read as new mail.
    uids = mailbox.new_uids(0)
    top = max(uids, default=0)
    # A hash-only row per skipped mail (no raw bytes, no text: staff have the mail in the
    # folder), so that a rescan after a recreated folder (new UIDVALIDITY) recognises it
    # as already handled, as it recognises stored mail, instead of acknowledging it late.
    rows: dict[str, dict[str, Any]] = {}
    for batch in _by_size(uids, mailbox.sizes(uids)):
        for uid, raw, when in mailbox.fetch(batch):
            sha = hashlib.sha256(raw).hexdigest()
            row = _message_row(key, state.uidvalidity, sha, uid, raw, when, 0, now)
            row.update(raw=None, status="skipped")
            rows.setdefault(sha, row)  # the same mail twice in the folder: one row
    with session_scope(engine) as session:
        cursor = session.get(Cursor, key)
        stored = session.exec(
            select(func.count()).select_from(StoredMessage).where(StoredMessage.mailbox == key)
        ).one()
        if cursor is not None or stored:
            raise IntakeError(
                f"the service has already polled mailbox {key} "
                f"(up to UID {cursor.last_uid if cursor else 0}, {stored} mails stored): "
                "skip-existing works only before the first run"
            )
        session.add(Cursor(mailbox=key, uidvalidity=state.uidvalidity, last_uid=top))
        if rows:
            session.connection().execute(insert(_MESSAGES), list(rows.values()))
        record_event(
            session,
            "skipped-existing",
            detail=f"{key}: {len(uids)} mails present at installation (UIDs up to {top}, "
            f"UIDVALIDITY {state.uidvalidity}) left to staff",
            at=now,
        )
    log.info("existing mail left to staff", extra={"mails": len(uids), "uid": top})
    return len(uids), top
