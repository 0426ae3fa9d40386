"""Digest: each partner gets one mail listing its messages not yet sent to it.

"Since its last digest" is not a timestamp but a fact in the database: a ``DigestEntry``
row per (partner, message), unique, written in the same transaction as the digest's
outbox row. So a message is listed exactly once per partner, across restarts, and a
digest with nothing new is never created. A digest that fails for good (refused, or
given up after a day) has its entries deleted by ``intake.send``, so its messages are
listed in that partner's next digest instead of being lost.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import re
import string
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any, overload

from sqlalchemy import (
    JSON,
    ColumnElement,
    and_,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    true,
)
from sqlalchemy.orm import load_only
from sqlmodel import Session, col, select

from intake.automatic import AUTOMATIC_PREFIXES, AUTOMATIC_REASONS, is_automatic_reason
from intake.compose import excerpt, render_digest
from intake.locks import serialise
from intake.partners import Directory, Partner
from intake.phones import DASHES, find_phones
from intake.pipeline import Service, queue_mail
from intake.store import (
    Case,
    DigestEntry,
    StoredMessage,
    from_db,
    record_event,
    session_scope,
    to_db,
)

log = logging.getLogger(__name__)

TOPIC_JA = {
    "bullying": "いじめ",
    "poverty": "生活困窮",
    "caregiving": "介護・ケア",
    "isolation": "孤独・孤立",
    "volunteer": "ボランティア",
    "other": "その他・総合",
}


def _concerns(partner: Partner, case: Case, known: frozenset[str] | None = None) -> bool:
    """Whether ``partner``'s digest lists ``case``. ``known`` (the general desk's digest
    only): the partner ids of partners.toml; a case owned by none of them (a partner
    renamed or gone) is the desk's (review rv10a F5: it reached nobody)."""
    if partner.id == COORDINATOR_ID or case.partner == partner.id:
        return True
    if known is not None and case.partner not in known:
        return True
    secondary = {t for t, _s in json.loads(case.topics)[1:]}
    return bool(secondary.intersection(partner.also_notify))


# --- Automatic mail threaded onto a case (bounces, out-of-office replies) ----------------
#
# A bounce of the acknowledgement, or the resident's mailbox answering it automatically,
# is stored as a follow-up of the case (``intake.pipeline`` keeps every mail), but its
# words are a mail server's, not the resident's: a digest must never list it as the
# resident's 続報 (review rv9b F6). The reasons are those ``intake.automatic
# .automatic_reason`` gives (``AUTOMATIC_REASONS``, kept in step with it by a test). Not
# among them, so still listed: no reason, content heuristics ("content:"), a spam
# filter's flag, a staff address, no sender: those may be a person's words, and hiding a
# resident's follow-up from its partner is worse than showing a stray auto-reply.
_AUTOMATIC_REASONS = tuple(sorted(AUTOMATIC_REASONS))
_AUTOMATIC_PREFIXES = AUTOMATIC_PREFIXES
# ``Case.ack_state`` once a bounce of its acknowledgement came back (``intake.pipeline``).
ACK_FAILED = "ack_failed"


def _is_automatic(msg: StoredMessage) -> bool:
    """Whether ``msg`` is automatic mail threaded onto its case (not the resident's words).

    The same test as ``_automatic_sql``, for a row already read."""
    return bool(msg.is_followup) and is_automatic_reason(msg.automatic)


def _automatic_sql() -> ColumnElement[bool]:
    """``_is_automatic`` in SQL (never NULL: a NULL would drop the row under NOT)."""
    reason = func.coalesce(col(StoredMessage.automatic), "")
    return and_(
        col(StoredMessage.is_followup).is_(true()),
        or_(
            reason.in_(_AUTOMATIC_REASONS),
            *(reason.startswith(p, autoescape=True) for p in _AUTOMATIC_PREFIXES),
        ),
    )


def _is_notice(msg: StoredMessage, case: Case) -> bool:
    """Whether ``msg`` stands in a digest for "the acknowledgement of this case failed":
    automatic mail (the bounce) on a case whose acknowledgement bounced. Listed as that
    notice, never with its text; other automatic mail is not listed at all."""
    return case.ack_state == ACK_FAILED and _is_automatic(msg)


def _listed_as(
    partner: Partner,
    msg: StoredMessage,
    case: Case,
    desk: bool,
    known: frozenset[str] | None = None,
) -> str | None:
    """How ``partner``'s digest lists ``msg``: "message" (the resident's words), "notice"
    (the failed acknowledgement, without text) or None (not at all). ``desk``: the partner
    is the ``contact_desk``, which hears of every other partner's failed acknowledgement
    through the case's first message or its bounce, whichever it has not yet been told of
    (the acknowledgement may fail at our relay, with no bounce, or after the first digest).
    """
    if _concerns(partner, case, known):
        if _is_notice(msg, case):
            return "notice"
        return None if _is_automatic(msg) else "message"
    if desk and case.ack_state == ACK_FAILED and (_is_automatic(msg) or not msg.is_followup):
        return "notice"
    return None


