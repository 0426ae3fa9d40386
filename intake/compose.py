"""Compose: render acknowledgements, alerts and digests into ``EmailMessage`` objects.

Pure: takes values, returns messages; sending is ``intake.send``'s job. Templates live in
``templates/<audience>/<purpose>.<txt|html>.j2`` and render with ``StrictUndefined`` so a
missing value fails ``check`` instead of sending a half-empty mail to a frightened resident.

Every mail we send carries ``Auto-Submitted`` (RFC 3834) and an ``X-Loop`` marker so that
auto-responders do not answer it and, if one does anyway, we recognise our own mail.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from intake.businessdays import (
    BusinessCalendar,
    format_date_ja,
    format_day_ja,
    format_time_ja,
    office_hours_ja,
    parse_hhmm,
)
from intake.partners import Directory

log = logging.getLogger(__name__)

LOOP_HEADER = "X-Loop"
MARKER_HEADER = "X-Soudan-Intake"
ACK_SUBJECT = "【笠岡市】メールを受け付けました"

TEMPLATES = {
    "ack": ("resident/ack.txt.j2", None),
    "alert": ("oncall/urgent_alert.txt.j2", None),
    "digest": ("partner/digest.txt.j2", "partner/digest.html.j2"),
}


def template_environment(templates_dir: Path) -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["jst"] = lambda dt, tz=None: _local_time(dt, tz) if dt else ""
    env.filters["day_ja"] = format_day_ja
    return env


def _local_time(dt: datetime, tz: Any) -> str:
    """``dt`` as staff read it: the templates' ``jst`` filter and the built-in texts."""
    return dt.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _local_time_or(value: Any, tz: Any, unknown: str) -> str:
    """``_local_time``, or ``unknown`` when ``value`` is no datetime (built-in texts must
    go out whatever the context they were given)."""
    try:
        return _local_time(value, tz)
    except Exception:
        return unknown


@dataclass(frozen=True)
class Sender:
    address: str
    name: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2] or "localhost"


def new_message_id(kind: str, domain: str) -> str:
    """A Message-ID nobody outside can predict: 128 bits from ``secrets``.

    Why not ``email.utils.make_msgid``: its random part comes from ``random`` (a Mersenne
    Twister whose state can be rebuilt from enough outputs) and it also carries the time
    and our pid. Residents receive acknowledgement Message-IDs; an alert's Message-ID and
    the confirmation code derived from it (``ack_code``) are what let a reply acknowledge
    an alert, so they must not be guessable from the acknowledgements.
    """
    return f"<{secrets.token_hex(16)}.{kind}@{domain}>"


@lru_cache(maxsize=256)
def _folded(name: str, display_name: str, value: str) -> str:
    """A header folded once (RFC 2047 encoding of Japanese is the costly part of composing:
    ~2 ms per fold); the same From and fixed subjects recur on every acknowledgement."""
    source: Any = Address(display_name=display_name, addr_spec=value) if display_name else value
    header = policy.default.header_factory(name, source)
    folded = header.fold(policy=policy.default)
    return folded[len(name) + 2 :].rstrip("\r\n")


# ``policy.default`` except that a header set raw (``set_raw``) goes out as written, never
# re-folded: its refolding of a line over 78 characters is what turned a long Message-ID in
# In-Reply-To into RFC 2047 encoded words (``set_thread_headers``). Headers set as values
# (``msg[name] = value``) are folded as ``policy.default`` folds them whatever this says.
WIRE_POLICY = policy.default.clone(refold_source="none")


def _base_message(
    sender: Sender, to: list[str], subject: str, now: datetime, auto_submitted: str, kind: str
) -> EmailMessage:
    msg = EmailMessage(policy=WIRE_POLICY)
    msg.set_raw("From", _folded("From", sender.name, sender.address))
    msg["To"] = ", ".join(to)
    if subject == ACK_SUBJECT:
        msg.set_raw("Subject", _folded("Subject", "", subject))
    else:
        msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = new_message_id(kind, sender.domain)
    msg["Auto-Submitted"] = auto_submitted
    msg["X-Auto-Response-Suppress"] = "All"
    msg[LOOP_HEADER] = sender.address
    msg[MARKER_HEADER] = kind
    return msg


