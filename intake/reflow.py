"""Undo fixed-width wrapping: a mailer that breaks lines at a set width cuts words.

Why: some mailers (desktop mailers popular in Japan, plain-text modes of webmail) wrap
every line at a fixed number of columns with a hard line break before sending. Japanese
has no spaces, so the break falls anywhere, inside a word too: 「…もう死に\\nたいです」.
Triage reads a line at a time (a line break ends a phrase), so the crisis words were
never seen whole. ``format=flowed`` marks such breaks and is undone by the parser; a
hard wrap is not marked, so it is recognised by its shape.

The shape, deliberately strict (joining lines a person broke on purpose would merge two
sentences, and a negation in the second could then discount the first): of the lines
that continue a paragraph without ending a sentence (。！？」…: such a line needs no
joining, whoever broke it), at least three and most are "full" (in a short mail: two,
and no other), within a few columns of the wrap width: the widest width, 40-160 columns,
that two such lines reach (full-width characters count two, and a wrapper leaves a
column or two free rather than split a character or start a line with 、。; a wider
quoted line, URL or reply header is not the wrap). Only the full lines are joined to the
next one; a short line ends its paragraph as before. Quoted lines (``>``) are never
joined. The lines are joined as sent (a space the wrapper left at a line's end stays);
English, wrapped at spaces with a ragged edge, is mostly not recognised and needs no
joining (no word is cut).
"""

from __future__ import annotations

from intake.quotes import quote_depth

MIN_WIDTH = 40  # columns: narrower "wrapping" is a person's short lines
MAX_WIDTH = 160  # columns: a wider line was not wrapped by a mailer
SLACK = 3  # columns a full line may fall short of the width (kinsoku, wide characters)
MIN_FULL = 3  # full lines needed to call a text wrapped (2 when every continuing line is)
MIN_SHARE = 0.8  # share of the lines continuing a paragraph that must be full


_SENTENCE_ENDS = ("。", "．", "！", "？", "!", "?", "」", "』", "）", ")", "♪", "…")


def columns(line: str) -> int:
    """Display width, approximately: a character of three or more UTF-8 bytes (kana, kanji,
    full-width forms, emoji) counts two columns, as East Asian wide characters do.

    Why not ``unicodedata.east_asian_width`` per character: a Python call per character
    cost ~100 µs a mail, and a regex of the wide ranges ~60 µs; one UTF-8 encode is C
    speed. Off only for rare characters (half-width katakana, a few symbols, Latin-1
    accents counted half), which shape detection tolerates (``SLACK``)."""
    return len(line) + (len(line.encode("utf-8", "surrogatepass")) - len(line)) // 2


def _quoted(line: str) -> bool:
    """A quoted line, as the quote splitter sees one (an emoticon such as ＞＜ is not)."""
    return quote_depth(line)[0] > 0


def _wrap_width(widths: list[int], candidates: list[int]) -> int | None:
    """The wrap width: the widest width that at least two candidate lines reach within
    ``SLACK`` columns. Not simply the widest line: a quoted line, a URL or a reply header
    in the same mail is wider than the wrap (review rv9c R6)."""
    ranked = sorted({widths[i] for i in candidates}, reverse=True)
    for width in ranked:
        if not MIN_WIDTH <= width <= MAX_WIDTH:
            continue
        if sum(1 for i in candidates if width - SLACK <= widths[i] <= width) >= 2:
            return width
    return None


def unwrap_fixed_width(text: str) -> str:
    """``text`` with fixed-width wrapping undone, or ``text`` itself when not wrapped."""
    if "\n" not in text:
        return text
    lines = text.split("\n")
    if 2 * max(map(len, lines)) < MIN_WIDTH:
        return text  # no line could be as wide as a wrap (one C pass)
    # lines followed by another non-empty line (a paragraph goes on), and not ending a
    # sentence (a line ending in 。 needs no joining, whoever broke it): the wrapped ones
    continuing = [
        i
        for i in range(len(lines) - 1)
        if lines[i].strip()
        and lines[i + 1].strip()
        and not _quoted(lines[i])
        and not _quoted(lines[i + 1])
        and not lines[i].rstrip().endswith(_SENTENCE_ENDS)
    ]
    if len(continuing) < 2:
        return text
    widths = [columns(line.rstrip()) for line in lines]
    width = _wrap_width(widths, continuing)
    if width is None:
        return text
    # lines wider than the wrap (a URL, a long word) were never wrapped: neither full nor
    # counted against the share
    continuing = [i for i in continuing if widths[i] <= width]
    full = [i for i in continuing if widths[i] >= width - SLACK]
    # Three full lines and most of the rest; or, in a short mail, two and no other.
    if len(full) < (2 if len(full) == len(continuing) else MIN_FULL):
        return text
    if len(full) < MIN_SHARE * len(continuing):
        return text
    joined = set(full)
    out: list[str] = []
    for i, line in enumerate(lines):
        if i - 1 in joined:
            out[-1] += line  # as sent: a space the wrapper kept at the line's end stays
        else:
            out.append(line)
    return "\n".join(out)
