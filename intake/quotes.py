"""Split a mail body into the resident's new words and the rest (quotes, signature).

Contract: ``split_quoted(text) -> (new, quoted)``; pure, never raises, and
``new``/``quoted`` together keep every non-blank line of ``text``. ``split_body(text)``
gives the same split plus the inline-forwarded part (``Parts.forwarded``), which the
parser adds to ``Letter.forwarded`` so an inline forward is checked for urgency as an
attached one is.

Why: triage must read what the resident wrote now, not our own acknowledgement quoted
back at us (which mentions "相談", "死にたい"-type help-line wording and would trigger
topics or urgent alerts by itself), nor, in the on-call person's reply, our alert (which
lists the resident's crisis words), nor a forwarded thread. But triage and the partner
digest read *only* the new words: every line wrongly put in ``quoted`` is a line nobody
triages and nobody reads in the digest. So every rule below cuts only on the shape real
mailers write, and when in doubt a line stays the resident's.

What counts as quoted:

* every line starting with ``>`` or ``＞`` (interleaved and bottom-posted replies keep
  the resident's lines between and below quote blocks as new text, also when the quoted
  lines are our own acknowledgement), plus the attribution line just above a quote block
  when it ends in a colon. A line opening with an emoticon (``＞＜``, ``>_<``) is not a
  quote;
* everything after a reply or forward header (but when the header sits right above a
  ``>`` block, only the header and the marked lines: the writer may answer below):
  ``On ... wrote:``, ``2026年11月26日(木) 10:00 山田 <…>:`` (also wrapped
  over two lines), ``2026/11/26 10:00、山田 <…> が書きました:`` (a Japanese "wrote" verb
  counts only before a colon and with a full date or an ``<address>``),
  ``-----Original Message-----``, ``-----元のメッセージ-----``, ``--- Forwarded message
  ---``, ``Begin forwarded message:``, ``転送されたメッセージ:``, an Outlook
  ``From:``/``差出人:`` block followed by ``Sent:``/``Date:``, and Outlook's ``_____``
  rule when such a block follows it;
* after a forward header, the forwarded part is also returned in ``Parts.forwarded``
  (one level of ``>`` removed, our own text left out); the part after any other reply
  header, prepared alike, in ``Parts.after_header`` (the parser treats it as forwarded
  when the subject is a forward's: Outlook forwards under the same header as it replies);
* a signature: the lines after an exact ``-- `` line (RFC 3676 s. 4.3), up to the first
  line that does not look like a signature line (a name among the first two lines, a
  phone, mail address, URL or postal address, a title or organisation, a mailer's tag;
  never a crisis word such as ``シニタイ``, ``自殺未遂``, ``I want to die``): from that
  line on the words are the sender's. A bare ``--``, or a ``-- `` whose first line is
  no signature line, is a divider, and the lines stay new;
* everything from the first line of our own acknowledgement, alert, escalation or
  partner digest (``OWN_TEXT_MARKERS``) on a line without ``>``, for phones that quote
  without any marker, also when the phone re-wrapped that first line over up to four
  lines; when that line starts with another quote mark (``| ``, ``｜``, ``》``, ``≫``),
  only the block of lines with that mark (and later lines with it) is quoted, as a
  ``>`` block is, and the sender may answer below it;
* an unmarked line right below a ``>`` line, when the mail holds our own text and the
  line is the rest of that quoted line of our acknowledgement that the mailer re-wrapped
  without its ``>`` (checked against the acknowledgement's fixed text, so a resident's
  answer between quoted lines stays new).

A line that merely contains a colon ("理由は次の通りです:") does not cut anything:
a header needs a date, an address or a "wrote" verb, or a ``>`` block right below.

Safety net: when the split leaves no new words at all and nothing in the body is our
own text (``_OWN_TEXT_TRACES``), the whole body is the new text (``Parts.kept_whole``):
an unknown header shape or a bare forward then still reaches triage and the digest
instead of an empty entry. It fires only when the new text is empty, not when a cut
removed "most" of the body: a partner or staff member answering in one line above a
quoted digest or third-party mail (Outlook quotes without ``>``) would otherwise have
the quoted residents' crisis words read as their own and raise false alerts.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "ATTRIBUTION_MARK",
    "OWN_TEXT_MARKERS",
    "Parts",
    "is_quote_header",
    "quote_depth",
    "split_body",
    "split_quoted",
    "without_own_text",
]

# The opening lines of our own mail that a reply may quote. Some phone mailers quote the
# previous mail with no ">" and no header at all; these lines then mark where our text
# starts: the acknowledgement (templates/resident/ack.txt.j2) names crisis help lines,
# and the on-call alert (templates/oncall/urgent_alert.txt.j2) lists the resident's
# crisis words as its reasons, so the on-call person's "対応します" quoting it would be
# read as urgent words of its own (a second alert, no acknowledgement, the reply in the
# partner's digest). Every escalation -- the template's and the content-free failover and
# late notices of ``intake.escalate`` -- opens with the re-notice line that ends with the
# third marker. Tests keep them in step with the templates and the notices.
OWN_TEXT_MARKERS: tuple[str, ...] = (
    "メールを受け取りました。送ってくださって、ありがとうございます。",
    "緊急の可能性がある相談を受け付けました。",
    "まだ誰も対応の確認をしていません。",
    # The partner digest's opening (templates/partner/digest.txt.j2): it lists residents'
    # crisis words, so our digest coming back (a redirect, an alias in digest_to) must not
    # be read as new words and alert on-call again (review rv9c R1).
    "前回のお知らせ以降に届いた相談",
)

# Other lines of our own mail, for the safety net only (never to cut): a reply quoting our
# acknowledgement whose first line a phone re-wrapped, or a partner quoting a digest, is
# still recognised as holding our text, so the net does not make it the sender's words.
_OWN_TEXT_TRACES: tuple[str, ...] = (
    "担当の者がこのメールにお返事します。",
    "このメールに返信すると、続きとして担当の者に届きます。",
    "いま命や体に危険があるときは、すぐに電話してください。",
    "緊急と判断した理由:",  # the on-call alert
    "電話番号（本文から）:",
)

# The acknowledgement's fixed text (templates/resident/ack.txt.j2 without its variables,
# and compose.PHONE_SUBJECTS_JA, which fill its "こんなときに:" lines); a test keeps them in
# step. Only for lines a mailer re-wrapped out of a ">" block of our acknowledgement: such
# a line is ours only when it continues the quoted line above it *inside* this text
# (review rv9c R4), so a resident's answer between quoted lines is never taken for ours.
_ACK_FIXED_TEXT: tuple[str, ...] = (
    "ごろまでに、担当の者がこのメールにお返事します。",
    "受付時間（平日 ",
    "）の外に届いたメールには、次の受付時間にお返事します。",
    "受付番号: ",
    "お電話でも相談できます。",
    "  こんなときに: ",
    "夜間や休日でも、",
    "）には24時間つながります。",
    "いま命や体に危険があるときは、すぐに電話してください。",
    "このメールに返信すると、続きとして担当の者に届きます。",
    "このメールは自動でお送りしています。",
    "We received your email. Thank you for writing to us.",
    "A staff member will reply to you (in Japanese or simple English).",
    "If you are in danger now, call ",
    " at any time (24 hours).",
    "（日本語のご案内は、この下にあります。）",
)
# compose.PHONE_SUBJECTS_JA: a partner's "こんなときに:" line joins some of them with "、".
_ACK_SUBJECTS: tuple[str, ...] = (
    "眠れないほどの悩みや不安、ひとりぼっちでつらいこと",
    "いじめや、友だち・家族・先生についての悩み",
    "お金や生活の困りごと",
    "子育てや家族の介護",
    "ボランティアや地域の活動",
    "そのほかの悩み",
)
_SUBJECT_ATOMS = frozenset(piece for subject in _ACK_SUBJECTS for piece in subject.split("、"))
# The ack's template lines as patterns (a variable is any text): a re-wrapped line whose
# join with the quoted line above is one of them, and which ends with the line's own
# closing sentence, is ours too ("…笠岡市こども" / "センター（0120-…）には24時間つながります。").
_ACK_LINE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(r"\s*" + r".+?".join(re.escape(part) for part in parts) + r"\s*"), parts[-1])
    for parts in (
        ("本日（", "）", "ごろまでに、担当の者がこのメールにお返事します。"),
        ("", "の", "ごろまでに、担当の者がこのメールにお返事します。"),  # "1月12日(火)のお昼"
        ("受付時間（平日 ", "）の外に届いたメールには、次の受付時間にお返事します。"),
        ("夜間や休日でも、", "（", "）には24時間つながります。"),
        ("You can call ", " at any time (24 hours)."),
    )
)
_LINE_TAIL_MIN = 5  # a line's closing sentence must be this long to vouch for a variable

# A quote mark, but not the start of an emoticon: ＞＜, >_<, ＞ω＜, >.< (a closing < or ＜
# within three characters, none of them a quote mark or a space).
_QUOTE_LINE = re.compile(r"^[ \t\u3000]*[>＞](?![^\s>＞]{0,3}[<＜])")
_QUOTE_MARKS = re.compile(r"^(?:[ \t\u3000]*[>＞](?![^\s>＞]{0,3}[<＜]))+[ \u3000]?")
_SEPARATOR = re.compile(
    r"^\s*(?:"
    r"-{2,}\s*(?:original message|forwarded message|元のメッセージ|転送メッセージ|"
    r"転送されたメッセージ|オリジナルメッセージ|以下転送|forwarded by)\s*-{2,}"
    r"|_{5,}"  # Outlook's underscore rule before a From:/Sent: block
    r"|begin forwarded message\s*[:：]"
    r"|転送されたメッセージ\s*[:：]"  # iPhone, Japanese
    r"|-{3,}\s*転送\s*-{3,}"
    r"|-{3,}\s*(?:original|forwarded)\s*-{0,}"
    r")\s*$",
    re.I,
)
_SEPARATOR_STARTS = frozenset("-_bB転")  # the first characters _SEPARATOR can match
# A separator that forwards: what follows is someone else's mail the sender passes on.
_FORWARD = re.compile(r"forward|転送", re.I)
# Outlook's rule: a separator only over an Outlook header block (else a divider).
_UNDERSCORES = re.compile(r"^\s*_{5,}\s*$")
_SIGNATURE = "-- "  # exactly, RFC 3676 s. 4.3; a bare "--" is a divider people type
# A Japanese "wrote" verb makes an attribution only as mailers write one: before a final
# colon, on a line with a full date (2026/11/26, 2026年11月26日) or an <address>
# (iPhone "2026/11/26 10:00、山田 <a@b> が書きました:", Thunderbird "2026/11/26 10:00 に
# 山田 さんは書きました:"). "昨日の夜23:00に遺書を書きました。" is a sentence.
_WROTE = re.compile(
    r"(?:wrote|writes|a écrit|schrieb|escribió)\s*[:：]\s*$"
    r"|^(?=.*(?:\d{4}\s*[/\-年.]\s*\d{1,2}\s*[/\-月.]\s*\d{1,2}|<[^<>@\s]+@[^<>\s]+>))"
    r".*(?:書きました|書いています|書かれました|からのメッセージ)\s*[:：]\s*$",
    re.I,
)
# Signature lines: short, no sentence, no P.S., and no hiragana once the mailers' own
# "…から送信" is taken out (names in kana, crisis words and sentences stay new text).
_SENTENCE_PUNCT = re.compile(r"[。！？]|[!?]\s*$")
_POSTSCRIPT = re.compile(r"^\s*(?:追伸|p\.?\s?s\b)", re.I)
_SENT_FROM = re.compile(r"(?:から|より)送信")
_HIRAGANA = re.compile(r"[\u3041-\u309f]")
_SIGNATURE_MAX_LINES = 6
_SIGNATURE_MAX_CHARS = 60
_DATEISH = re.compile(
    r"\d{4}[/\-年.]\s*\d{1,2}[/\-月.]\s*\d{1,2}"
    r"|\d{1,2}:\d{2}"
    r"|(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,",
    re.I,
)
_ADDRESSISH = re.compile(r"<[^<>@\s]+@[^<>\s]+>|[\w.+\-]+@[\w\-]+\.[\w.\-]+")
_ON_START = re.compile(r"^\s*(?:on|le|am|el)\s", re.I)
_OUTLOOK_FROM = re.compile(r"^\s*(?:from|差出人|送信者)\s*[:：]", re.I)
_OUTLOOK_NEXT = re.compile(r"^\s*(?:sent|date|to|subject|送信日時|日付|宛先|件名|cc)\s*[:：]", re.I)


def _ends_with_colon(line: str) -> bool:
    return line.rstrip().endswith((":", "："))


def is_quote_header(line: str, following: str = "") -> bool:
    """Whether ``line`` (with the line after it) opens a quoted or forwarded part.

    ``following`` lets a two-line English attribution (``On Thu, ... at 10:00 AM X``
    / ``<x@y> wrote:``) and an Outlook header block be recognised.
    """
    stripped = line.strip()
    if not stripped:
        return False
    # Every line of every mail comes through here: each pattern runs at most once, and the
    # separator pattern only on lines that can start one (its \s* is what strip() removed).
    if stripped[0] in _SEPARATOR_STARTS and _SEPARATOR.match(stripped):
        return True
    dateish = _DATEISH.search(stripped) is not None
    if _WROTE.search(stripped) and (dateish or _ADDRESSISH.search(stripped)):
        return True
    if dateish:
        if _ends_with_colon(stripped) and _ADDRESSISH.search(stripped):
            # 2026年11月26日(木) 10:00 山田 <taro@example.jp>:
            return True
        if _ON_START.match(stripped) and _WROTE.search(f"{stripped} {following.strip()}"):
            return True
        if _ends_with_colon(following) and "@" in following:
            # Gmail wraps a long attribution: "2026年11月26日(木) 10:00 笠岡市 <" / "x@y>:"
            return True
    # Outlook: "From: X" directly followed by "Sent:"/"送信日時:".
    return bool(_OUTLOOK_FROM.match(stripped) and _OUTLOOK_NEXT.match(following))


# Every line that can change the split contains one of these: a quote mark, a colon (every
# attribution, separator with a colon, Outlook header and "wrote:" has one), "--" or "_____"
# (separators, the signature), a date's digit after "/", "-", "." or "年", a time's colon, a
# weekday's comma, 書 or メッセージ (the Japanese "wrote" verbs), or our own opening line.
# Any other line is the resident's new text whatever surrounds it. Every alternative starts
# with a literal character and none is case-folded, so ``re`` scans for those characters
# alone: ~4 us a mail against ~130 us for the per-line tests (``split_quoted`` ran on
# every line of every mail). ``[^\S\n]`` keeps a match inside one line.
_MARKER_HEAD = 4  # characters of a marker the pre-scan looks for (a wrapped marker's start)
_MARKER_MAX_LINES = 4  # a marker re-wrapped over at most this many lines is still found
_MAY_MATTER_FIXED = (
    r">|＞|:|：|,|--|_____|/[^\S\n]*\d|-[^\S\n]*\d|\.[^\S\n]*\d|年[^\S\n]*\d|書|メッセージ"
)


@lru_cache(maxsize=4)
def _may_matter(markers: tuple[str, ...]) -> re.Pattern[str]:
    """The pre-scan for the markers ``_split`` will test. Built from the markers in use
    rather than once at import, so a changed ``OWN_TEXT_MARKERS`` (a new acknowledgement
    wording) can never be skipped by the pre-scan and triaged as the resident's words."""
    # A marker's first characters, not the whole marker: a phone re-wraps our first line
    # ("…送ってくださって" / "、ありがとうございます。", review rv9c R8).
    return re.compile(
        "|".join([_MAY_MATTER_FIXED, *(re.escape(m[:_MARKER_HEAD]) for m in markers)])
    )