def render_ack(
    env: Environment,
    *,
    sender: Sender,
    to: str,
    case_number: str,
    in_reply_to: str | None,
    references: list[str],
    received: datetime,
    calendar: BusinessCalendar,
    directory: Directory,
    now: datetime,
    language: str = "ja",
    digest_times: Sequence[str] | None = None,
) -> EmailMessage:
    """The resident's acknowledgement: neutral subject and opening, phone lines, 110/119.

    Neutral because a parent, partner or abuser may see the phone's lock screen: the
    subject and first lines never name the topic nor repeat the resident's words.
    ``language`` is the triage's guess of the mail's language: other than "ja", a short
    block in simple English follows the first line. ``digest_times`` ("HH:MM") are those
    of the partner that owns the case, for the reply time promised (default: the
    calendar's ``[service] digest_times``).
    """
    msg = _base_message(sender, [to], ACK_SUBJECT, now, "auto-replied", "ack")
    set_thread_headers(msg, in_reply_to, references)
    text = _ack_text(
        env, sender, case_number, received, calendar, directory, now, language, digest_times
    )
    msg.set_content(text, charset="utf-8", cte="8bit")
    return msg


# What the cheap path may write without the header registry: a dot-atom address (RFC 5322
# 3.4.1) and message identifiers made of visible ASCII. Anything else takes the slow path.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9.-]+\Z"
)
_PLAIN_MSGID = re.compile(r"<[!-;=?-~]+>\Z")
_LINE = 78  # RFC 5322 2.1.1 "SHOULD" limit, which policy.default folds to
_MAX_LINE = 998  # RFC 5322 2.1.1 "MUST" limit, CRLF not counted
# The longest identifier written: one that fits on the "In-Reply-To: " line within 998.
_MAX_MSGID = _MAX_LINE - len("In-Reply-To: ")
_MAX_REFERENCES = 10


def thread_ids(in_reply_to: str | None, references: Sequence[str]) -> tuple[str | None, list[str]]:
    """What a reply to a mail with Message-ID ``in_reply_to`` and ``references`` may carry:
    (In-Reply-To, References), each identifier a well-formed ``<...>`` of visible ASCII.

    Why filter: a resident's mailer may send a Message-ID without angle brackets, with a
    space or with non-ASCII (``intake.parse`` keeps what it finds). Written into our header
    it would be RFC 2047-encoded or split, which threads nothing and may make a strict
    parser drop the header; such an identifier is left out, the others kept. Nothing
    without ``in_reply_to`` (no Message-ID to reply to: no thread headers, as before).
    References is the parent's references followed by its Message-ID (RFC 5322 3.6.4),
    at most 10: the first (the thread's root, which mailers thread by when a message in
    between is missing) and the last 9.
    """
    if not in_reply_to:
        return None, []
    chain = [i for i in (*references, in_reply_to) if _valid_msgid(i)]
    # An identifier named twice (a mailer that lists its own): once, at its last place.
    chain = list(dict.fromkeys(reversed(chain)))[::-1]
    if len(chain) > _MAX_REFERENCES:
        chain = [chain[0], *chain[-(_MAX_REFERENCES - 1) :]]
    return (in_reply_to if _valid_msgid(in_reply_to) else None), chain


def _valid_msgid(value: str) -> bool:
    return len(value) <= _MAX_MSGID and _PLAIN_MSGID.match(value) is not None