def contact_desk(svc: Service) -> Partner | None:
    """The partner told of every case whose acknowledgement bounced, whoever owns it: the
    general desk, when its digest shows the resident's address and phone (``show_sender``).

    A partner without ``show_sender`` cannot phone a resident it cannot see; the city
    desk can, and the coordinator (when configured) sees every case anyway. None when the
    desk does not show senders: then only the coordinator sees the contact in a digest.
    """
    desk = svc.directory.general_desk
    return desk if desk.show_sender else None


def _secondary_topic_in(session: Session, topics: Sequence[str]) -> ColumnElement[bool]:
    """SQL for "one of the case's secondary topics (``Case.topics[1:]``) is in ``topics``",
    as ``_concerns`` reads it, so the database, not Python, leaves out other partners'
    cases. JSON functions of SQLite (json1) and PostgreSQL; any other dialect gets no
    filter here (true) and ``_concerns`` decides."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        each = func.json_each(Case.topics).table_valued("key", "value")
        return exists(
            select(literal(1))
            .select_from(each)
            .where(each.c.key >= 1, func.json_extract(each.c.value, "$[0]").in_(topics))
        )
    if dialect == "postgresql":
        elems = (
            func.json_array_elements(cast(Case.topics, JSON))
            .table_valued("value", with_ordinality="n")
            .render_derived()
        )
        return exists(
            select(literal(1))
            .select_from(elems)
            .where(elems.c.n > 1, elems.c.value.op("->>")(0).in_(topics))
        )
    return true()


# The message columns ``_entry`` and ``queue_digests`` read.
_ENTRY_COLUMNS = ("id", "received_at", "is_followup", "new_text", "automatic")


def _unlisted(
    session: Session,
    mailbox: str,
    partner: Partner,
    notices: bool = False,
    known: frozenset[str] | None = None,
) -> list[tuple[StoredMessage, Case]]:
    """The messages ``partner``'s digest still has to list, oldest first, with their cases.

    Filtered by partner in SQL (its own cases, or a secondary topic it is also told of),
    so a digest reads the new messages, not every message of the other partners still
    retained (a year's mail, read at every digest: review rvr finding 4); and only the
    columns ``_entry`` needs, never ``raw`` (a phone photo may be megabytes), which
    ``raiseload`` turns from a silent load into an error.

    Automatic mail threaded onto a case (``_is_automatic``) is left out, except on a case
    whose acknowledgement bounced, where it is listed once as that notice (``_is_notice``).
    ``notices`` (the ``contact_desk``): also the failed acknowledgements of every other
    partner's case (``_listed_as``).
    """
    done = select(DigestEntry.message_row).where(DigestEntry.partner == partner.id)
    cases = select(Case.id).where(Case.mailbox == mailbox)
    failed = col(Case.ack_state) == ACK_FAILED
    automatic = _automatic_sql()
    shown = or_(not_(automatic), failed)
    if partner.id != COORDINATOR_ID:
        mine = col(Case.partner) == partner.id
        if known is not None:  # the general desk: also cases of partners no longer listed
            mine = or_(mine, col(Case.partner).not_in(sorted(known)))
        if partner.also_notify:
            mine = or_(mine, _secondary_topic_in(session, partner.also_notify))
        if notices:
            cases = cases.where(or_(mine, failed))
            # A failed case of another partner gives the desk its first message and its
            # bounces (``_listed_as``: one notice), never the resident's follow-ups.
            opening = col(StoredMessage.is_followup).is_(false())
            shown = or_(and_(mine, not_(automatic)), and_(failed, or_(automatic, opening)))
        else:
            cases = cases.where(mine)
    # Messages are found from their cases through ``ix_message_case_status`` (case, status,
    # and the row id), which also answers the status and "already listed" tests: SQLite
    # keeps a row's later columns behind its raw bytes, so reading a listed message's
    # status meant reading its whole mail again.
    query = (
        select(StoredMessage, Case)
        .options(
            load_only(*(getattr(StoredMessage, name) for name in _ENTRY_COLUMNS), raiseload=True)
        )
        .join(Case, col(StoredMessage.case_id) == col(Case.id))
        .where(
            col(StoredMessage.case_id).in_(cases),
            col(StoredMessage.status).in_(["processed", "quarantined"]),
            col(StoredMessage.id).not_in(done),
            shown,
        )
        .order_by(col(StoredMessage.id))
    )
    return [(m, c) for m, c in session.exec(query).all()]


# --- Masking the resident's contact details for partners without ``show_sender`` ---------
#
# Work is done on a folded copy of the text (NFKC per character as intake.phones folds the
# whole text, so ０９０ and ＠ are 090 and @; invisible format characters and combining
# marks dropped, so a zero-width space or a keycap emoji 0\ufe0f\u20e3 does not hide a
# digit) that remembers which original character each folded one came from. The spans
# found there are masked in the original, which is what the partner reads. Whatever this
# misses, ``redact_contact`` checks its result with intake.phones itself.

# Digits: every Unicode decimal digit (as in intake.phones) and the kanji numerals some
# residents write numbers with (〇九〇―一二三四―…; ○ is a common stand-in for 〇).
_DIGIT = r"\d〇○一二三四五六七八九"
# Separators inside a number: every dash intake.phones accepts and every other Unicode
# dash (category Pd) except the wave dashes 〜〰 (ranges: 10〜12時), box-drawing lines,
# dots (090.1234.5678, 090・1234・5678), slashes, brackets and any whitespace (a number
# split by spaces or over lines). Commas are not: amounts of money (1,000,000,000円).
_SEPARATOR = (
    DASHES
    + "-֊־᐀᠆‐‑‒–—―⸗⸚⸺⸻⹀⹝゠︱︲﹘﹣－𐺭"  # Unicode Pd, waves excepted (folded forms too)
    + "─━˗⁃➖"  # lines and minus signs typed for a dash
    + "./・()（）"
    + "_＿→⇒>＞~"  # typed to dodge a filter: 090_1234_5678, 090→1234→5678
)
_RUN = re.compile(
    "[" + _DIGIT + "](?:[" + _DIGIT + re.escape(_SEPARATOR) + r"\s]*[" + _DIGIT + "])?"
)
_DIGIT_CHAR = re.compile("[" + _DIGIT + "]")
# A number the on-call person could be shown as a phone has 10 or 11 digits; a run with
# fewer (a date, a time, 3人, 30,000円) is left for staff to read.
_PHONE_DIGITS = 10
# A calendar date (2026-11-26, 2026.11.26, 2026/11/26, 11/27) or a time's minutes in a run: no phone
# number starts with a 4-digit year or a month/day, and staff need the date to understand
# the case ("2026-11-26 10時" has 10 digits, "11/27 090-1234-5678" starts with a date).
_DATE = re.compile(
    r"(?<![0-9])(?:19|20)[0-9]{2}([" + re.escape(DASHES + "‐‒–—―./") + r"])"
    r"[0-9]{1,2}\1[0-9]{1,2}(?![0-9])"
    r"|(?<![0-9/])(?:1[0-2]|0?[1-9])/(?:3[01]|[12][0-9]|0?[1-9])(?![0-9/])"
    r"|(?<=[0-9]:)[0-5][0-9](?![0-9])"  # the minutes of 19:30 (the colon ends a run)
)

# Mail addresses, also written to dodge harvesters: taro＠example.jp, taro @ example.jp,
# taro at example.jp, taro(at)example(dot)jp, taro あっと example.jp, taro★example.jp.
_LOCAL_CHARS = r"A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-"
_WORD_AT = r"(?:at|アット(?:マーク)?|あっと(?:まーく)?)"
_WORD_DOT = r"(?:dot|ドット|どっと)"
_OPEN, _CLOSE = r"[(\[{<【〔]", r"[)\]}>】〕]"
_AT = (
    rf"(?:\s*[@★☆]\s*|\s*{_OPEN}\s*{_WORD_AT}\s*{_CLOSE}\s*|\s+at\s+"
    r"|\s*(?:アット(?:マーク)?|あっと(?:まーく)?)\s*)"
)
_DOT = rf"(?:\.|\s*{_OPEN}\s*{_WORD_DOT}\s*{_CLOSE}\s*|\s+dot\s+|\s*(?:ドット|どっと)\s*)"
# The local part is ASCII, so "メールはtaro@…" keeps メールは; one written in Japanese
# (rare) takes the whole word before the at sign, which may over-mask but never shows it.
# Each lookbehind starts a local part only where a run of its characters starts, so a long
# run without an address costs linear time (the old pattern was quadratic).
_NON_ASCII_WORD = r"[^\W\x00-\x7f]"
# A domain label may be Japanese (例え.jp) but never contains a spelled-out dot (were
# ドット both a label's letters and a dot, a failing match would try every split), and is
# at most 63 characters long, as in DNS (an unbounded one made every "xアット" in a long
# word scan to its end).
_LABEL = r"(?:(?!ドット|どっと)[\w\-]){1,63}"
_EMAIL = re.compile(
    rf"(?:(?<![{_LOCAL_CHARS}])[{_LOCAL_CHARS}]+|(?<!{_NON_ASCII_WORD}){_NON_ASCII_WORD}+)"
    rf"{_AT}"
    rf"{_LABEL}(?:{_DOT}{_LABEL}){{0,8}}{_DOT}[A-Za-z][A-Za-z0-9\-]{{0,62}}",
    re.IGNORECASE,
)
_MASK_PHONE = "［電話番号］"
_MASK_EMAIL = "［メールアドレス］"
_MASK_ID = "［ID］"
_MASK_POSTCODE = "［郵便番号］"
_MASK_HOUSE = "［番地］"

# --- Shorter numbers, and the other ways to reach a resident -----------------------------
#
# The README's stance: a partner without ``show_sender`` must not be able to contact or
# identify the resident directly from the digest. So besides 10-11 digit numbers this masks
# a local number written without its area code (Kasaoka's 0865-63-8515 written 63-8515), a
# full number split by commas, 、 or の, a messenger ID (LINE, Instagram, …) and a home
# address's postcode and house number. The town stays (笠岡市中央町［番地］): it identifies
# nobody and tells the partner where the resident lives. Every pattern below repeats only
# boundedly or possessively, so a long mail of digits and dashes is scanned in linear time.

_D = "[" + _DIGIT + "]"
_SPACE = r"[^\S\n]"
# Dashes and brackets: the separators of _RUN but dots and slashes (3.1415, 11/27).
_DASH = "[" + re.escape(_SEPARATOR.replace(".", "").replace("/", "")) + "]"
# What follows a number that counts rather than dials (3000円, 1000-2000人, 2020-2026年).
_UNIT = r"(?![円万千百億人名年月日時分秒歳才件回個枚本台階号%倍度点位ヶヵ])"
# A local number: a 2-4 digit exchange not starting with 0, a dash or bracket (spaces may
# surround it) or spaces alone, and 4 digits; not a piece of a longer dashed run, a date
# or an amount.
_JOINED = "[" + re.escape(_SEPARATOR) + ":,]"  # 1/10 2020, 1,500 2000: no local number
_LOCAL = re.compile(
    rf"(?<!{_D})(?<!{_D}{_JOINED})[1-9一二三四五六七八九]{_D}{{1,3}}"
    rf"(?:{_SPACE}{{0,2}}{_DASH}{_SPACE}{{0,2}}|{_SPACE}{{1,2}}){_D}{{4}}"
    rf"(?!{_D})(?!{_JOINED}{_D}){_UNIT}"
)
_YEAR_RANGE = re.compile(r"(?:19|20)[0-9]{2}[^0-9]+(?:19|20)[0-9]{2}")
# After a word saying a phone number follows, 5 or more digits are one however spaced
# (電話 638515, 携帯は 090 1234 5678, 電話 63.8515). A letter before them makes a code
# (C000123, the case number); a slash ends them (電話は11/27に), and a date is not one.
_PHONE_WORD = re.compile(
    r"(?:電話|でんわ|デンワ|tel|☎|📞|携帯|けいたい|ケータイ|ケイタイ|スマホ|家電|連絡先|phone)"
    rf"[^{_DIGIT}\n]{{0,10}}?(?<![a-z])"
    rf"(?P<num>{_D}(?:(?:{_SPACE}|{_DASH}|\.){{0,3}}{_D})*+){_UNIT}"
)
_KEYWORD_DIGITS = 5
# A full number (it starts with 0) with its groups split by commas, 、 or の
# (090,1234,5678, ０８６５，６３，８５１５, 090の1234の5678). Thousands never start with 0.
_SOFT = "[" + re.escape(_SEPARATOR + ",、の") + r"\s]{1,3}"
_SOFT_PHONE = re.compile(
    rf"(?<!{_D})(?<![0-9][:./])[0〇○](?:{_D}{{2}}{_SOFT}{_D}{{4}}{_SOFT}{_D}{{4}}"
    rf"|{_D}{{1,4}}{_SOFT}{_D}{{1,4}}{_SOFT}{_D}{{4}})(?!{_D}){_UNIT}"
)  # not the minutes of 9:07, 1304-5207円 nor the decimals of an amount
# Whether a stretch of a run holds phone-many (or keyword-many) digits, read no further
# than the digit that decides it.
_TEN_DIGITS = re.compile(rf"{_D}(?:[^{_DIGIT}]*+{_D}){{{_PHONE_DIGITS - 1}}}")
_FIVE_DIGITS = re.compile(rf"{_D}(?:[^{_DIGIT}]*+{_D}){{{_KEYWORD_DIGITS - 1}}}")
_TO_LAST_DIGIT = re.compile("(?s).*" + _D)
# The patterns below that name words (LINE, ID, tel) are matched against a copy of the
# folded text with ASCII letters in lower case (same length, so spans carry over): an
# IGNORECASE pattern cannot skip ahead to its first letter and was 20 times slower.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# A messenger ID after the service's name and "ID", a colon or は (LINE ID: abc_123,
# ラインID：taro_99, インスタは @hanako.k), after a bare "ID:", a link to a profile, and an
# @handle that is not part of a mail address.
_NOT_IN_WORD = r"(?<![a-z0-9ぁ-ゖァ-ヺー])"
_SERVICE = (
    r"(?:line|ライン|らいん|instagram|インスタ(?:グラム)?|insta|twitter|ツイッター"
    r"|discord|ディスコ(?:ード)?|tiktok|ティックトック|kakao(?:talk)?|カカオ(?:トーク)?"
    r"|whatsapp|telegram|テレグラム|skype|スカイプ|facebook|フェイスブック)"
)
_SERVICE_NAME = re.compile(_SERVICE)  # SNSはLINEです names a service, not an ID
_ID_WORD = r"(?:id|アイディー?|アカウント名?|ユーザー?名|user ?name)"
_THEN = r"(?:[:=]|は|が|を|→)"
_MESSENGER_ID = re.compile(
    rf"{_NOT_IN_WORD}(?:(?:{_SERVICE}|x){_SPACE}{{0,2}}の?{_SPACE}{{0,2}}{_ID_WORD}(?![a-z])"
    rf"{_SPACE}{{0,2}}{_THEN}?|{_SERVICE}(?![a-z]){_SPACE}{{0,2}}{_THEN}"
    rf"|{_ID_WORD}(?![a-z]){_SPACE}{{0,2}}{_THEN}?)"
    rf"{_SPACE}{{0,2}}[「『\"'(]?{_SPACE}{{0,2}}"
    r"(?P<num>@?[a-z0-9][a-z0-9._\-]{2,31})(?![a-z0-9._\-@])" + _UNIT
)
_PROFILE_LINK = re.compile(
    r"(?:https?://)?(?:www\.)?(?:line\.me|lin\.ee|instagram\.com|twitter\.com|x\.com"
    r"|tiktok\.com|facebook\.com|discord\.gg|wa\.me|t\.me)/[a-z0-9._~%/?#=&+@\-]{1,200}"
)
_AT_HANDLE = re.compile(r"(?<![a-z0-9._%+\-@])@[a-z_][a-z0-9_.]{2,29}(?![a-z0-9_@])")
_CASE_NUMBER = re.compile(r"@?c[0-9]{6}")
# Our case number (C000123, C1234567 past a million) as a resident quotes it back: its
# digits are no phone, nor part of one ("C000123 2026年" is 10 digits in a row).
_CASE_NUMBER_IN_TEXT = re.compile(r"(?<![a-z0-9])c[0-9]{6,7}(?![0-9])")
# A postcode after 〒 or 郵便番号, and a house number after a municipality or district
# (市区町村郡島, or 住所) and at most 12 letters of place name: 1-1, 1-2-3, 1234-5, 1の2,
# 1丁目2番3号, 1234番地の5, or a bare lot number of 3 or more digits (笠岡1234).
_POSTCODE = re.compile(
    rf"(?:〒|郵便番号|ゆうびん番号)(?:{_SPACE}|[:は]){{0,3}}"
    rf"(?P<num>[0-9]{{3}}{_DASH}?[0-9]{{4}})(?![0-9])"
)
_KANJI_NUM = "[" + _DIGIT + "十]"
_HOUSE_PART = rf"{_KANJI_NUM}++(?:丁目|番地|番(?![目手組線台])|号(?![室館車線機]))"
_HOUSE = re.compile(
    rf"(?:[市区町村郡島]|住所{_SPACE}{{0,2}}(?:は|:)?{_SPACE}{{0,2}})"
    r"[\u4e00-\u9fff々ヶケノの\u30a1-\u30fa]{0,12}?"
    rf"(?P<num>{_HOUSE_PART}(?:(?:の|{_DASH})?(?:{_HOUSE_PART}|{_KANJI_NUM}++))*+"
    rf"|{_D}++(?:(?:{_DASH}|の){_D}++)++{_UNIT}"
    rf"|[0-9]{{3,}}+{_UNIT})"
)


@functools.lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    """One non-ASCII character folded: dropped if invisible or combining, else its NFKC."""
    if unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return ""
    return unicodedata.normalize("NFKC", ch)


class _Origin(Sequence[int]):
    """For each folded character its index in the original text, kept as stretches (one
    per character whose folding is not one character long, and one between) rather than
    an int per character, which cost ~30 bytes a character on a 20 MB mail."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._folded: list[int] = [0]  # where each stretch starts in the folded text
        self._original: list[int] = [0]  # ... and the original index it starts from
        self._step: list[int] = [1]  # 1: one to one; 0: every folded char from one char

    def add(self, folded: int, original: int, step: int) -> None:
        self._folded.append(folded)
        self._original.append(original)
        self._step.append(step)

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...
    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._size))]
        if not 0 <= index < self._size:
            raise IndexError(index)
        j = bisect.bisect_right(self._folded, index) - 1
        return self._original[j] + (index - self._folded[j]) * self._step[j]