def _lines_that_may_matter(text: str) -> list[int]:
    """Indexes (in ``text.split("\n")``) of the lines the pre-scan finds something in."""
    found: list[int] = []
    line = 0
    pos = 0  # start of line ``line``
    search = _may_matter(OWN_TEXT_MARKERS).search
    while True:
        m = search(text, pos)
        if m is None:
            return found
        line += text.count("\n", pos, m.start())
        found.append(line)
        end = text.find("\n", m.start())
        if end < 0:
            return found
        pos = end + 1
        line += 1


@dataclass(frozen=True)
class Parts:
    """A body split: ``new`` (triage reads it), ``quoted`` (every other non-blank line),
    ``forwarded`` (the inline-forwarded part, de-quoted once and without our own text, a
    copy of lines also in ``quoted``) and ``kept_whole`` (the safety net made the whole
    body the new text)."""

    new: str
    quoted: str
    forwarded: str = ""
    kept_whole: bool = False
    # What follows a reply header (Outlook block, "-----Original Message-----", an
    # attribution) prepared as ``forwarded`` is: the parser uses it when the subject says
    # the mail is a forward (Outlook's "FW:" has the same header block as its replies).
    after_header: str = ""
    # The name-like lines cut as a signature after "-- " (also in ``quoted``; not the
    # contacts, organisations or mailer tags): the sender's own, so ``pipeline.decide``
    # checks them for crisis words (ｼﾆﾀｲ, 練炭準備完了 pass as names; review rv9d F1).
    signature: str = ""
    # The ">"-marked lines that are not our own mail, marks removed (also in ``quoted``):
    # a friend's mail passed on by replying to it, lines a resident marks with ＞ for
    # emphasis. ``pipeline.decide`` checks them for crisis words (review rv9c R7, R10).
    quoted_words: str = ""
    # The reply header over ``after_header`` and the lines right below it (Outlook's
    # From:/差出人: block): whose mail was replied to (``ATTRIBUTION_MARK``).
    reply_header: str = ""


