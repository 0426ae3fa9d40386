"""Digest: each partner gets one mail listing its messages not yet sent to it.

"Since its last digest" is not a timestamp but a fact in the database: a ``DigestEntry``
row per (partner, message), unique, written in the same transaction as the digest's
outbox row. So a message is listed exactly once per partner, across restarts, and a
digest with nothing new is never created.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import col, select

from intake.compose import excerpt, render_digest
from intake.partners import Partner
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

TOPIC_JA = {
    "bullying": "いじめ",
    "poverty": "生活困窮",
    "caregiving": "介護・ケア",
    "isolation": "孤独・孤立",
    "volunteer": "ボランティア",
    "other": "その他・総合",
}


def _concerns(partner: Partner, case: Case) -> bool:
    if partner.id == COORDINATOR_ID or case.partner == partner.id:
        return True
    secondary = {t for t, _s in json.loads(case.topics)[1:]}
    return bool(secondary.intersection(partner.also_notify))


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
)
_RUN = re.compile(
    "[" + _DIGIT + "](?:[" + _DIGIT + re.escape(_SEPARATOR) + r"\s]*[" + _DIGIT + "])?"
)
_DIGIT_CHAR = re.compile("[" + _DIGIT + "]")
# A number the on-call person could be shown as a phone has 10 or 11 digits; a run with
# fewer (a date, a time, 3人, 30,000円) is left for staff to read.
_PHONE_DIGITS = 10
# A calendar date (2026-11-26, 2026.11.26, 2026/11/26) inside such a run: no phone number
# starts with a 4-digit year, and staff need the date to understand the case
# ("2026-11-26 10時" has 10 digits).
_DATE = re.compile(
    r"(?<![0-9])(?:19|20)[0-9]{2}([" + re.escape(DASHES + "‐‒–—―./") + r"])"
    r"[0-9]{1,2}\1[0-9]{1,2}(?![0-9])"
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


def _fold(text: str) -> tuple[str, Sequence[int]]:
    """``text`` folded for matching, and for each folded character its index in ``text``."""
    if text.isascii():
        return text, range(len(text))
    parts: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        if ch.isascii():
            folded = ch
        elif unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            folded = ""
        else:
            folded = unicodedata.normalize("NFKC", ch)
        parts.append(folded)
        origin.extend([i] * len(folded))
    return "".join(parts), origin


def _phone_spans(folded: str, keep_dates: bool) -> list[tuple[int, int]]:
    """Folded spans, first digit to last, of each part of a run with phone-many digits."""
    spans: list[tuple[int, int]] = []
    for run in _RUN.finditer(folded):
        start, end = run.span()
        pieces: list[tuple[int, int]] = []
        at = start
        if keep_dates:
            for date in _DATE.finditer(folded, start, end):
                pieces.append((at, date.start()))
                at = date.end()
        pieces.append((at, end))
        for a, b in pieces:
            digits = [m.start() for m in _DIGIT_CHAR.finditer(folded, a, b)]
            if len(digits) >= _PHONE_DIGITS:
                spans.append((digits[0], digits[-1] + 1))
    return spans


def _redact(text: str, keep_dates: bool) -> str:
    """``text`` with addresses, then numbers, masked. Addresses first, so a carrier
    address (09012345678@docomo.ne.jp) is one address, not a number and a domain."""
    folded, origin = _fold(text)
    found: list[tuple[int, int, str]] = []
    blanked = list(folded)
    for m in _EMAIL.finditer(folded):
        found.append((m.start(), m.end(), _MASK_EMAIL))
        blanked[m.start() : m.end()] = "@" * (m.end() - m.start())  # no digit is left
    for a, b in _phone_spans("".join(blanked), keep_dates):
        found.append((a, b, _MASK_PHONE))
    out: list[str] = []
    at = 0
    for a, b, mask in sorted(found):
        start, end = origin[a], origin[b - 1] + 1
        out.append(text[at:start] + mask)
        at = end
    out.append(text[at:])
    return "".join(out)


def redact_contact(text: str) -> str:
    """Mask phone numbers and mail addresses for partners not allowed to see the sender's.

    At least every number ``intake.phones`` finds (what the on-call person is shown as a
    phone) is masked, however it is written; dates, times and amounts stay readable.
    """
    masked = _redact(text, keep_dates=True)
    if find_phones(masked):
        # A kept date made a phone number readable: mask without keeping dates.
        masked = _redact(text, keep_dates=False)
    return masked


def _entry(partner: Partner, msg: StoredMessage, case: Case) -> dict[str, Any]:
    surfaces = [str(r["surface"]) for r in json.loads(case.urgent_reasons)]
    if not partner.show_sender:
        # The words that raised the alert are the resident's own, like the text below.
        surfaces = [redact_contact(s) for s in surfaces]
    reasons = [f"「{s}」" for s in surfaces]
    # The sender's own words only: the whole body may quote our mails (with the resident's
    # address) or an earlier message.
    text = msg.new_text or (
        "（本文を読み取れませんでした）" if case.needs_human else "（本文なし）"
    )
    return {
        "number": case.number,
        "received": from_db(msg.received_at),
        "followup": msg.is_followup,
        "topic_ja": TOPIC_JA.get(case.topic, case.topic),
        "secondary": [TOPIC_JA.get(t, t) for t, _s in json.loads(case.topics)[1:]],
        "urgent": case.urgent,
        "reasons": reasons,
        "ack_failed": case.ack_state == "ack_failed",
        "needs_human": case.needs_human,
        "sender": case.sender if partner.show_sender else "",
        "phones": json.loads(case.phone or "[]") if partner.show_sender else [],
        "text": _shared_text(partner, text),
    }


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


def queue_digests(svc: Service, now: datetime, at: str | None = None) -> dict[str, int]:
    """Queue one digest per partner with new messages; returns {partner id: messages listed}.

    ``at`` ("HH:MM") limits it to the partners scheduled at that time (the scheduled job);
    without it every partner is considered (the ``digest`` command).
    """
    queued: dict[str, int] = {}
    overview = coordinator(svc)
    for partner in [*svc.directory.partners, *([overview] if overview else [])]:
        if at is not None and at not in digest_times(svc, partner):
            continue
        with session_scope(svc.engine) as session:
            done = select(DigestEntry.message_row).where(DigestEntry.partner == partner.id)
            rows = session.exec(
                select(StoredMessage, Case)
                .join(Case, col(StoredMessage.case_id) == col(Case.id))
                .where(
                    StoredMessage.mailbox == svc.settings.mailbox.key,
                    col(StoredMessage.status).in_(["processed", "quarantined"]),
                    col(StoredMessage.id).not_in(done),
                )
                .order_by(col(StoredMessage.id))
            ).all()
            mine = [(m, c) for m, c in rows if _concerns(partner, c)]
            if not mine:
                continue
            entries = [_entry(partner, m, c) for m, c in mine]
            message = render_digest(
                svc.env,
                sender=svc.sender,
                partner=partner,
                entries=entries,
                now=now,
                tz=svc.calendar.tz,
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
                record_event(session, "digest", c.id, f"partner {partner.id}")
            queued[partner.id] = len(mine)
    return queued