def _fold(text: str) -> tuple[str, Sequence[int]]:
    """``text`` folded for matching, and for each folded character its index in ``text``.

    One ``str.translate`` over the distinct characters' foldings: a Python loop per
    character took 10 s on a 5 MB mail of full-width digits."""
    if text.isascii():
        return text, range(len(text))
    table = {ord(c): f for c in set(text) if not c.isascii() and (f := _fold_char(c)) != c}
    folded = text.translate(table)
    resized = {c: f for c, f in table.items() if len(f) != 1}
    if not resized:
        return folded, range(len(folded))
    origin = _Origin(len(folded))
    shift = 0  # folded index minus original index after the last resized character
    for m in re.finditer("[" + re.escape("".join(map(chr, resized))) + "]", text):
        i = m.start()
        size = len(resized[ord(m.group())])
        if size:
            origin.add(i + shift, i, 0)
        shift += size - 1
        origin.add(i + 1 + shift, i + 1, 1)
    return folded, origin


def _phone_spans(folded: str, keep_dates: bool) -> list[tuple[int, int]]:
    """Spans of phone numbers in ``folded`` (ASCII letters lower case): each part of a run
    with phone-many digits (first digit to last; read only up to the tenth digit and back
    from the end, as a run may be megabytes long), a local number, a number after a phone
    word, and one split by commas."""
    spans: list[tuple[int, int]] = []
    for run in _RUN.finditer(folded):
        start, end = run.span()
        if end - start < _PHONE_DIGITS:
            continue
        pieces: list[tuple[int, int]] = []
        at = start
        if keep_dates:
            for date in _DATE.finditer(folded, start, end):
                pieces.append((at, date.start()))
                at = date.end()
        pieces.append((at, end))
        for a, b in pieces:
            first = _DIGIT_CHAR.search(folded, a, b)
            if first and _TEN_DIGITS.match(folded, first.start(), b):
                last = _TO_LAST_DIGIT.match(folded, a, b)
                assert last is not None
                spans.append((first.start(), last.end()))
    for m in _LOCAL.finditer(folded):
        if not _YEAR_RANGE.fullmatch(m.group()):
            spans.append(m.span())
    for m in _PHONE_WORD.finditer(folded):
        a, b = m.span("num")
        if _FIVE_DIGITS.match(folded, a, b) and not (keep_dates and _DATE.search(folded, a, b)):
            spans.append((a, b))
    spans.extend(m.span() for m in _SOFT_PHONE.finditer(folded))
    return spans