def _fold_ids(name: str, ids: list[str]) -> str:
    """``Name: <a> <b>`` with a fold only between identifiers, never inside one nor between
    the name and the first: a line runs past 78 characters rather than break an
    identifier (``thread_ids`` keeps every one under 998 on its line)."""
    lines = [f"{name}: {ids[0]}"]
    for one in ids[1:]:
        if len(lines[-1]) + 1 + len(one) <= _LINE:
            lines[-1] += " " + one
        else:
            lines.append(" " + one)
    return "\n".join(lines)


def set_thread_headers(
    msg: EmailMessage, in_reply_to: str | None, references: Sequence[str]
) -> None:
    """Put In-Reply-To and References on ``msg`` (made by ``_base_message``) so that the
    reader's mail app threads it under the mail it answers (``thread_ids``).

    Why raw: ``policy.default`` treats both headers as unstructured text and writes an
    identifier that does not fit on a 78-character line (a phone mailer's long local
    part) as RFC 2047 encoded words, or folds inside it; the resident's mail app then
    threads nothing. Set raw, folded only between identifiers (``_fold_ids``), under
    ``WIRE_POLICY`` they go out byte for byte.
    """
    irt, refs = thread_ids(in_reply_to, references)
    if irt:
        msg.set_raw("In-Reply-To", _fold_ids("In-Reply-To", [irt])[len("In-Reply-To: ") :])
    if refs:
        msg.set_raw("References", _fold_ids("References", refs)[len("References: ") :])


def _fold_plain(name: str, words: list[str]) -> str | None:
    """``Name: word word ...`` folded at spaces the way ``policy.default`` folds ASCII, or
    None when a word cannot fit on a line of its own (the caller then takes the slow path)."""
    lines: list[str] = [f"{name}:"]
    for word in words:
        if len(word) + 1 > _LINE:
            return None
        if len(lines[-1]) + 1 + len(word) <= _LINE:
            lines[-1] += " " + word
        else:
            lines.append(" " + word)
    return "\n".join(lines)


def ack_bytes(
    env: Environment,
    *,
    sender: Sender,
    to: str,
    case_number: str,
    in_reply_to: str | None,
    references: list[str],
    received: datetime,
    calendar: BusinessCalendar,
    directory: Directory,
    now: datetime,
    message_id: str | None = None,
    language: str = "ja",
    digest_times: Sequence[str] | None = None,
) -> tuple[str, bytes]:
    """(Message-ID, wire bytes) of ``render_ack``'s mail, built without ``EmailMessage``.

    Why: building the message through ``email``'s header registry (a parse and a class per
    header) cost ~1 ms of the ~1.3 ms an acknowledgement took, for headers that are the
    same on every acknowledgement but To, Date, Message-ID, In-Reply-To and References.
    The bytes are those ``bytes(render_ack(...))`` gives (tests compare them byte for
    byte): the constant headers come pre-folded (RFC 2047) from ``_folded``, the varying
    ones are plain ASCII checked here, and In-Reply-To/References are written as
    ``set_thread_headers`` writes them. When To or our Message-ID is not plain (an address
    needing quotes), the slow path builds the mail.
    """
    message_id = message_id or new_message_id("ack", sender.domain)
    plain = _PLAIN_ADDRESS.match(to) is not None and _PLAIN_MSGID.match(message_id) is not None
    heads = [_fold_plain("To", [to]), _fold_plain("Message-ID", [message_id])]
    if not plain or any(h is None for h in heads):
        slow = render_ack(
            env,
            sender=sender,
            to=to,
            case_number=case_number,
            in_reply_to=in_reply_to,
            references=references,
            received=received,
            calendar=calendar,
            directory=directory,
            now=now,
            language=language,
            digest_times=digest_times,
        )
        if message_id:
            slow.replace_header("Message-ID", message_id)
        return str(slow["Message-ID"]), bytes(slow)
    to_line, id_line = (h or "" for h in heads)
    irt, refs = thread_ids(in_reply_to, references)
    text = _ack_text(
        env, sender, case_number, received, calendar, directory, now, language, digest_times
    )
    lines = [
        "From: " + _folded("From", sender.name, sender.address),
        to_line,
        "Subject: " + _folded("Subject", "", ACK_SUBJECT),
        "Date: " + format_datetime(now),
        id_line,
        "Auto-Submitted: auto-replied",
        "X-Auto-Response-Suppress: All",
        f"{LOOP_HEADER}: {sender.address}",
        f"{MARKER_HEADER}: ack",
    ]
    if irt:
        lines.append(_fold_ids("In-Reply-To", [irt]))
    if refs:
        lines.append(_fold_ids("References", refs))
    lines += [
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
        "MIME-Version: 1.0",
    ]
    # set_content(cte="8bit") splits the encoded text into lines and ends each with "\n".
    body = b"\n".join(text.encode("utf-8").splitlines()) + b"\n"
    return message_id, ("\n".join(lines) + "\n\n").encode("ascii") + body


