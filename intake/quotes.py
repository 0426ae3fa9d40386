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
* a signature: the lines after an exact ``-- `` line (RFC 3676 s. 4.3), only when they
  look like a signature (a few short lines: names, numbers, addresses, no sentence);
  a bare ``--`` or a ``-- `` followed by sentences is a divider, and the lines stay new;
* everything from the first line of our own acknowledgement, alert or escalation
  (``OWN_TEXT_MARKERS``) on a line without ``>``, for phones that quote without any
  marker.

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
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "OWN_TEXT_MARKERS",
    "Parts",
    "is_quote_header",
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
    "前回のお知らせ以降に届いた相談",  # the partner digest, which lists residents' words
)

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
_MAY_MATTER_FIXED = (
    r">|＞|:|：|,|--|_____|/[^\S\n]*\d|-[^\S\n]*\d|\.[^\S\n]*\d|年[^\S\n]*\d|書|メッセージ"
)


@lru_cache(maxsize=4)
def _may_matter(markers: tuple[str, ...]) -> re.Pattern[str]:
    """The pre-scan for the markers ``_split`` will test. Built from the markers in use
    rather than once at import, so a changed ``OWN_TEXT_MARKERS`` (a new acknowledgement
    wording) can never be skipped by the pre-scan and triaged as the resident's words."""
    return re.compile("|".join([_MAY_MATTER_FIXED, *(re.escape(m) for m in markers)]))


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
    the lines after it are not a signature (then they are the sender's words)."""
    n = len(lines)
    j = i + 1
    shown = 0
    while j < n and not _ends_signature(lines[j], lines[j + 1] if j + 1 < n else ""):
        if not _is_signature_line(lines[j]):
            return None
        if lines[j].strip():
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


def _quote_depth(line: str) -> tuple[int, str]:
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
    depths = [_quote_depth(line) for line in lines]
    base = (
        1
        if any(line.strip() for line in lines)
        and all(d > 0 for (d, _), line in zip(depths, lines, strict=True) if line.strip())
        else 0
    )
    kept: list[str] = []
    skip_from: int | None = None  # quote depth of our own text being left out
    for (depth, bare), line in zip(depths, lines, strict=True):
        if skip_from is not None:
            if depth >= skip_from or not line.strip():
                continue
            skip_from = None
        if _holds_own_text(bare):
            skip_from = depth
            continue
        kept.append(line if base == 0 else _strip_one_quote(line))
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
    kept: list[str] = []
    skip_from: int | None = None  # quote depth of our own text being left out
    for line in text.splitlines():
        depth, bare = _quote_depth(line)
        if skip_from is not None:
            if depth >= skip_from or not line.strip():
                continue
            skip_from = None
        if _holds_own_text(bare):
            skip_from = depth
            continue
        kept.append(line)
    return "\n".join(kept)


def _holds_own_text(text: str) -> bool:
    """Whether ``text`` holds a line of our own mail (markers or the other traces)."""
    return any(mark in text for mark in (*OWN_TEXT_MARKERS, *_OWN_TEXT_TRACES))


def _split_parts(lines: list[str], candidates: list[int] | None) -> Parts:
    """The split of ``lines``; only the ``candidates`` lines (None: every line) are tested,
    the others are new text without a test (see ``_may_matter``)."""
    n = len(lines)
    new: list[str] = []
    quoted: list[str] = []
    forwarded: list[str] = []
    after_header: list[str] = []
    ahead = iter(candidates) if candidates is not None else None
    k = -1  # the next candidate line
    i = 0
    while i < n:
        if ahead is not None:
            while k < i:
                k = next(ahead, n)
            new.extend(lines[i:k])
            i = k
            if i >= n:
                break
        line = lines[i]
        following = lines[i + 1] if i + 1 < n else ""
        if _QUOTE_LINE.match(line):
            # A quoted line, ours or not: only it is quoted, and the sender may answer
            # below or between quote blocks. The attribution line(s) right above a quote
            # block belong to the quote.
            while new and not new[-1].strip():
                new.pop()
            if new and _ends_with_colon(new[-1]) and not _QUOTE_LINE.match(new[-1]):
                quoted.append(new.pop())
            quoted.append(line)
            i += 1
            continue
        if any(marker in line for marker in OWN_TEXT_MARKERS):
            # Our own mail quoted without any mark: the rest is ours.
            quoted.extend(lines[i:])
            break
        if line.rstrip("\r") == _SIGNATURE:
            end = _signature_end(lines, i)
            if end is not None:
                quoted.extend(lines[i:end])
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
            if _QUOTE_LINE.match(after) and not separator:
                # An attribution over a ">" block: the writer may answer below it
                # (bottom-posting), so only the marked lines are quoted.
                quoted.extend(lines[i : i + span])
                i += span
                continue
            quoted.extend(lines[i:])
            if separator and _FORWARD.search(line):
                forwarded.extend(lines[i + 1 :])
            else:
                after_header.extend(lines[i + 1 :])
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
    )