def _contact_spans(folded: str) -> list[tuple[int, int, str]]:
    """Spans of messenger IDs, profile links, postcodes and house numbers in ``folded``
    (ASCII letters lower case)."""
    found: list[tuple[int, int, str]] = []
    for m in _MESSENGER_ID.finditer(folded):
        handle = m.group("num")
        if not _CASE_NUMBER.fullmatch(handle) and not _SERVICE_NAME.fullmatch(handle.lstrip("@")):
            found.append((*m.span("num"), _MASK_ID))
    found.extend((*m.span(), _MASK_ID) for m in _PROFILE_LINK.finditer(folded))
    found.extend((*m.span(), _MASK_ID) for m in _AT_HANDLE.finditer(folded))
    found.extend((*m.span("num"), _MASK_POSTCODE) for m in _POSTCODE.finditer(folded))
    found.extend((*m.span("num"), _MASK_HOUSE) for m in _HOUSE.finditer(folded))
    return found


def _redact(text: str, keep_dates: bool) -> str:
    """``text`` with addresses, IDs, postcodes, house numbers and phone numbers masked.
    Numbers are looked for with the addresses and case numbers blanked, so a carrier
    address (09012345678@docomo.ne.jp) is one address, not a number and a domain, and a
    case number stays. Where two spans overlap they are masked as one, with the mask of
    the one found first."""
    folded, origin = _fold(text)
    lowered = folded.translate(_ASCII_LOWER)
    emails = [m.span() for m in _EMAIL.finditer(folded)]
    found: list[tuple[int, int, str]] = [(a, b, _MASK_EMAIL) for a, b in emails]
    cases = [m.span() for m in _CASE_NUMBER_IN_TEXT.finditer(lowered)]
    blanked: list[str] = []
    at = 0
    for a, b in sorted(emails + cases):
        if a >= at:
            blanked += [lowered[at:a], "@" * (b - a)]  # no digit is left
            at = b
    blanked.append(lowered[at:])
    found.extend(_contact_spans(lowered))
    found.extend((a, b, _MASK_PHONE) for a, b in _phone_spans("".join(blanked), keep_dates))
    order = {_MASK_EMAIL: 0, _MASK_ID: 1, _MASK_POSTCODE: 2, _MASK_HOUSE: 3, _MASK_PHONE: 4}
    merged: list[tuple[int, int, str]] = []
    for a, b, mask in sorted(found, key=lambda f: (f[0], order[f[2]])):
        if merged and a < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], b), last[2])
        else:
            merged.append((a, b, mask))
    out: list[str] = []
    at = 0
    for a, b, mask in merged:
        start, end = origin[a], origin[b - 1] + 1
        out.append(text[at:start] + mask)
        at = end
    out.append(text[at:])
    return "".join(out)