# English names of the emergency numbers partners.toml lists, for the block a resident
# who did not write in Japanese reads; a number not named here is shown without a name.
EMERGENCY_EN = {"110": "police", "119": "ambulance or fire"}


# What each phone line is for, in a resident's words (the city's table of lines, in
# /work/shared/seed), by the topics its partner owns: a resident cannot tell whom to call
# from three names. Every line is listed whatever the mail was about, so this says nothing
# of the resident's own topic.
PHONE_SUBJECTS_JA = {
    "isolation": "眠れないほどの悩みや不安、ひとりぼっちでつらいこと",
    "bullying": "いじめや、友だち・家族・先生についての悩み",
    "poverty": "お金や生活の困りごと",
    "caregiving": "子育てや家族の介護",
    "volunteer": "ボランティアや地域の活動",
    "other": "そのほかの悩み",
}


def _phone_subjects(directory: Directory) -> dict[str, str]:
    """Partner id -> what its phone line is for ("" when none of its topics is known).

    A partner's own ``subjects`` text, should partners.toml ever carry one, wins over the
    words made from its topics.
    """
    out: dict[str, str] = {}
    for partner in directory.partners:
        own = getattr(partner, "subjects", "")
        words = [PHONE_SUBJECTS_JA[t] for t in partner.topics if t in PHONE_SUBJECTS_JA]
        out[partner.id] = own if isinstance(own, str) and own else "、".join(words)
    return out


def _emergency_en(directory: Directory) -> str:
    """``110 (police) or 119 (ambulance or fire)``: the directory's numbers, named in English."""
    named = [
        f"{e.phone} ({EMERGENCY_EN[e.phone]})" if e.phone in EMERGENCY_EN else e.phone
        for e in directory.emergency
    ]
    return " or ".join(named)


def _ack_text(
    env: Environment,
    sender: Sender,
    case_number: str,
    received: datetime,
    calendar: BusinessCalendar,
    directory: Directory,
    now: datetime,
    language: str = "ja",
    digest_times: Sequence[str] | None = None,
) -> str:
    """The acknowledgement's text (one definition for both ways of building the mail).

    The reply time is judged from when the case is stored (``now``, if later than
    ``received``): a digest that went out before the service read the mail (a backlog,
    an outage) cannot carry it. The day is named (本日（11月27日）) because an
    acknowledgement may be read, or after an SMTP outage delivered, on a later day.
    """
    times = None if digest_times is None else [parse_hhmm(t) for t in digest_times]
    deadline, same_day = calendar.reply_expected(max(received, now), times)
    local = deadline.astimezone(calendar.tz)
    noon = local.hour == 12 and local.minute == 0
    return env.get_template(TEMPLATES["ack"][0]).render(
        case_number=case_number,
        same_day=same_day,
        deadline=local,
        deadline_day=format_day_ja(local),
        deadline_date=format_date_ja(local),
        deadline_time="お昼" if noon else format_time_ja(local),
        out_of_hours=not calendar.is_open(received),
        office_hours=office_hours_ja(calendar),
        language=language,
        emergency_en=_emergency_en(directory),
        partners=directory.partners,
        subjects=_phone_subjects(directory),
        always_open=directory.always_open,
        emergency=directory.emergency,
        from_name=sender.name,
    )