def split_quoted(text: str) -> tuple[str, str]:
    """Return ``(new, quoted)`` for a decoded body; see the module docstring."""
    parts = split_body(text)
    return parts.new, parts.quoted


def split_body(text: str) -> Parts:
    """The split of a decoded body with its inline-forwarded part; see the module docstring."""
    if not text:
        return Parts("", "")
    return _split_parts(text.split("\n"), _lines_that_may_matter(text))


def _split(lines: list[str], candidates: list[int] | None) -> tuple[str, str]:
    """``(new, quoted)`` of ``lines``; see ``_split_parts``."""
    parts = _split_parts(lines, candidates)
    return parts.new, parts.quoted


def _is_signature_line(line: str) -> bool:
    """Whether ``line`` can belong to a signature block: short, no sentence, no P.S.,
    and no hiragana beyond a mailer's "…から送信". Why so strict: whatever passes is never
    triaged, and short crisis words ("死にたい", "たすけて") have hiragana."""
    stripped = line.strip()
    if not stripped:
        return True
    if len(stripped) > _SIGNATURE_MAX_CHARS or _SENTENCE_PUNCT.search(stripped):
        return False
    if _POSTSCRIPT.match(stripped):
        return False
    return _HIRAGANA.search(_SENT_FROM.sub("", stripped)) is None