def redact_contact(text: str) -> str:
    """Mask phone numbers, mail addresses, messenger IDs, postcodes and house numbers for
    partners not allowed to see the sender's.

    At least every number ``intake.phones`` finds (what the on-call person is shown as a
    phone) is masked, however it is written; dates, times, amounts, ages, school years,
    counts and case numbers stay readable.
    """
    masked = _redact(text, keep_dates=True)
    if find_phones(_without_case_numbers(masked)):
        # A kept date made a phone number readable: mask without keeping dates.
        masked = _redact(text, keep_dates=False)
    return masked


def _without_case_numbers(text: str) -> str:
    """``text`` folded, with our case numbers' digits taken out: intake.phones reads
    "C000001 2020-1-1" as the phone 000001-2020, and the date was masked for it."""
    folded = unicodedata.normalize("NFKC", text).translate(_ASCII_LOWER)
    return _CASE_NUMBER_IN_TEXT.sub("c", folded)


def _entry(
    partner: Partner,
    msg: StoredMessage,
    case: Case,
    directory: Directory | None = None,
    notice: bool | None = None,
) -> dict[str, Any]:
    """What the digest templates show of one message. ``directory`` names the case's
    owner and the general desk in the note on a failed acknowledgement (see below);
    ``notice``: list it as that notice (``_listed_as``; default: ``_is_notice``)."""
    surfaces = [str(r["surface"]) for r in json.loads(case.urgent_reasons)]
    if not partner.show_sender:
        # The words that raised the alert are the resident's own, like the text below.
        surfaces = [redact_contact(s) for s in surfaces]
    reasons = [f"「{s}」" for s in surfaces]
    if notice is None:
        notice = _is_notice(msg, case)
    # The sender's own words only: the whole body may quote our mails (with the resident's
    # address) or an earlier message. A notice has none: its mail is the bounce (or, for
    # the desk, another partner's case, which it needs the contact of, not the words).
    text = (
        ""
        if notice
        else msg.new_text
        or ("（本文を読み取れませんでした）" if case.needs_human else "（本文なし）")
    )
    # A failed acknowledgement asks for another way to reach the resident. A partner that
    # sees the contact is told who owns the case (to report back to); one that does not is
    # told whom to ask, with the case number: the general desk (``contact_desk``).
    desk = directory.general_desk if directory is not None else None
    owner = directory.get(case.partner) if directory is not None else None
    return {
        "number": case.number,
        "received": from_db(msg.received_at),
        "followup": msg.is_followup and not notice,
        "notice": notice,
        "topic_ja": TOPIC_JA.get(case.topic, case.topic),
        "secondary": [TOPIC_JA.get(t, t) for t, _s in json.loads(case.topics)[1:]],
        "urgent": case.urgent,
        "reasons": reasons,
        "ack_failed": case.ack_state == ACK_FAILED,
        "ack_in_doubt": case.ack_state == "ack_in_doubt",
        "needs_human": case.needs_human,
        "show_sender": partner.show_sender,
        "sender": case.sender if partner.show_sender else "",
        "phones": json.loads(case.phone or "[]") if partner.show_sender else [],
        "owner": owner.name if owner is not None and owner.id != partner.id else "",
        "desk_name": desk.name if desk is not None and desk.id != partner.id else "",
        "desk_phone": desk.phone if desk is not None and desk.id != partner.id else "",
        "text": _shared_text(partner, text) if text else "",
    }