# The confirmation code of an alert or escalation (``ack_code``): letters and digits a
# tired reader cannot confuse on a phone (no 0/O, no 1/I), 32 of them so each is 5 bits.
ACK_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
ACK_CODE_LENGTH = 5  # 25 bits: one guess in ~33 million
ACK_CODE_LABEL = "確認コード"


def ack_code(message_id: str) -> str:
    """The confirmation code an alert or escalation carries in its subject.

    Why: a phone mailer's reply keeps the subject but drops In-Reply-To, and a From
    address is no proof (anyone may forge the on-call address and read a case number off
    the resident's acknowledgement). So a reply without thread headers acknowledges an
    alert only when its subject keeps the code, which only the alert's readers have seen.
    Derived from the mail's Message-ID (random, stored in the outbox row) with SHA-256:
    no secret to keep and no column to add, and whoever matches a reply recomputes it.
    """
    n = int.from_bytes(hashlib.sha256(message_id.encode("utf-8")).digest()[:4], "big")
    return "".join(ACK_CODE_ALPHABET[(n >> (5 * i)) & 31] for i in range(ACK_CODE_LENGTH))


def with_ack_code(msg: EmailMessage, subject: str) -> str:
    """Put ``subject`` plus the code of ``msg``'s own Message-ID on ``msg``; return the code.

    The Message-ID is only known once ``_base_message`` made it, hence the replacement.
    """
    code = ack_code(str(msg["Message-ID"]))
    msg.replace_header("Subject", f"{subject} {ACK_CODE_LABEL} {code}")
    return code


def render_alert(
    env: Environment,
    *,
    sender: Sender,
    to: list[str],
    case: dict[str, Any],
    now: datetime,
    tz: Any,
    escalation: int = 0,
    fallback: bool = False,
) -> EmailMessage:
    """The on-call alert: everything needed to call back, readable on a phone at night.

    Its subject ends with its confirmation code (``ack_code``), which the text asks the
    reader to keep when replying: a reply whose mailer drops the thread headers
    acknowledges the alert only with it. ``fallback`` (the pipeline and escalation; not
    ``check``, which must see the error): a template that fails to render gives the
    built-in text (``plain_alert_text``) instead of no alert.
    """
    prefix = "【至急・再通知】" if escalation else "【至急】"
    subject = f"{prefix}緊急の可能性がある相談 {case['number']}"
    msg = _base_message(sender, to, subject, now, "auto-generated", "alert")
    code = with_ack_code(msg, subject)
    try:
        text = env.get_template(TEMPLATES["alert"][0]).render(
            case=case, tz=tz, escalation=escalation, from_address=sender.address, code=code
        )
    except Exception as exc:
        if not fallback:
            raise
        # Staff may edit the template; a mistake in a branch ``check`` did not take (the
        # night deadline, a re-notice) must never stop an alert: that lost the alert, its
        # quarantine alert and every escalation (review rv10a F1). The built-in text says
        # what a person needs to act; the mistake is logged for the contractor.
        log.error(
            "alert template %s failed (%s%s); the alert goes out in the built-in text",
            TEMPLATES["alert"][0],
            type(exc).__name__,
            _template_line(exc),
        )
        text = plain_alert_text(case, tz, escalation, code)
    msg.set_content(text, charset="utf-8", cte="8bit")
    return msg


def _template_line(exc: BaseException) -> str:
    """ ", line N" of the template line that raised, when the traceback names one."""
    lineno = getattr(exc, "lineno", None)
    if lineno is None:
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.endswith(".j2"):
                lineno = tb.tb_lineno
            tb = tb.tb_next
    return f", line {lineno}" if lineno else ""


