"""Split a mail body into the resident's new words and the rest (quotes, signature).

Contract: ``split_quoted(text) -> (new, quoted)``; pure, never raises, and
``new``/``quoted`` together keep every non-blank line of ``text``.

Why: triage must read what the resident wrote now, not our own acknowledgement quoted
back at us (which mentions "相談", "死にたい"-type help-line wording and would trigger
topics or urgent alerts by itself), nor, in the on-call person's reply, our alert (which
lists the resident's crisis words), nor a forwarded thread.

What counts as quoted:

* every line starting with ``>`` or ``＞`` (interleaved replies keep the resident's
  lines between quote blocks as new text), plus the attribution line just above a
  quote block when it ends in a colon;
* everything after a reply or forward header (but when the header sits right above a
  ``>`` block, only the header and the marked lines: the writer may answer below):
  ``On ... wrote:``, ``2026年11月26日(木) 10:00 山田 <…>:`` (also wrapped
  over two lines), ``-----Original Message-----``,
  ``-----元のメッセージ-----``, ``--- Forwarded message ---``, ``Begin forwarded
  message:``, and an Outlook ``From:``/``差出人:`` block followed by ``Sent:``/``Date:``;
* everything after a signature separator ``-- `` (RFC 3676 s. 4.3);
* everything from the first line of our own acknowledgement, alert or escalation
  (``OWN_TEXT_MARKERS``), for phones that quote without any marker.

A line that merely contains a colon ("理由は次の通りです:") does not cut anything:
a header needs a date, an address or a "wrote" verb, or a ``>`` block right below.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["OWN_TEXT_MARKERS", "is_quote_header", "split_quoted"]

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

_QUOTE_LINE = re.compile(r"^[ \t\u3000]*[>＞]")
_SEPARATOR = re.compile(
    r"^\s*(?:"
    r"-{2,}\s*(?:original message|forwarded message|元のメッセージ|転送メッセージ|"
    r"転送されたメッセージ|オリジナルメッセージ|以下転送|forwarded by)\s*-{2,}"
    r"|_{5,}"  # Outlook's underscore rule before a From:/Sent: block
    r"|begin forwarded message\s*[:：]"
    r"|-{3,}\s*転送\s*-{3,}"
    r"|-{3,}\s*(?:original|forwarded)\s*-{0,}"
    r")\s*$",
    re.I,
)
_SEPARATOR_STARTS = frozenset("-_bB")  # the first characters _SEPARATOR can match
_SIGNATURE = re.compile(r"^-- ?$")
_WROTE = re.compile(
    r"(?:wrote|writes|a écrit|schrieb|escribió)\s*[:：]\s*$"
    r"|(?:書きました|書いています|書かれました|からのメッセージ)\s*[:：。]?\s*$",
    re.I,
)
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


def split_quoted(text: str) -> tuple[str, str]:
    """Return ``(new, quoted)`` for a decoded body; see the module docstring."""
    if not text:
        return "", ""
    return _split(text.split("\n"), _lines_that_may_matter(text))


def _split(lines: list[str], candidates: list[int] | None) -> tuple[str, str]:
    """The split of ``lines``; only the ``candidates`` lines (None: every line) are tested,
    the others are new text without a test (see ``_may_matter``)."""
    n = len(lines)
    new: list[str] = []
    quoted: list[str] = []
    ahead = iter(candidates) if candidates is not None else None
    i = 0
    while i < n:
        if ahead is not None:
            k = next(ahead, n)  # > i - 1: each candidate is handled once, in order
            new.extend(lines[i:k])
            i = k
            if i >= n:
                break
        line = lines[i]
        following = lines[i + 1] if i + 1 < n else ""
        if _SIGNATURE.match(line) or any(marker in line for marker in OWN_TEXT_MARKERS):
            quoted.extend(lines[i:])
            break
        if is_quote_header(line, following):
            after = next((x for x in lines[i + 1 :] if x.strip()), "")
            if _QUOTE_LINE.match(after) and not _SEPARATOR.match(line.strip()):
                # An attribution over a ">" block: the writer may answer below it
                # (bottom-posting), so only the marked lines are quoted.
                quoted.append(line)
                i += 1
                continue
            quoted.extend(lines[i:])
            break
        if _QUOTE_LINE.match(line):
            # The attribution line(s) right above a quote block belong to the quote.
            while new and not new[-1].strip():
                new.pop()
            if new and _ends_with_colon(new[-1]) and not _QUOTE_LINE.match(new[-1]):
                quoted.append(new.pop())
            quoted.append(line)
        else:
            new.append(line)
        i += 1
    return "\n".join(new).strip("\n").rstrip(), "\n".join(quoted).strip("\n")