Listed = tuple[StoredMessage, Case, bool]  # a message, its case, whether as the notice


def _noticed_before(session: Session, partner: Partner, cases: dict[int, Case]) -> set[int]:
    """Which of ``cases`` ``partner`` was already sent the failed-acknowledgement notice of:
    a digest listed one of the case's automatic mails, or (the desk, for another partner's
    case) any of its messages. A second bounce of the same acknowledgement (a "delayed"
    report, then the failure) tells it nothing new."""
    query = (
        select(DigestEntry.case_id, _automatic_sql())
        .join(StoredMessage, col(DigestEntry.message_row) == col(StoredMessage.id))
        .where(DigestEntry.partner == partner.id, col(DigestEntry.case_id).in_(list(cases)))
    )
    return {
        case_id
        for case_id, automatic in session.exec(query).all()
        if automatic or not _concerns(partner, cases[case_id])
    }


def _without_repeated_notices(
    session: Session, partner: Partner, rows: list[Listed]
) -> list[Listed]:
    """``rows`` without the notices that would repeat what the digest says anyway: a case
    listed with another message in the same digest (that entry carries the note), a second
    notice of one case, and a case noticed in an earlier digest. They are still recorded
    as listed with the digest, so no later digest repeats them either."""
    notices = {c.id: c for _m, c, notice in rows if notice and c.id is not None}
    if not notices:
        return rows
    seen = {c.id for _m, c, notice in rows if not notice}
    seen |= _noticed_before(session, partner, notices)
    shown: list[Listed] = []
    for m, c, notice in rows:
        if notice:
            if c.id in seen:
                continue
            seen.add(c.id)
        shown.append((m, c, notice))
    return shown