# What a signature line looks like (review rv9c R9): whatever else follows a "-- " line
# ends the signature and stays the sender's words ("-- " / "ソラ" / "シニタイ").
_SIG_NAME_JA = re.compile(r"^[\u4e00-\u9fff\u3005\u30a0-\u30ff\uff66-\uff9f・ 　]{1,12}$")
_SIG_NAME_LATIN = re.compile(r"^[A-Z][A-Za-z.'\-]*(?:[ \t]+[A-Z][A-Za-z.'\-]*){0,3}$")
_SIG_NAME_LINES = 2  # a name (and its reading or romanisation) opens a signature
_SIG_CONTACT = re.compile(
    r"https?://|www\.|@"
    r"|(?:\d[\d\-‐－ー()（）\s]*){8,}"  # a phone or fax number
    r"|〒|丁目|番地|\d+\s*[-－‐]\s*\d+",  # a postal address
    re.I,
)
_SIG_ORGANISATION = re.compile(
    r"株式会社|有限会社|合同会社|[（(]株[)）]|法人|協会|センター|学校|大学|高校|中学|小学"
    r"|事務所|役所|役場|病院|クリニック|[都道府県市区町村]立|部|課|係|室|組|教諭|教員|部長|課長"
    r"|係長|主任|代表|担当|理事|会長|社長|\b(?:inc|ltd|llc|co|corp|dept|university|school"
    r"|college|cent(?:er|re)|office|manager|director|engineer|teacher|student|officer)\b",
    re.I,
)
_SIG_MAILER = re.compile(r"(?:から|より)送信|sent from|sent with|sent via|get outlook|^\W+$", re.I)


def _name_like(line: str) -> bool:
    """A signature line that passed as a name (not a contact, an organisation or a
    mailer's tag): where crisis words without hiragana (ｼﾆﾀｲ, 練炭準備完了) pass too, so
    ``Parts.signature`` keeps these for the urgency check."""
    stripped = line.strip()
    return bool(
        stripped
        and (_SIG_NAME_JA.match(stripped) or _SIG_NAME_LATIN.match(stripped))
        and not _SIG_ORGANISATION.search(stripped)
        and not _SIG_CONTACT.search(stripped)
        and not _SIG_MAILER.search(stripped)
    )


# Never a name, a title or an organisation: crisis words written without hiragana.
_SIG_NEVER = re.compile(
    r"死|殺|遺書|自傷|虐|暴|殴|首|薬|助け|シニ|シヌ|シネ|コロ|タスケ|キエ|ツライ|クルシ|イタイ"
    r"|シタイ|オワリ|オワラ|イキタク|ヤメタ|リスカ|オーバードーズ|ムリ|ODし|ＯＤ"
    r"|\b(?:die|dead|death|kill|suicid\w*|help|hurt|cut|sos|end it|overdose|od)\b",
    re.I,
)


# A crisis word inside an organisation's or office's name ("健康推進課 自殺対策係",
# "自殺防止センター", "暴力相談窓口"): a staff member's or partner's signature, whose
# words read as the sender's would raise a false alert.
_SIG_SERVICE_NAME = re.compile(
    r"(?:自殺|自死|暴力|虐待|自傷|DV)(?:対策|防止|予防|相談|根絶|被害者支援)", re.I
)


def _looks_like_signature(line: str, shown: int) -> bool:
    """Whether the non-blank ``line``, the ``shown``-th of a signature block (from 0),
    looks like one: a name among the first lines, a phone, mail address, URL or postal
    address, a title or organisation, a mailer's tag or a rule; never a crisis word."""
    stripped = line.strip()
    if _SIG_NEVER.search(_SIG_SERVICE_NAME.sub("", stripped)):
        return False
    if shown < _SIG_NAME_LINES and (
        _SIG_NAME_JA.match(stripped) or _SIG_NAME_LATIN.match(stripped)
    ):
        return True
    return bool(
        _SIG_CONTACT.search(stripped)
        or _SIG_ORGANISATION.search(stripped)
        or _SIG_MAILER.search(stripped)
    )