def plain_alert_text(case: dict[str, Any], tz: Any, escalation: int, code: str) -> str:
    """The alert in a built-in text, for when the staff-edited template fails to render.

    Keeps the lines ``intake.quotes`` knows our alert by (its first line, the re-notice
    line, 「緊急と判断した理由:」), so the on-call person's reply quoting it is no new
    crisis, and the subject's case number and code, by which the reply acknowledges it."""

    def get(key: str, default: Any = "") -> Any:
        try:
            value = case.get(key, default)
        except Exception:
            return default
        return default if value is None else value

    def when(value: Any) -> str:
        return _local_time_or(value, tz, "（不明）")

    quarantined = get("automatic") == "quarantined"
    lines: list[str] = []
    if escalation:
        lines.append(f"※ これは再通知（{escalation}回目）です。まだ誰も対応の確認をしていません。")
    lines += [
        "緊急の可能性がある相談を受け付けました。",
        "すぐに内容を確認し、相談者に連絡してください。",
        "命の危険が差し迫っていると判断したときは、ためらわず110番・119番に通報してください。",
        "（通知文のテンプレートに誤りがあるため、簡易な形式でお送りしています。）",
        "",
        f"受付番号: {get('number', '（不明）')}",
        f"受信日時: {when(get('received', None))}",
        f"折り返し期限: できるだけ早く（期限 {when(get('callback_due', None))}）"
        if get("callback_due", None)
        else "折り返し期限: できるだけ早く",
        f"担当: {get('partner_name', '（不明）')}",
        f"送信者: {get('sender') or '（不明）'}",
        "電話番号（本文から）: " + (", ".join(map(str, get("phones", []) or [])) or "（記載なし）"),
        "",
        "通知の理由:" if quarantined else "緊急と判断した理由:",
    ]
    if quarantined:
        # review rv10c R6: the built-in text read like an ordinary urgent case
        lines.append("・メールを自動で読み取れませんでした（緊急かどうか判断できません）")
    reasons = [] if quarantined else (get("reasons", []) or [])
    for reason in reasons:
        try:
            lines.append(f"・「{reason['surface']}」（規則 {reason['rule']}）")
        except Exception:
            lines.append("・（理由を表示できません）")
    if not reasons and not quarantined:
        lines.append("・（内容の確認が必要です）")
    number = get("number", "")
    show = get("show_command") or f"python service.py show {number}"
    lines += [
        "",
        "原文はサーバーで次を実行して確認してください。",
        f"  {show}",
        "",
        "対応を始めたら、このメールに返信してください（本文は空で構いません）。",
        f"件名の「{number}」と「確認コード {code}」は消さずに返信してください。",
        f"または（サーバーで）: {get('ack_command') or f'python service.py ack {number}'}",
        "",
    ]
    return "\n".join(lines)


def render_digest(
    env: Environment,
    *,
    sender: Sender,
    partner: Any,
    entries: list[dict[str, Any]],
    now: datetime,
    tz: Any,
    fallback: bool = False,
) -> EmailMessage:
    """A partner's digest: the new cases since its last digest, text and HTML parts.

    ``fallback`` (the digest job; not ``check``): a template that fails to render gives
    the built-in text (``plain_digest_text``), without the HTML part, instead of no digest
    (review rv10a F1b: a typo in one branch stopped every partner's digest)."""
    when = now.astimezone(tz).strftime("%m/%d %H:%M")
    subject = f"【相談ダイジェスト】{partner.name} 新着 {len(entries)} 件 ({when})"
    msg = _base_message(sender, list(partner.digest_to), subject, now, "auto-generated", "digest")
    context = {"partner": partner, "entries": entries, "tz": tz, "now": now}
    txt_name, html_name = TEMPLATES["digest"]
    try:
        text = env.get_template(txt_name).render(**context)
        html = env.get_template(html_name).render(**context) if html_name else None
    except Exception as exc:
        if not fallback:
            raise
        log.error(
            "digest template failed (%s%s); the digest goes out in the built-in text",
            type(exc).__name__,
            _template_line(exc),
        )
        text, html = plain_digest_text(partner, entries, now, tz), None
    msg.set_content(text, charset="utf-8", cte=_digest_text_cte(text))
    if html is not None:
        # No ``cte``: the email package keeps 8bit only for lines of at most 78 bytes and
        # picks base64 (quoted-printable for mostly ASCII) otherwise, so no line is long.
        msg.add_alternative(html, subtype="html", charset="utf-8")
    return msg