COORDINATOR_ID = "coordinator"


def coordinator(svc: Service) -> Partner | None:
    """The city coordinator's overview: every case, in full, when ``[service] coordinator``
    names recipients. Modelled as a partner that concerns everything."""
    if not svc.settings.coordinator:
        return None
    desk = svc.directory.general_desk
    return Partner(
        id=COORDINATOR_ID,
        name="笠岡市 孤独・孤立対策 コーディネーター（全件）",
        topics=(),
        digest_to=tuple(svc.settings.coordinator),
        phone=desk.phone,
        hours=desk.hours,
        share="full",
        show_sender=True,
    )


def digest_times(svc: Service, partner: Partner) -> tuple[str, ...]:
    """When a partner's digest goes out: its own ``digest_times`` or the service default."""
    return partner.digest_times or svc.settings.digest_times


def _shared_text(partner: Partner, text: str) -> str:
    if not partner.show_sender:
        text = redact_contact(text)
    return text if partner.share == "full" else excerpt(text)


def _warn_of_stranded_cases(svc: Service, known: frozenset[str]) -> None:
    """Log, once per digest run, how many open cases belong to a partner id that is not
    in partners.toml (their new messages go to the general desk's digest)."""
    with session_scope(svc.engine) as session:
        stray = session.exec(
            select(Case.partner)
            .where(
                Case.mailbox == svc.settings.mailbox.key,
                col(Case.partner).not_in(sorted(known)),
                Case.status != "closed",
            )
            .distinct()
        ).all()
    if stray:
        log.warning(
            "open cases belong to partner ids not in partners.toml; the general desk's "
            "digest lists their new messages (reassign them with service.py reassign)",
            extra={"partners": sorted(stray)},
        )