def _ends_signature(line: str, following: str) -> bool:
    """Whether a signature block ends before ``line``: a quote, a header or our own text
    starts there and is split by the main loop."""
    return bool(
        _QUOTE_LINE.match(line)
        or any(marker in line for marker in OWN_TEXT_MARKERS)
        or is_quote_header(line, following)
    )


def _signature_end(lines: list[str], i: int) -> int | None:
    """For the ``-- `` line at ``i``: the index after its signature block, or None when
    the lines after it are not a signature (then they are the sender's words). The block
    ends at its first line that does not look like a signature line: the sender's words
    from there on are read (review rv9c R9)."""
    n = len(lines)
    j = i + 1
    shown = 0
    while j < n and not _ends_signature(lines[j], lines[j + 1] if j + 1 < n else ""):
        line = lines[j]
        if line.strip():
            if not (_is_signature_line(line) and _looks_like_signature(line, shown)):
                return None if shown == 0 else j
            shown += 1
            if shown > _SIGNATURE_MAX_LINES:
                return None
        j += 1
    return j


def _continues_attribution(line: str, following: str) -> bool:
    """Whether ``following`` is the second half of an attribution wrapped after ``line``:
    it ends the attribution with a colon that ``line`` lacks, and is not quoted itself."""
    return bool(
        following.strip()
        and not _ends_with_colon(line)
        and _ends_with_colon(following)
        and not _QUOTE_LINE.match(following)
    )


def _outlook_block_follows(lines: list[str], i: int) -> bool:
    """Whether an Outlook ``From:``/``差出人:`` + ``Sent:``/``送信日時:`` block starts on the
    first non-blank line after ``i`` (what makes a ``_____`` rule a reply separator)."""
    n = len(lines)
    j = i + 1
    while j < n and not lines[j].strip():
        j += 1
    return bool(j + 1 < n and _OUTLOOK_FROM.match(lines[j]) and _OUTLOOK_NEXT.match(lines[j + 1]))


def quote_depth(line: str) -> tuple[int, str]:
    """The number of leading quote marks of ``line`` and the line without them."""
    m = _QUOTE_MARKS.match(line)
    if m is None:
        return 0, line
    return len(re.findall(r"[>＞]", m.group(0))), line[m.end() :]


def _forwarded_text(lines: list[str]) -> str:
    """The forwarded part for the urgency check: one level of quote marks removed (iPhone
    quotes the forwarded mail with ">"), and our own text left out (from a marker line on,
    as deep as that line is quoted), so our acknowledgement, alert or digest (which lists
    residents' crisis words) forwarded back is not read as a crisis."""
    quoted = any(line.strip() for line in lines) and all(
        quote_depth(line)[0] > 0 for line in lines if line.strip()
    )
    kept = _without_own_lines(lines)
    if quoted:
        kept = [_strip_one_quote(line) for line in kept]
    return "\n".join(kept).strip("\n")


def _strip_one_quote(line: str) -> str:
    """``line`` with its first quote mark (and one space after it) removed."""
    m = re.match(r"^[ \t\u3000]*[>＞][ \u3000]?", line)
    return line[m.end() :] if m else line


def without_own_text(text: str) -> str:
    """``text`` without the lines of our own mail: a line holding a marker or trace, and
    every line after it quoted at least as deep (blank ones too), up to a line quoted
    less deeply.

    For a forward attached to a mail (``pipeline.decide`` checks it for crisis words):
    our acknowledgement, on-call alert or partner digest forwarded back lists residents'
    crisis words, which must not raise an alert of their own; but a pupil's answer
    written below our quoted acknowledgement in that forward is the pupil's (review rv9c
    R2: cutting at the first line of ours lost it). Give it one forward at a time: our
    text unquoted (depth 0) runs to the end of its text."""
    return "\n".join(_without_own_lines(text.splitlines()))


def _without_own_lines(lines: list[str]) -> list[str]:
    """``without_own_text`` on lines (shared with ``_forwarded_text``)."""
    kept: list[str] = []
    skip_from: int | None = None  # quote depth of our own text being left out
    for line in lines:
        depth, bare = quote_depth(line)
        if skip_from is not None:
            if depth >= skip_from or not line.strip():
                continue
            skip_from = None
        if _holds_own_text(bare):
            skip_from = depth
            continue
        kept.append(line)
    return kept


def _holds_own_text(text: str) -> bool:
    """Whether ``text`` holds a line of our own mail (markers or the other traces)."""
    return any(mark in text for mark in (*OWN_TEXT_MARKERS, *_OWN_TEXT_TRACES))


# How ``_quoted_words`` knows the quoted lines of our own mail. Our mail to staff (alert,
# escalation, digest) lists residents' crisis words: from its first trace on, every later
# quoted line is left out. Our acknowledgement is left out from its first trace to its
# closing line (and the name under it): a friend's mail quoted above or below it is read.
_STAFF_MAIL_TRACES: tuple[str, ...] = (
    *(marker for marker in OWN_TEXT_MARKERS if marker != OWN_TEXT_MARKERS[0]),
    "緊急と判断した理由:",
    "電話番号（本文から）:",
    "このメールに返信しても、相談者には届きません。",
    "相談受付システムが自動で送っています。",
)
_ACK_TRACES: tuple[str, ...] = (
    OWN_TEXT_MARKERS[0],
    *(trace for trace in _OWN_TEXT_TRACES if trace not in _STAFF_MAIL_TRACES),
    *(text for text in _ACK_FIXED_TEXT if len(text.strip()) >= 10),
    *(subject for subject in _ACK_SUBJECTS if len(subject) >= 10),
)
_ACK_TAIL = "このメールは自動でお送りしています。"
_STAFF_MAIL_FIELDS: tuple[str, ...] = ("受信日時:", "緊急:はい")
_ACK_FIELDS: tuple[str, ...] = ("受付番号:",)
_ANY_MARKS = re.compile(r"^[ \t\u3000|｜》≫>＞]*")
_SPACES = re.compile(r"[ \t\u3000]+")
_NAME_MAX = 30  # characters: the line under the acknowledgement's closing line is its sender
_SENTENCE_ENDS = tuple("。．.！!？?…」』）)")