def plain_digest_text(partner: Any, entries: list[dict[str, Any]], now: datetime, tz: Any) -> str:
    """A digest in a built-in text, for when the staff-edited template fails to render.

    Keeps the opening line ``intake.quotes`` knows our digest by, and only what each
    entry already holds (the text is already masked for a partner without
    ``show_sender``)."""

    def when(value: Any) -> str:
        return _local_time_or(value, tz, "")

    lines = [
        f"{getattr(partner, 'name', '')} ご担当者様",
        "",
        f"前回のお知らせ以降に届いた相談 {len(entries)} 件をお知らせします。",
        f"（{when(now)} 時点。通知文のテンプレートに誤りがあるため、簡易な形式でお送りしています）",
        "",
    ]
    for e in entries:
        lines += ["────────────────", f"受付番号: {e.get('number', '')}"]
        if e.get("followup"):
            lines[-1] += "（続報）"
        lines += [f"受信日時: {when(e.get('received'))}", f"分類: {e.get('topic_ja', '')}"]
        if e.get("urgent"):
            lines.append("緊急: はい — " + "、".join(map(str, e.get("reasons") or [])))
        if e.get("ack_failed"):
            lines.append("注意: 相談者への自動返信が届きませんでした。")
        if e.get("needs_human"):
            lines.append("注意: 自動判定できませんでした。本日中に内容を確認してください。")
        if e.get("sender"):
            phones = ", ".join(map(str, e.get("phones") or []))
            lines.append(f"送信者: {e['sender']}" + (f" / 電話: {phones}" if phones else ""))
        if e.get("text") and not e.get("notice"):
            lines += ["", str(e["text"])]
        lines.append("")
    lines += [
        "────────────────",
        "このメールは笠岡市の相談受付システムが自動で送っています。",
        "このメールに返信しても、相談者には届きません。",
        "",
    ]
    return "\n".join(lines)


# RFC 5322 2.1.1 / RFC 5321 4.5.3.1.6: at most 998 bytes on a line, CRLF not counted.
MAX_LINE_BYTES = 998


def _digest_text_cte(text: str) -> str:
    """The digest text part's transfer encoding: 8bit when every line fits, else base64.

    Why: a resident who types one paragraph on a phone writes a line of 1,000+ bytes in
    UTF-8 (334 Japanese letters), and the full-text digest copies it as is. In an 8bit
    part that line breaks RFC 5321's limit: aiosmtpd (and strict relays) answer 500 and
    the digest fails for good; Postfix cuts it, maybe through a character. base64 keeps
    every line at 76 and the words intact. Not ``cte=None``: with ``policy.default`` it
    picks base64 for any line over 78 bytes (26 Japanese letters), i.e. nearly every
    digest, where 8bit is fine and stays readable in the relay's queue and archives.
    """
    # Split as ``set_content`` splits the encoded text (bytes: only CR and LF end a line;
    # ``str.splitlines`` would also end one at U+2028 or U+0085, which stay on the wire).
    longest = max(map(len, text.encode("utf-8").splitlines()), default=0)
    return "8bit" if longest <= MAX_LINE_BYTES else "base64"


def excerpt(text: str, limit: int = 120) -> str:
    """The first characters of a consultation, on one line, for partners that see excerpts."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