def queue_digests(svc: Service, now: datetime, at: str | None = None) -> dict[str, int]:
    """Queue one digest per partner with new messages; returns {partner id: messages listed}.

    ``at`` ("HH:MM") limits it to the partners scheduled at that time (the scheduled job);
    without it every partner is considered (the ``digest`` command).
    """
    queued: dict[str, int] = {}
    overview = coordinator(svc)
    desk = contact_desk(svc)
    general = svc.directory.general_desk.id
    known = frozenset(p.id for p in svc.directory.partners)
    _warn_of_stranded_cases(svc, known)
    for partner in [*svc.directory.partners, *([overview] if overview else [])]:
        if at is not None and at not in digest_times(svc, partner):
            continue
        with session_scope(svc.engine) as session:
            serialise(session, f"digest:{svc.settings.mailbox.key}")
            notices = desk is not None and partner.id == desk.id
            strays = known if partner.id == general else None
            rows = _unlisted(session, svc.settings.mailbox.key, partner, notices, strays)
            # ``_unlisted`` already asks the database for exactly these; the check stays
            # as the definition (and for a dialect without JSON functions: all of them).
            listed = [(m, c, _listed_as(partner, m, c, notices, strays)) for m, c in rows]
            mine = [(m, c) for m, c, how in listed if how is not None]
            shown = _without_repeated_notices(
                session, partner, [(m, c, how == "notice") for m, c, how in listed if how]
            )
            if not shown:
                continue
            entries = [_entry(partner, m, c, svc.directory, n) for m, c, n in shown]
            message = render_digest(
                svc.env,
                sender=svc.sender,
                partner=partner,
                entries=entries,
                now=now,
                tz=svc.calendar.tz,
                fallback=True,
            )
            row = queue_mail(
                session,
                kind="digest",
                key=f"digest:{partner.id}:{mine[0][0].id}-{mine[-1][0].id}:{to_db(now).isoformat()}",
                case=None,
                to=list(partner.digest_to),
                message=message,
                priority=5,
                now=now,
                partner=partner.id,
                mailbox=svc.settings.mailbox.key,
            )
            session.flush()
            assert row.id is not None
            for m, c in mine:
                assert m.id is not None and c.id is not None
                session.add(
                    DigestEntry(
                        partner=partner.id,
                        message_row=m.id,
                        case_id=c.id,
                        outbox_id=row.id,
                        created_at=to_db(now),
                    )
                )
                # Queued, not yet sent: ``intake.send`` adds ``sent:digest`` or
                # ``failed:digest`` (the case is then listed again) per case.
                record_event(
                    session, "digest", c.id, f"partner {partner.id} (outbox {row.id}, queued)"
                )
            queued[partner.id] = len(mine)
    return queued