def _squeezed(text: str) -> str:
    """``text`` without spaces: how lines are compared with our mail's traces (a mailer's
    re-wrap or quote may add or drop a space)."""
    return _SPACES.sub("", text)


def _own_kinds(lines: list[str]) -> list[str]:
    """For each line, whether it holds a piece of our own mail: "staff" (alert,
    escalation, digest), "tail" (the acknowledgement's closing line), "ack", or "".

    The lines are joined without their marks and spaces and searched once for every
    trace, so a trace a phone re-wrapped over several lines (with or without ">", the
    rests maybe read as the sender's) marks each line it touches."""
    bare = [_squeezed(_ANY_MARKS.sub("", line)) for line in lines]
    starts: list[int] = []
    at = 0
    for piece in bare:
        starts.append(at)
        at += len(piece)
    text = "".join(bare)
    kinds = [""] * len(lines)
    for kind, traces in (
        ("ack", _ACK_TRACES),
        ("tail", (_ACK_TAIL,)),
        ("staff", _STAFF_MAIL_TRACES),
    ):
        for trace in traces:
            needle = _squeezed(trace)
            found = text.find(needle)
            while found >= 0:
                first = bisect_right(starts, found) - 1
                last = bisect_right(starts, found + len(needle) - 1) - 1
                for k in range(max(first, 0), last + 1):
                    kinds[k] = kind
                found = text.find(needle, found + len(needle))
    for k, piece in enumerate(bare):
        if piece.startswith(_STAFF_MAIL_FIELDS):
            kinds[k] = "staff"
        elif piece.startswith(_ACK_FIELDS) and not kinds[k]:
            kinds[k] = "ack"
    return kinds


# Starts a line of ``Parts.quoted_words`` that holds a quote block's attribution ("2027年
# 1月6日 11:00 笠岡市 <…>:"), so the pipeline can leave out what was quoted from our own
# address (staff replying to a resident from the mailbox: review rv10c R4); not words.
ATTRIBUTION_MARK = "\x1e"
_HEADER_LINES = 4  # lines below a reply header that may name its sender (From:, 差出人:)
_FROM_LINE = re.compile(r"^\s*(?:from|差出人|送信者|送信元)\s*[:：]", re.I)


def _quoted_words(
    lines: list[str], marked: list[int], attributions: dict[int, str] | None = None
) -> str:
    """The words of the ``marked`` (quoted) lines that are not our own mail, marks removed.

    Why: a resident may pass a friend's worrying mail on by replying to it (an attribution
    over ">" lines), or mark their own lines with ＞ for emphasis; those words were never
    read for a crisis (review rv9c R7, R10). Our own mail quoted back must not be read:
    our alert, escalation or digest from its first line we know on, to the end (it lists
    residents' crisis words: a partner's colleague writing between its lines, review
    rv10b F6); our acknowledgement from its first line we know to its closing line and the
    name under it, so a friend's mail quoted next to it is still read (rv10b F4)."""
    kinds = _own_kinds(lines)
    words: list[str] = []
    in_ack = after_tail = False
    previous = -1
    for j in marked:
        if attributions and j in attributions:
            words.append(ATTRIBUTION_MARK + attributions[j].strip())
        elif previous >= 0 and any(lines[x].strip() for x in range(previous + 1, j)):
            words.append(ATTRIBUTION_MARK)  # a new block, whose writer is not known
        previous = j
        kind = kinds[j]
        if kind == "staff":
            break
        if kind == "tail":
            in_ack, after_tail = False, True
            continue
        if kind == "ack":
            in_ack, after_tail = True, False
            continue
        if in_ack:
            continue
        bare = quote_depth(lines[j])[1]
        here = bare.strip()
        if after_tail and here:
            after_tail = False
            if len(here) <= _NAME_MAX and not here.endswith(_SENTENCE_ENDS):
                continue  # the acknowledgement's sender name under its closing line
        words.append(bare)
    return "\n".join(words).strip("\n")


# What may stand before our own first line on a quoted line besides ">": the bar and
# guillemet quote marks some Japanese mailers and hand-quoting use (review rv9c R5).
_OTHER_QUOTE_PREFIX = re.compile(r"^[ \t\u3000]*(?:[|｜》≫>＞][ \t\u3000]*)+$")


def _marker_at(lines: list[str], i: int) -> tuple[int, int] | None:
    """Where a marker starts on ``lines[i]`` and over how many lines it runs: ``(column,
    1)`` for a marker on the line, ``(column, k)`` for one a phone re-wrapped over ``k``
    unmarked lines (their join, newlines and the spaces around them removed, holds it and
    it starts on ``lines[i]``), None when there is none."""
    line = lines[i]
    for marker in OWN_TEXT_MARKERS:
        column = line.find(marker)
        if column >= 0:
            return column, 1
    head = line.rstrip()
    if not any(marker[:_MARKER_HEAD] in head for marker in OWN_TEXT_MARKERS):
        return None  # (the pre-scan finds a wrapped marker by these characters, too)
    if _QUOTE_LINE.match(line):
        return None
    joined = head
    for k in range(1, min(_MARKER_MAX_LINES, len(lines) - i)):
        piece = lines[i + k]
        if not piece.strip() or _QUOTE_LINE.match(piece):
            return None
        joined += piece.strip()
        for marker in OWN_TEXT_MARKERS:
            column = joined.find(marker)
            if 0 <= column < len(head) < column + len(marker):
                return column, k + 1
    return None


def _continues_subjects(text: str, junction: bool) -> bool:
    """Whether ``text`` (a quoted line's last two characters and the unmarked line below
    it) is the re-wrapped rest of a "こんなときに:" line: phone subjects joined by "、".
    Its pieces between two "、" are whole subjects, the last one a subject's start; the
    first must hold the wrap point inside a subject (``junction``), or else the line must
    hold a whole subject (a lone "いじめ" typed below a line wrapped at "、" is not ours)."""
    first, *rest = text.split("、")
    if not rest:
        return False
    if junction and not any(first in atom for atom in _SUBJECT_ATOMS):
        return False
    *middle, last = rest
    if any(piece not in _SUBJECT_ATOMS for piece in middle):
        return False
    if last and not any(atom.startswith(last) for atom in _SUBJECT_ATOMS):
        return False
    return junction or bool(middle) or last in _SUBJECT_ATOMS


def _continues_ours(logical: str, line: str) -> bool:
    """Whether the unmarked ``line`` is the rest of the quoted line ``logical`` of our
    acknowledgement, which a mailer re-wrapped without its ``>`` (review rv9c R4).

    Only when the join is our fixed text: the join of the quoted line's last two
    characters with ``line`` is inside one of its fixed sentences or phone subjects (the
    subjects line is split at "、", each piece inside one); or ``line`` closes one of the
    template's lines with variables (a partner's name or phone) and the join is that line.
    A resident's answer between quoted lines is never our fixed text, so it stays."""
    cont = line.strip()
    head = logical.rstrip()
    if not cont or not head or _QUOTE_LINE.match(line):
        return False
    junction = not head.endswith("、") and not cont.startswith("、")
    if any(
        head[-2:] + cont in fixed
        for fixed in (*OWN_TEXT_MARKERS, *_OWN_TEXT_TRACES, *_ACK_FIXED_TEXT, *_ACK_SUBJECTS)
    ):
        return True
    if _continues_subjects(head[-2:] + cont, junction):
        return True
    return _continues_line(head, cont)


def _continues_line(head: str, cont: str) -> bool:
    """Whether ``head + cont`` is one of the acknowledgement's lines with variables and
    ``cont`` closes it with the line's fixed closing sentence."""
    joined = head + cont
    return any(
        (cont.endswith(last) or (len(cont) >= _LINE_TAIL_MIN and last.endswith(cont)))
        and pattern.fullmatch(joined) is not None
        for pattern, last in _ACK_LINE_PATTERNS
    )


def _other_quote_of_ours(line: str) -> bool:
    """Whether ``line`` is our own first line quoted with a bar or guillemet ("| ", "》")."""
    for marker in OWN_TEXT_MARKERS:
        column = line.find(marker)
        if column > 0 and line[:column].strip() and _OTHER_QUOTE_PREFIX.match(line[:column]):
            return True
    return False


def _quote_other_block(
    lines: list[str], i: int, mark: str, new: list[str], quoted: list[str]
) -> int:
    """Quote the block of lines starting with ``mark`` around ``lines[i]`` (our text
    quoted with a bar or guillemet): the consecutive such lines already read as new text
    above it and the attribution over them, and those below it (across blank lines) up to
    the first other line. Returns the index after the block, where scanning goes on."""
    above: list[str] = []
    while new and (not new[-1].strip() or new[-1].lstrip().startswith(mark)):
        above.append(new.pop())
    if new and _ends_with_colon(new[-1]) and not _QUOTE_LINE.match(new[-1]):
        above.append(new.pop())
    quoted.extend(reversed(above))
    n = len(lines)
    j = i
    while j < n:
        if lines[j].lstrip().startswith(mark):
            j += 1
            continue
        k = j
        while k < n and not lines[k].strip():
            k += 1
        if k == j or k >= n or not lines[k].lstrip().startswith(mark):
            break
        j = k
    quoted.extend(lines[i:j])
    return j


def _closing_chain(logical: str, lines: list[str], i: int) -> int:
    """How many unmarked lines from ``i`` (up to the next quoted or blank line) are the
    re-wrapped rest of the quoted line ``logical`` of our acknowledgement, when it was cut
    inside a variable (a partner's name or phone) into several lines: all or none of them,
    and only when their join with ``logical`` is a template line that they close with its
    own fixed sentence (review rv9c R4, narrow re-wraps)."""
    n = len(lines)
    j = i
    while (
        j < n and j - i < _MARKER_MAX_LINES and lines[j].strip() and not _QUOTE_LINE.match(lines[j])
    ):
        j += 1
    if j == i:
        return 0
    if not _continues_line(logical.rstrip(), "".join(x.strip() for x in lines[i:j])):
        return 0
    return j - i


def _joined_bare(lines: list[str]) -> str:
    """``lines`` without quote marks and joined without newlines: our own lines found in
    it even when a mailer re-wrapped every one of them out of its ``>`` block."""
    return "".join(quote_depth(line)[1].strip() for line in lines)


def _split_parts(lines: list[str], candidates: list[int] | None) -> Parts:
    """The split of ``lines``; only the ``candidates`` lines (None: every line) are tested,
    the others are new text without a test (see ``_may_matter``)."""
    n = len(lines)
    new: list[str] = []
    quoted: list[str] = []
    forwarded: list[str] = []
    after_header: list[str] = []
    signature: list[str] = []
    marked: list[int] = []  # the ">" lines, for ``quoted_words``
    attributions: dict[int, str] = {}  # first ">" line of a block -> its attribution line
    reply_header = ""  # the reply header over ``after_header``, with its first lines
    pending_attribution: str | None = None  # a reply header right above a ">" block
    ahead = iter(candidates) if candidates is not None else None
    k = -1  # the next candidate line
    i = 0
    other_marks: list[str] = []  # "|", "》"...: marks our own text was quoted with
    # The ">" line just read (from the first continuation on: without its marks, with
    # its re-wrapped rest); a line of ours only continues it when the mail holds our text.
    logical: str | None = None
    continuing = False
    own_in_mail: bool | None = None  # our text anywhere, re-wrapped lines joined
    while i < n:
        if logical is not None and (not lines[i].strip() or _QUOTE_LINE.match(lines[i])):
            logical = None  # only an unmarked line right below a quoted one continues it
        if logical is not None and own_in_mail is None:
            # Once a mail, when needed: our text anywhere, quoted or re-wrapped.
            own_in_mail = _holds_own_text(_joined_bare(lines))
        if logical is not None and own_in_mail:
            if not continuing:
                logical = quote_depth(logical)[1]
                continuing = True
            if _continues_ours(logical, lines[i]):
                quoted.append(lines[i])
                logical += lines[i].strip()
                i += 1
                continue
            chain = _closing_chain(logical, lines, i)
            if chain:
                quoted.extend(lines[i : i + chain])
                i += chain
                continue
        logical = None
        continuing = False
        if ahead is not None:
            while k < i:
                k = next(ahead, n)
            new.extend(lines[i:k])
            i = k
            if i >= n:
                break
        line = lines[i]
        following = lines[i + 1] if i + 1 < n else ""
        if other_marks and line.lstrip().startswith(tuple(other_marks)):
            quoted.append(line)  # a later block quoted with the mark our text had
            marked.append(i)  # read for a crisis unless it is ours (bullets: rv9d F7)
            i += 1
            continue
        if _QUOTE_LINE.match(line):
            # A quoted line, ours or not: only it is quoted, and the sender may answer
            # below or between quote blocks. The attribution line(s) right above a quote
            # block belong to the quote.
            while new and not new[-1].strip():
                new.pop()
            if new and _ends_with_colon(new[-1]) and not _QUOTE_LINE.match(new[-1]):
                attribution = new.pop()
                quoted.append(attribution)
                attributions[i] = attribution
            elif pending_attribution is not None:
                attributions[i] = pending_attribution
            pending_attribution = None
            quoted.append(line)
            marked.append(i)
            logical = line
            i += 1
            continue
        found = _marker_at(lines, i)
        if found is not None:
            prefix = line[: found[0]]
            if prefix.strip() and _OTHER_QUOTE_PREFIX.match(prefix):
                # Our text quoted with another mark ("| ", "》"): that block is quoted
                # and the sender may answer below it, as under a ">" block.
                i = _quote_other_block(lines, i, prefix.strip(), new, quoted)
                other_marks.append(prefix.strip())
                ahead = None  # every later line may carry that mark: test each
                continue
            # Our own mail quoted without any mark (also re-wrapped): the rest is ours.
            quoted.extend(lines[i:])
            break
        if line.rstrip("\r") == _SIGNATURE:
            end = _signature_end(lines, i)
            if end is not None:
                quoted.extend(lines[i:end])
                signature.extend(x for x in lines[i + 1 : end] if _name_like(x))
                i = end
                continue
            new.append(line)
            i += 1
            continue
        if _UNDERSCORES.match(line) and not _outlook_block_follows(lines, i):
            new.append(line)  # a divider the sender drew
            i += 1
            continue
        if is_quote_header(line, following):
            separator = _SEPARATOR.match(line.strip()) is not None
            # A wrapped attribution ("On Thu, ... Taro" / "<t@x> wrote:", Gmail's "... 笠岡市 <"
            # / "x@y>:") takes the next line with it.
            span = 2 if _continues_attribution(line, following) and not separator else 1
            after = next((x for x in lines[i + span :] if x.strip()), "")
            if (_QUOTE_LINE.match(after) or _other_quote_of_ours(after)) and not separator:
                # An attribution over a ">" block: the writer may answer below it
                # (bottom-posting), so only the marked lines are quoted.
                quoted.extend(lines[i : i + span])
                pending_attribution = " ".join(x.strip() for x in lines[i : i + span])
                i += span
                continue
            quoted.extend(lines[i:])
            if separator and _FORWARD.search(line):
                forwarded.extend(lines[i + 1 :])
            else:
                after_header.extend(lines[i + 1 :])
                # the header line, and the From:/差出人: line of an Outlook block under it
                sender_line = next(
                    (x for x in lines[i + 1 : i + 1 + _HEADER_LINES] if _FROM_LINE.match(x)), ""
                )
                reply_header = f"{lines[i].strip()} {sender_line.strip()}".strip()
            break
        new.append(line)
        i += 1
    new_text = "\n".join(new).strip("\n").rstrip()
    quoted_text = "\n".join(quoted).strip("\n")
    if not new_text.strip() and quoted_text.strip() and not _holds_own_text(quoted_text):
        # Safety net (module docstring): nothing left to triage and none of it is ours.
        whole = "\n".join(lines).strip("\n").rstrip()
        return Parts(whole, "", "", kept_whole=True)
    return Parts(
        new_text,
        quoted_text,
        _forwarded_text(forwarded) if forwarded else "",
        after_header=_forwarded_text(after_header) if after_header else "",
        reply_header=reply_header,
        signature="\n".join(signature).strip("\n"),
        quoted_words=_quoted_words(lines, marked, attributions) if marked else "",
    )
