"""Parse stage: raw RFC 5322 bytes -> ``Letter``.

Contract
--------
``parse(raw: bytes, *, max_size=25 MiB) -> Letter`` is pure and **never raises**.
Input is always the bytes as stored (never a pre-decoded ``str``: turning bytes into
text before MIME parsing wrecks 8-bit Shift_JIS). Every defect or fallback met on the
way is recorded as a short machine string in ``Letter.problems`` and decoding carries
on best-effort, so a resident's mail is never lost to a parser exception.

How
---
* Structure comes from ``email``'s ``BytesParser`` with the ``compat32`` policy,
  which only splits the message; it is about ten times faster than
  ``policy.default``'s structured headers (see the benchmark notes). Every header,
  parameter and body is then decoded here, deliberately:
  - RFC 2047 encoded-words (B and Q), with adjacent words in the same charset joined
    as bytes before decoding, because Japanese mailers split a JIS pair across words;
  - RFC 2231 parameters (continuations, ``charset'lang'%XX``), RFC 2047 inside quoted
    parameters, and raw ISO-2022-JP / UTF-8 / Shift_JIS bytes in parameters;
  - raw 8-bit header bytes are sniffed (``intake.charsets``), never dropped.
* Charsets go through ``intake.charsets.decode_text`` (CP50221 for ISO-2022-JP,
  CP932 for Shift_JIS, sniffing when the label is wrong or missing).
* ``From`` is taken from the raw header text, not ``email.utils``: carriers issued
  non-RFC local parts such as ``taro..yamada.@docomo.ne.jp`` that Python mangles.
* Body: the first inline ``text/plain`` outside any attached ``message/rfc822``;
  in ``multipart/alternative`` the plain part wins unless it is empty or a stub
  ("HTML mail"), then the HTML is converted to text with its line breaks kept.
  Further inline text parts of a ``multipart/mixed`` are appended (Apple Mail splits
  text around inline images). Attachments are metadata only.
* Oversized mail (> ``max_size``) is store-only: headers from the first 64 KiB,
  flagged ``oversized``. MIME nesting and part counts are capped (``mime-too-deep``,
  ``mime-too-many-parts``) so pathological input cannot hang the worker.

Never logs subjects or bodies above DEBUG.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from email import utils as email_utils
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from html.parser import HTMLParser
from typing import Any

from intake.charsets import decode_text
from intake.letter import Attachment, Letter
from intake.quotes import ATTRIBUTION_MARK, split_body, without_own_text
from intake.reflow import unwrap_fixed_width

__all__ = [
    "HEADERS_ONLY_LIMIT",
    "MAX_DEPTH",
    "MAX_PARTS",
    "decode_header",
    "html_to_text",
    "letter_report",
    "parse",
]

log = logging.getLogger(__name__)

HEADERS_ONLY_LIMIT = 64 * 1024  # bytes read for the headers of an oversized mail
MAX_DEPTH = 30  # MIME nesting deeper than this is not walked
MAX_PARTS = 1000  # parts beyond this are not walked
MAX_NESTED_MULTIPART_DECLS = 300  # above this, email's parser (recursive per level) is not run

_BOM = b"\xef\xbb\xbf"
_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_ANGLE = re.compile(r"<([^<>]*)>")
_MSGID = re.compile(r"<[^<>]*>")
_BARE_ADDR = re.compile(r"[^\s<>,;\"()\[\]]+@[^\s<>,;\"()\[\]]+")
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_LINE_ENDS = re.compile(r"\r\n?")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_:.\-]+)""", re.I)
_NEXT_PARAM = re.compile(rb"\s*[A-Za-z0-9_\-]+(?:\*\d*)?\*?\s*=")
_MULTIPART_DECL = re.compile(rb"content-type:\s*multipart/", re.I)
_NOT_BASE64 = bytes(
    b for b in range(256) if not (chr(b).isascii() and (chr(b).isalnum() or chr(b) in "+/"))
)
_WHITESPACE = re.compile(r"\s+")
_HTML_SPACE = re.compile(r"[ \t\r\n\f]+")
_HEADER_UNFOLD = re.compile(r"\r?\n(?=[ \t])")
_REPORT_PARTS = frozenset(
    {
        "message/delivery-status",
        "message/global-delivery-status",
        "message/disposition-notification",
        "message/feedback-report",
        "text/rfc822-headers",
    }
)
_NDR_SUBJECT = re.compile(
    r"undeliver|undelivered mail|delivery status notification|delivery failure|"
    r"returned mail|mail delivery failed|failure notice|delivery notification|"
    r"non[- ]?delivery|could not be delivered|配信不能|配信エラー|未配達|不達|送信できません|"
    r"配送エラー|エラーメール|返送",
    re.I,
)
_DAEMON = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mdaemon)@", re.I)
# Plain-text "still trying" warnings, which have no multipart/report to read an
# ``Action: delayed`` from: Exim's "Warning: message ... delayed 24 hours" / "has not yet
# been delivered", Postfix's "Delayed Mail (still being retried)" / "THIS IS A WARNING
# ONLY", sendmail's "Warning: could not send message for past 4 hours" / "THIS IS A
# WARNING MESSAGE ONLY", and the like.
_DELAY_SUBJECT = re.compile(
    r"^\s*warning:\s*message\s+\S+\s+delayed\b|delayed\s+mail|still\s+being\s+retried|"
    r"could\s+not\s+send\s+message\s+for\s+past|delivery\s+status\s+notification\s+\(delay\)|"
    r"配(?:送|信)遅延|遅延(?:通知|のお知らせ)",
    re.I,
)
_DELAY_BODY = re.compile(
    r"has\s+not\s+yet\s+been\s+delivered|this\s+is\s+a\s+warning\s+(?:message\s+)?only|"
    r"you\s+do\s+not\s+need\s+to\s+resend|will\s+be\s+retried\s+until|"
    r"will\s+keep\s+trying|delivery\s+attempts\s+will\s+continue|"
    r"still\s+undelivered\s+after",
    re.I,
)
# Words of a failure for good: a notice with any of them is a bounce whatever else it
# says (sendmail's final bounce repeats the delay lines of its transcript; Postfix's
# delay says "could not be delivered for more than 4 hour(s)", its bounce "could not be
# delivered to one or more recipients").
_FAILED_FOR_GOOD = re.compile(
    r"permanent(?:ly)?\s+(?:fatal\s+)?(?:error|failure|failed)|"
    r"could\s+not\s+be\s+delivered\s+to\b|has\s+been\s+rejected|"
    r"retry\s+(?:timeout|time)\s+(?:exceeded|not\s+reached)|\bgave\s+up\b|\bgiving\s+up\b|"
    r"has\s+now\s+failed|will\s+not\s+be\s+retried|no\s+further\s+(?:delivery\s+)?attempts|"
    r"(?<![\d.])5\.\d{1,3}\.\d{1,3}(?![\d.])|"
    r"(?:配信|配送|送信|お届け(?:すること)?)(?:が|することが)?できませんでした|返送(?:いた)?します",
    re.I,
)
_STUB = re.compile(
    r"html|ＨＴＭＬ|view (this|it) in|web ?browser|ブラウザ|表示できない|デコメ|"
    r"this is a multi-?part message",
    re.I,
)


# --- header decoding ---------------------------------------------------------------


def _to_bytes(value: Any) -> bytes:
    """Raw header value (str with surrogate escapes from ``compat32``) back to bytes."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def _b_decode(text: bytes) -> bytes:
    """Lenient base64 for encoded-words and bodies: skip junk, repair padding."""
    cleaned = text.translate(None, _NOT_BASE64)  # re.sub(rb"[^A-Za-z0-9+/]", b"", text), in C
    cleaned = cleaned[: len(cleaned) - (len(cleaned) % 4 == 1)]
    try:
        return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return b""


def _q_decode(text: bytes) -> bytes:
    """RFC 2047 Q encoding: ``_`` is a space, ``=XX`` a byte."""
    return re.sub(
        rb"=([0-9A-Fa-f]{2})", lambda m: bytes((int(m.group(1), 16),)), text.replace(b"_", b" ")
    )


def decode_header(value: Any, problems: list[str] | None = None, *, name: str = "") -> str:
    """Decode one header value (RFC 2047, raw 8-bit, raw ISO-2022-JP) to ``str``.

    Adjacent encoded-words in the same charset are joined as bytes before decoding
    (RFC 2047 s. 6.2 forbids splitting a character, but Japanese mailers do it), and
    whitespace between encoded-words is dropped (s. 6.2). Literal text with 8-bit bytes
    or JIS escapes is sniffed. Fallbacks are appended to ``problems`` as
    ``<name>:<problem>``.
    """
    if value is None:
        return ""
    if (
        isinstance(value, str)
        and "=?" not in value
        and value.isascii()  # with the next line: no [\x1b\x80-\U0010ffff], in C
        and "\x1b" not in value
    ):
        return _unfold_str(value)
    raw = _FOLD.sub(b"", _to_bytes(value)).strip()
    found: list[str] = []
    pieces: list[tuple[str, bytes]] = []  # ("lit", bytes) | (charset, bytes)
    pos = 0
    for m in _ENCODED_WORD.finditer(raw):
        literal = raw[pos : m.start()]
        if literal:
            pieces.append(("lit", literal))
        charset = m.group(1).decode("ascii", "replace")
        payload = m.group(3)
        data = _b_decode(payload) if m.group(2) in b"bB" else _q_decode(payload)
        # RFC 2047 s. 6.2: whitespace between two encoded-words is not displayed.
        if (
            len(pieces) >= 2
            and pieces[-1][0] == "lit"
            and not pieces[-1][1].strip()
            and pieces[-2][0] != "lit"
        ):
            pieces.pop()
        if pieces and pieces[-1][0] != "lit" and _same_charset(pieces[-1][0], charset):
            prev_cs, prev = pieces.pop()
            pieces.append((prev_cs, prev + data))
        else:
            pieces.append((charset, data))
        pos = m.end()
    if pos < len(raw):
        pieces.append(("lit", raw[pos:]))
    out: list[str] = []
    for kind, data in pieces:
        if kind == "lit":
            if not data.isascii() or b"\x1b" in data:  # [\x1b\x80-\xff]
                decoded = decode_text(data, None, short=True)
                found.append("raw-8bit-header")
                found.extend(decoded.problems)
                out.append(decoded.text)
            else:
                out.append(data.decode("ascii", "replace"))
        else:
            decoded = decode_text(data, kind, short=True)
            found.extend(decoded.problems)
            out.append(decoded.text)
    if problems is not None:
        prefix = f"{name}:" if name else ""
        for p in found:
            tagged = prefix + p
            if tagged not in problems:
                problems.append(tagged)
    return "".join(out).replace("\r", "").replace("\n", "").strip()


def _same_charset(a: str, b: str) -> bool:
    return a.split("*", 1)[0].lower() == b.split("*", 1)[0].lower()


def _unfold_str(value: str) -> str:
    if "\n" not in value:  # nothing to unfold (most headers)
        return value.replace("\r", "").strip()
    return _HEADER_UNFOLD.sub("", value).replace("\r", "").replace("\n", "").strip()


# --- parameters (Content-Type / Content-Disposition) --------------------------------


def _split_params(raw: bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """Split ``type/sub; a=b; c="d;e"`` into the main value and raw (name, value) pairs."""
    items: list[bytes] = []
    buf = bytearray()
    quoted = False
    escaped = False
    for pos, b in enumerate(raw):
        if escaped:
            buf.append(b)
            escaped = False
            continue
        if quoted and b == 0x5C:  # backslash
            escaped = True
            continue
        if b == 0x22:  # double quote
            quoted = not quoted
            buf.append(b)
            continue
        if b == 0x3B and (not quoted or _NEXT_PARAM.match(raw, pos + 1)):  # ;
            # An unclosed quote must not swallow the following "name=" parameters.
            quoted = False
            items.append(bytes(buf))
            buf.clear()
            continue
        buf.append(b)
    items.append(bytes(buf))
    main = items[0].strip().decode("ascii", "replace").lower()
    params: list[tuple[str, bytes]] = []
    for item in items[1:]:
        key, sep, val = item.partition(b"=")
        if not sep:
            continue
        k = key.strip().decode("ascii", "replace").lower()
        v = val.strip()
        if len(v) >= 2 and v.startswith(b'"') and v.endswith(b'"'):
            v = v[1:-1]
        elif v.startswith(b'"'):
            v = v[1:]
        params.append((k, v))
    return main, params


def _params(value: Any, problems: list[str]) -> tuple[str, dict[str, str]]:
    """Main value and decoded parameters, handling RFC 2231 and 2047 and raw bytes."""
    if value is None:
        return "", {}
    raw = _FOLD.sub(b"", _to_bytes(value))
    main, pairs = _split_params(raw)
    simple: dict[str, bytes] = {}
    extended: dict[str, dict[int, tuple[bool, bytes]]] = {}
    for key, val in pairs:
        m = re.fullmatch(r"([^*]+)\*(?:(\d+)\*?|)", key) if "*" in key else None
        if m is None:
            simple.setdefault(key, val)
            continue
        name, idx = m.group(1), m.group(2)
        is_ext = key.endswith("*")
        extended.setdefault(name, {})[int(idx) if idx else 0] = (is_ext, val)
    result: dict[str, str] = {}
    for name, segs in extended.items():
        charset: str | None = None
        data = bytearray()
        for i in sorted(segs):
            is_ext, val = segs[i]
            if is_ext:
                if i == sorted(segs)[0] and val.count(b"'") >= 2:
                    cs, _lang, val = val.split(b"'", 2)
                    charset = cs.decode("ascii", "replace") or None
                data += re.sub(
                    rb"%([0-9A-Fa-f]{2})", lambda mm: bytes((int(mm.group(1), 16),)), val
                )
            else:
                data += val
        decoded = decode_text(bytes(data), charset, short=True)
        for p in decoded.problems:
            if f"param:{p}" not in problems:
                problems.append(f"param:{p}")
        text = decoded.text.replace('"', "")
        result[name] = decode_header(text, problems, name="param") if "=?" in text else text
    for name, val in simple.items():
        if name in result:
            continue
        if b"=?" in val:
            result[name] = decode_header(val.replace(b'"', b""), problems, name="param")
        elif not val.isascii() or b"\x1b" in val:  # [\x1b\x80-\xff]
            decoded = decode_text(val, None, short=True)
            result[name] = decoded.text
            for p in ["raw-8bit-param", *decoded.problems]:
                if f"param:{p}" not in problems:
                    problems.append(f"param:{p}")
        else:
            result[name] = val.decode("ascii", "replace")
    return main, result


# --- addresses ----------------------------------------------------------------------


def _normalise_addr(addr: str) -> str:
    addr = _WHITESPACE.sub("", addr).strip("<>")
    if addr.lower().startswith("mailto:"):
        addr = addr[7:]
    if ":" in addr and addr.startswith("@"):  # source route <@a,@b:user@host>
        addr = addr.split(":", 1)[1]
    local, at, domain = addr.rpartition("@")
    if not at:
        return addr
    return f"{local}@{domain.lower()}"


def _split_addresses(text: str) -> list[str]:
    """Split an address-list on commas outside quotes, angle brackets and comments."""
    if "," not in text:  # one mailbox (most From and To headers): nothing to split
        stripped = text.strip()
        return [stripped] if stripped else []
    out: list[str] = []
    buf: list[str] = []
    quoted = angle = False
    depth = 0
    for ch in text:
        if ch == '"' and not angle and depth == 0:
            quoted = not quoted
        elif not quoted:
            if ch == "<":
                angle = True
            elif ch == ">":
                angle = False
            elif ch == "(":
                depth += 1
            elif ch == ")" and depth:
                depth -= 1
            elif ch == "," and not angle and depth == 0:
                out.append("".join(buf))
                buf = []
                continue
        buf.append(ch)
    out.append("".join(buf))
    return [s for s in (x.strip() for x in out) if s]


def _parse_mailbox(raw: str, problems: list[str]) -> tuple[str | None, str]:
    """(address or None, display name) from one raw mailbox, e.g. ``"名前" <a@b>``.

    Works on the raw text so that carrier local parts such as ``taro..yamada.@``
    survive. ``<>`` (the null sender) gives ``("", "")``.
    """
    angles = list(_ANGLE.finditer(raw))
    if angles:
        m = angles[-1]
        addr = _normalise_addr(m.group(1))
        name_raw = raw[: m.start()].strip()
        if not name_raw:
            name_raw = raw[m.end() :].strip()
            name_raw = name_raw[1:-1] if name_raw.startswith("(") else ""
    else:
        found = _BARE_ADDR.search(_COMMENT.sub(" ", raw))
        if found is None:
            return None, decode_header(raw, problems, name="from")
        addr = _normalise_addr(found.group(0))
        comments = _COMMENT.findall(raw)
        name_raw = comments[0][1:-1] if comments else ""
    name = name_raw.strip()
    if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    return addr, decode_header(name, problems, name="from").strip().strip('"').strip()


# --- HTML ---------------------------------------------------------------------------


class _TextExtractor(HTMLParser):
    """HTML to readable text: block elements and ``<br>`` become line breaks."""

    _BLOCK = frozenset(
        {
            "p", "div", "br", "li", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6",
            "blockquote", "pre", "hr", "ul", "ol", "dl", "dt", "dd", "section",
            "article", "header", "footer", "address", "center", "form", "title",
        }
    )  # fmt: skip
    _SKIP = frozenset({"script", "style", "head", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")
        if tag == "pre":
            self.pre += 1
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self._BLOCK and tag != "br":
            self.parts.append("\n")
        if tag == "pre":
            self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if not self.pre:
            data = _HTML_SPACE.sub(" ", data)
        self.parts.append(data)


def html_to_text(html: str) -> str:
    """Readable text of an HTML body, line breaks kept (``<br>``, ``<p>``, ``<div>``...).

    Uses the standard library's tolerant ``HTMLParser``: carrier decoration mail is
    seldom well formed, and this is fast enough for the 10,000-mail benchmark.
    """
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # HTMLParser is tolerant, but malformed input must not escape
        return re.sub(r"<[^>]*>", "", html)
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [line.strip(" ") for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


# --- MIME walk ----------------------------------------------------------------------


def _raw_header(part: Message, name: str) -> Any:
    lname = name.lower()
    for key, value in part.raw_items():
        if key.lower() == lname:
            return value
    return None


def _payload_bytes(part: Message, problems: list[str]) -> bytes:
    """The part's payload with its Content-Transfer-Encoding undone, leniently."""
    # ``get_payload()`` would already decode 8-bit text with the declared charset and
    # errors="replace"; the raw surrogate-escaped payload keeps the original bytes.
    payload = getattr(part, "_payload", None)
    if isinstance(payload, list):
        return b""
    data = _to_bytes(payload if payload is not None else "")
    cte_raw = _raw_header(part, "content-transfer-encoding")
    cte = _to_bytes(cte_raw).decode("ascii", "replace").strip().lower() if cte_raw else ""
    if cte == "base64":
        decoded = _b_decode(data)
        if data.strip() and not decoded:
            problems.append("bad-base64")
            return data
        return decoded
    if cte in ("quoted-printable", "quoted_printable"):
        try:
            return binascii.a2b_qp(data)
        except (binascii.Error, ValueError):
            problems.append("bad-quoted-printable")
            return data
    if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
        try:
            got = part.get_payload(decode=True)
            return got if isinstance(got, bytes) else data
        except Exception:  # the stdlib uu path is brittle on junk
            return data
    return data


_FLOWED_QUOTE = re.compile(r"(?:> ?)*")


def _unflow(text: str, delsp: bool) -> str:
    """Undo RFC 3676 ``format=flowed`` soft line breaks in ``text`` ("\n" line ends).

    Why: Apple Mail and Thunderbird wrap long Japanese lines as ``死に \nたい`` (a
    trailing space marks the soft break, and with ``delsp=yes`` that space is not part of
    the text). Left as is, a word cut in two is invisible to triage. A line ending in a
    space is joined with the next line of the same quote depth; with ``delsp`` the space is
    dropped. The space-stuffing space of an unquoted line is removed; a quoted line keeps
    its ``>`` prefix as written (the quote split downstream reads it). The signature
    separator ``-- `` is never joined, nor is a line followed by one of another depth.
    """
    if " \n" not in text and "\n " not in text and not text.startswith(" "):
        return text  # no soft break and no stuffing: nothing to undo (most lines, fast)
    out: list[str] = []
    pending: str | None = None  # the paragraph being joined, with its first line's prefix
    pending_depth = 0
    for line in text.split("\n"):
        prefix = _FLOWED_QUOTE.match(line)
        quote = prefix.group() if prefix else ""
        depth = quote.count(">")
        content = line[len(quote) :]
        if not depth and content.startswith(" "):
            content = content[1:]  # space-stuffing (RFC 3676 4.4)
        signature = content == "-- "
        if pending is not None and depth == pending_depth and not signature:
            pending += content
        else:
            if pending is not None:
                out.append(pending)
            pending = (quote if depth else "") + content
            pending_depth = depth
        if content.endswith(" ") and not signature:
            if delsp:
                pending = pending[:-1]
            continue
        out.append(pending)
        pending = None
    if pending is not None:
        out.append(pending)
    return "\n".join(out)


@dataclass
class _Segment:
    text: str
    html: bool
    from_alternative: bool = False


class _Walker:
    """One pass over the MIME tree collecting body segments, attachments, bounce hints."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        self.attachments: list[Attachment] = []
        self.segments: list[_Segment] = []
        self.forwarded: list[Message] = []
        self.report_texts: list[str] = []  # text of DSN/MDN parts: a last-resort body
        self.report = False
        self.actions: list[str] = []  # "Action:" fields of delivery-status parts, lower-cased
        self.parts = 0
        self.too_deep = False
        self.too_many = False

    def _note(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)

    def walk(self, part: Message, depth: int = 0) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            if not self.too_many:
                self.too_many = True
                self._note("mime-too-many-parts")
            return
        if depth > MAX_DEPTH:
            if not self.too_deep:
                self.too_deep = True
                self._note("mime-too-deep")
            return
        ctype, cparams = _params(_raw_header(part, "content-type"), self.problems)
        if "/" not in ctype:
            ctype = "text/plain"
        payload = getattr(part, "_payload", None)  # get_payload() can raise on odd params
        if ctype.startswith("multipart/"):
            if (
                ctype == "multipart/report"
                and "delivery-status" in cparams.get("report-type", "").lower()
            ):
                self.report = True
            if not isinstance(payload, list):
                recovered = _recover_multipart(payload)
                if recovered is not None:
                    self._note("mime-boundary-recovered")
                    for child in recovered:
                        self.walk(child, depth + 1)
                    return
                self._note("multipart-without-parts")
                self._leaf(part, "text/plain", cparams, depth)
                return
            if ctype == "multipart/alternative":
                self._alternative(payload, depth)
            else:
                for child in payload:
                    self.walk(child, depth + 1)
            return
        if ctype in _REPORT_PARTS:
            self._leaf(part, ctype, cparams, depth)
            return
        if ctype == "message/rfc822" or (
            isinstance(payload, list) and ctype.startswith("message/")
        ):
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                self.forwarded.append(inner)
                name = self._name(part, cparams) or decode_header(_raw_header(inner, "subject"))
                self.attachments.append(Attachment(name, ctype, _message_size(inner)))
            return
        self._leaf(part, ctype, cparams, depth)

    def _alternative(self, children: list[Any], depth: int) -> None:
        """Pick one alternative: non-stub text/plain, else HTML with text, else anything."""
        options: list[list[_Segment]] = []
        for child in children:
            sub = _Walker(self.problems)
            sub.parts = self.parts
            sub.walk(child, depth + 1)
            self.parts = sub.parts
            self.attachments.extend(sub.attachments)
            self.forwarded.extend(sub.forwarded)
            self.report_texts.extend(sub.report_texts)
            self.report = self.report or sub.report
            options.append(sub.segments)
        plain = [o for o in options if o and not any(s.html for s in o)]
        html = [o for o in options if o and any(s.html for s in o)]
        good_plain = [o for o in plain if not _is_stub(_join(o))]
        good_html = [o for o in html if _join(o).strip()]
        for choice in (good_plain, good_html, plain, html):
            if choice:
                chosen = choice[0]
                if chosen is not (good_plain[0] if good_plain else None) and plain:
                    self._note("plain-alternative-is-stub")
                for seg in chosen:
                    self.segments.append(_Segment(seg.text, seg.html, True))
                return

    def _name(self, part: Message, cparams: dict[str, str]) -> str:
        _disp, dparams = _params(_raw_header(part, "content-disposition"), self.problems)
        return (dparams.get("filename") or cparams.get("name") or "").strip()

    def _leaf(self, part: Message, ctype: str, cparams: dict[str, str], depth: int) -> None:
        disp, dparams = _params(_raw_header(part, "content-disposition"), self.problems)
        name = (dparams.get("filename") or cparams.get("name") or "").strip()
        is_body_type = ctype in ("text/plain", "text/html")
        attached = disp.startswith("attachment") or (bool(name) and disp != "inline" and depth)
        if ctype in _REPORT_PARTS:
            if ctype.endswith("delivery-status"):
                self.report = True
                self.actions.extend(a.lower() for a in _ACTION.findall(_report_text(part)))
            if not name:
                self.report_texts.append(_report_text(part))
                return
        data = _payload_bytes(part, self.problems)
        if not is_body_type or attached:
            self.attachments.append(Attachment(name, ctype, len(data)))
            return
        charset = cparams.get("charset")
        if ctype == "text/html" and not charset:
            meta = _META_CHARSET.search(data[:4096])
            if meta:
                charset = meta.group(1).decode("ascii", "replace")
        decoded = decode_text(data, charset)
        for p in decoded.problems:
            self._note(f"{p}:{ctype}" if p == "undecodable-bytes" else p)
        text = _LINE_ENDS.sub("\n", decoded.text)
        if ctype == "text/html":
            self.segments.append(_Segment(html_to_text(text), True))
        else:
            if cparams.get("format", "").strip().lower() == "flowed":
                text = _unflow(text, cparams.get("delsp", "").strip().lower() == "yes")
            else:
                # A mailer's fixed-width hard wrap, which may cut 死に|たい (intake.reflow)
                text = unwrap_fixed_width(text)
            self.segments.append(_Segment(text, False))


_BOUNDARY_LINE = re.compile(rb"^--([^\s]{1,200}?)(?:--)?[ \t]*\r?$", re.M)


def _recover_multipart(payload: Any) -> list[Message] | None:
    """Re-split a multipart whose declared boundary is missing or never occurs.

    The first ``--token`` line in the body is taken as the real boundary and the body
    is parsed again with it. Returns the parts, or None when that finds none either.
    """
    if not isinstance(payload, str):
        return None
    data = _to_bytes(payload)
    m = _BOUNDARY_LINE.search(data)
    if m is None:
        return None
    boundary = m.group(1)
    if boundary.endswith(b"--") and len(boundary) > 2:
        boundary = boundary[:-2]
    if b'"' in boundary or _too_many_multipart_decls(data):
        return None
    head = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
    try:
        msg = _parse_message(head + data)
    except Exception:  # recovery is best effort; the caller falls back to plain text
        return None
    parts = getattr(msg, "_payload", None)
    if not isinstance(parts, list) or not parts:
        return None
    return [p for p in parts if isinstance(p, Message)]


def _too_many_multipart_decls(data: bytes) -> bool:
    """Whether ``data`` declares more than ``MAX_NESTED_MULTIPART_DECLS`` multiparts.

    Every match of ``_MULTIPART_DECL`` holds its own "multipart/" (in any ASCII case), so
    counting those in C first spares the case-insensitive scan of every mail (~10 us).
    Each match also holds one ":", and counting those needs no lower-cased copy of the
    mail (20 MB more at the peak for a 20 MB mail), so that count comes first.
    """
    if data.count(b":") <= MAX_NESTED_MULTIPART_DECLS:
        return False
    if data.lower().count(b"multipart/") <= MAX_NESTED_MULTIPART_DECLS:
        return False
    return len(_MULTIPART_DECL.findall(data)) > MAX_NESTED_MULTIPART_DECLS


def _join(segments: list[_Segment]) -> str:
    return "\n".join(s.text for s in segments)


def _is_stub(text: str) -> bool:
    """An empty text/plain alternative, or a one-line "this is HTML mail" notice."""
    stripped = text.strip()
    if not stripped:
        return True
    return len(stripped) < 160 and bool(_STUB.search(stripped))


def _report_text(part: Message) -> str:
    """Text of a report part (message/delivery-status is parsed as header blocks)."""
    payload = getattr(part, "_payload", None)
    if isinstance(payload, list):
        chunks = []
        for block in payload:
            if isinstance(block, Message):
                head = "\n".join(f"{k}: {decode_header(v)}" for k, v in block.raw_items())
                body = getattr(block, "_payload", None)
                text_body = decode_text(_to_bytes(body), None).text if isinstance(body, str) else ""
                chunks.append(head + ("\n" + text_body if text_body else ""))
        text = "\n\n".join(chunks)
    else:
        text = decode_text(_to_bytes(payload or ""), None).text
    return _LINE_ENDS.sub("\n", text).strip()


MAX_FORWARDED = 5  # forwarded messages read for their text; more are only listed
# A delivery-status recipient block's action (RFC 3464 s. 2.3.3).
_ACTION = re.compile(r"(?im)^action:[ \t]*([a-z]+)")
# Actions that say the mail is on its way or arrived: a report of only these is no failure.
NOT_FAILED_ACTIONS = frozenset({"delayed", "delivered", "relayed", "expanded"})


def _message_size(inner: Message) -> int:
    try:
        return len(inner.as_bytes(policy=compat32))
    except Exception:  # sizing a broken inner message must not fail the parse
        return 0


def _body_from(walker: _Walker) -> tuple[str, bool]:
    """Body text and whether it came from HTML only."""
    plain = [s for s in walker.segments if (not s.html or s.from_alternative) and s.text.strip()]
    if plain:
        return "\n".join(s.text.rstrip("\n") for s in plain), all(s.html for s in plain)
    html = [s for s in walker.segments if s.html and s.text.strip()]
    if html:
        return html[0].text, True
    return "", False


# --- top level ----------------------------------------------------------------------


def _parse_message(raw: bytes, *, headers_only: bool = False) -> Message:
    return BytesParser(policy=compat32).parsebytes(raw, headersonly=headers_only)


_HEADER_LINE = re.compile(rb"^(?:[!-9;-~]+[ \t]*:|[ \t]|From )")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _mend_header_block(raw: bytes, problems: list[str]) -> bytes:
    """Turn a header line without a colon into a continuation of the previous header.

    A strict parser ends the header block at such a line, and everything after it --
    MIME-Version, Content-Type -- lands in the body (RFC 5322 s. 2.2 calls it
    malformed). Mailers produce it by wrapping an address list without indenting.
    """
    end = _HEADER_END.search(raw)
    if end is None:
        return raw
    block = raw[: end.start()]
    lines = block.split(b"\n")
    if all(_HEADER_LINE.match(line) or not line.strip() for line in lines[1:]):
        return raw
    mended = [lines[0]]
    for line in lines[1:]:
        if line.strip() and not _HEADER_LINE.match(line):
            line = b" " + line
            if "header-line-without-colon" not in problems:
                problems.append("header-line-without-colon")
        mended.append(line)
    return b"\n".join(mended) + raw[end.start() :]


def _clean_start(raw: bytes, problems: list[str]) -> bytes:
    if raw.startswith(_BOM):
        problems.append("bom-before-headers")
        raw = raw[len(_BOM) :]
    if raw[:1] in (b"\r", b"\n"):
        stripped = raw.lstrip(b"\r\n")
        if stripped[:64].find(b":") > 0:
            problems.append("blank-lines-before-headers")
            raw = stripped
    return raw


def _fill_headers(msg: Message, letter: Letter) -> None:
    problems = letter.problems
    headers: dict[str, list[str]] = {}
    for key, value in msg.raw_items():
        name = str(key).strip().lower()
        headers.setdefault(name, []).append(
            decode_header(value, problems if name in ("subject", "from") else None, name=name)
        )
    letter.headers = headers
    letter.subject = headers.get("subject", [""])[0]

    raw_from = _raw_header(msg, "from") or _raw_header(msg, "sender")
    if raw_from is None:
        problems.append("no-from")
    else:
        text = _FOLD.sub(b"", _to_bytes(raw_from)).decode("utf-8", "surrogateescape")
        first = (_split_addresses(text) or [""])[0]
        addr, name = _parse_mailbox(first, problems)
        if addr is None:
            problems.append("no-from")
        else:
            letter.from_addr = addr
        letter.from_name = name

    to: list[str] = []
    for value in (v for k, v in msg.raw_items() if k.lower() == "to"):
        text = _FOLD.sub(b"", _to_bytes(value)).decode("utf-8", "surrogateescape")
        for item in _split_addresses(text):
            addr, _name = _parse_mailbox(item, [])
            if addr:
                to.append(addr)
    letter.to = to

    mid = headers.get("message-id", [""])[0]
    ids = _MSGID.findall(mid)
    if ids:
        letter.message_id = ids[0]
    elif mid.strip():
        letter.message_id = mid.strip()
        problems.append("message-id-without-brackets")
    else:
        problems.append("no-message-id")
    irt = _MSGID.findall(headers.get("in-reply-to", [""])[0])
    letter.in_reply_to = irt[0] if irt else None
    letter.references = _MSGID.findall(" ".join(headers.get("references", [])))

    date_value = headers.get("date", [""])[0]
    if not date_value:
        problems.append("no-date")
    else:
        letter.date = _parse_date(date_value)
        if letter.date is None:
            problems.append("bad-date")


def _parse_date(value: str) -> datetime | None:
    try:
        return email_utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        pass
    m = re.search(
        r"(\d{4})[/\-年](\d{1,2})[/\-月](\d{1,2})日?\D+(\d{1,2}):(\d{2})(?::(\d{2}))?", value
    )
    if m:
        try:
            year, month, day, hour, minute, second = (int(x) for x in m.groups(default="0"))
            return datetime(year, month, day, hour, minute, second)
        except ValueError:
            return None
    return None


def _looks_like_ndr(letter: Letter) -> bool:
    if "x-failed-recipients" in letter.headers:
        return True
    sender = letter.from_addr.lower()
    daemon = sender == "" or bool(_DAEMON.match(sender))
    return daemon and bool(_NDR_SUBJECT.search(letter.subject))


def _plain_delay_warning(letter: Letter, body: str) -> bool:
    """Whether a letter without a delivery-status report is the mail system's "still
    trying" warning: from the mail system, a delay's words in its subject or body, and
    no word of a failure for good (nor Exim's ``X-Failed-Recipients``).

    Why: such a warning was read as a consultation (a new case in the digest, or a
    follow-up of the resident's case whose English could even raise an alert), and a
    bounce read from it would tell staff to phone a resident whose acknowledgement may
    yet arrive. A DSN decides by its ``Action:`` fields instead (``NOT_FAILED_ACTIONS``).
    """
    if "x-failed-recipients" in letter.headers:
        return False
    sender = letter.from_addr.lower()
    return_path = (letter.header("return-path") or "").replace(" ", "")
    automatic = (letter.header("auto-submitted") or "").strip().lower()
    # Positive evidence of the mail system, never the mere lack of a sender: a resident's
    # mail with no address in From, or a phone's odd Return-Path, with 遅延のお知らせ in
    # its subject was read as a delay, and a bounce's urgency is cleared (review rv11b F1).
    if not (_DAEMON.match(sender) or (return_path == "<>" and automatic not in ("", "no"))):
        return False
    if not (_DELAY_SUBJECT.search(letter.subject) or _DELAY_BODY.search(body)):
        return False
    return not (_FAILED_FOR_GOOD.search(letter.subject) or _FAILED_FOR_GOOD.search(body))


def parse(raw: bytes, *, max_size: int = 25 * 1024 * 1024) -> Letter:
    """Decode one raw RFC 5322 message into a ``Letter``. Never raises.

    ``max_size``: above this many bytes the mail is stored only -- headers from the
    first 64 KiB are decoded, the body is not, and ``oversized`` is recorded.
    """
    letter = Letter()
    try:
        _parse_into(raw, letter, max_size)
    except Exception as exc:  # the contract: a resident's mail never crashes the stage
        log.warning("parse failed after partial decode: %s", type(exc).__name__)
        letter.problems.append(f"parse-error:{type(exc).__name__}")
    return letter


# A forward's subject ("Fwd:", "FW:", "転送:", also after "Re:"): Outlook and some carrier
# mailers forward under the same header block as they reply.
_FORWARD_SUBJECT = re.compile(r"^\s*(?:(?:re|fwd?)\s*[:：]\s*)*(?:fwd?|転送)\s*[:：]", re.I)


def _parse_into(raw: bytes, letter: Letter, max_size: int) -> None:
    problems = letter.problems
    if not isinstance(raw, bytes | bytearray | memoryview):
        problems.append("not-bytes")
        raw = str(raw).encode("utf-8", "surrogateescape")
    raw = _clean_start(bytes(raw), problems)
    raw = _mend_header_block(raw, problems)

    if len(raw) > max_size:
        problems.append("oversized")
        head = raw[:HEADERS_ONLY_LIMIT]
        end = re.search(rb"\r?\n\r?\n", head)
        msg = _parse_message(head[: end.end()] if end else head, headers_only=True)
        _fill_headers(msg, letter)
        return

    headers_only = False
    if _too_many_multipart_decls(raw):
        # email's feed parser recurses once per nesting level; refuse to let a
        # pathological message drive it into deep recursion. Headers only.
        problems.append("mime-too-deep")
        headers_only = True
    try:
        msg = _parse_message(raw, headers_only=headers_only)
    except RecursionError:
        problems.append("mime-too-deep")
        headers_only = True
        msg = _parse_message(raw, headers_only=True)
    except Exception as exc:  # the stdlib parser choking must not lose the headers
        problems.append(f"mime-parser-error:{type(exc).__name__}")
        headers_only = True
        msg = _parse_message(raw, headers_only=True)
    _fill_headers(msg, letter)
    for defect in getattr(msg, "defects", []):
        name = type(defect).__name__
        if name in ("StartBoundaryNotFoundDefect", "CloseBoundaryNotFoundDefect"):
            tag = "mime-" + ("no-start-boundary" if name.startswith("Start") else "no-end-boundary")
            if tag not in problems:
                problems.append(tag)

    walker = _Walker(problems)
    forwarded_shown = ""  # attached forwards as they are, for staff (``quoted``)
    if headers_only:
        body = getattr(msg, "_payload", None)
        text = _to_bytes(body if isinstance(body, str) else "")
        decoded = decode_text(text[: 1024 * 1024], None)
        walker.segments.append(_Segment(_LINE_ENDS.sub("\n", decoded.text), False))
    else:
        walker.walk(msg)
    body_text, html_only = _body_from(walker)
    if not body_text and any(walker.report_texts):
        # A report with no human-readable text/plain part: its own text is the body.
        body_text = "\n\n".join(t for t in walker.report_texts if t)
        problems.append("body-from-report-part")
    if not body_text and walker.forwarded:
        # Nothing written outside the forwarded message: read the forwarded one rather
        # than classify an empty letter. Recorded, because it is not the sender's text.
        inner = _Walker(problems)
        inner.walk(walker.forwarded[0])
        body_text, html_only = _body_from(inner)
        if body_text:
            problems.append("body-from-forwarded-message")
    elif walker.forwarded:
        texts: list[str] = []
        shown: list[str] = []
        for fwd in walker.forwarded[:MAX_FORWARDED]:
            inner = _Walker(problems)
            inner.walk(fwd)
            fwd_text, _html = _body_from(inner)
            if fwd_text.strip():
                shown.append(fwd_text.strip())
                # each forward on its own: our text in one must not hide the next
                texts.append(without_own_text(fwd_text.strip()).strip())
        letter.forwarded = "\n\n".join(t for t in texts if t)
        forwarded_shown = "\n\n".join(shown)
    letter.body = body_text
    letter.html_only = html_only
    letter.attachments = walker.attachments
    letter.bounce = walker.report or _looks_like_ndr(letter)
    letter.delivery_delayed_only = (
        walker.report
        and bool(walker.actions)
        and all(action in NOT_FAILED_ACTIONS for action in walker.actions)
    )
    if not walker.report and _plain_delay_warning(letter, body_text):
        # The mail system's, like any bounce (never a consultation), but no failure.
        letter.bounce = letter.delivery_delayed_only = True
    parts = split_body(body_text)
    letter.text, letter.quoted = parts.new, parts.quoted
    letter.signature = parts.signature
    if parts.kept_whole:
        # Nothing outside quotes and headers, and none of it ours: the whole body is read
        # (recorded, since a split rule may have misfired or the mail is a bare forward).
        problems.append("quote-split-kept-whole-body")
    if forwarded_shown:
        # Staff see the forwarded words with the rest of what is not the sender's own text.
        marker = "---------- 転送されたメッセージ ----------"
        letter.quoted = "\n\n".join(p for p in (letter.quoted, marker, forwarded_shown) if p)
    inline = parts.forwarded or (
        parts.after_header if _FORWARD_SUBJECT.match(letter.subject) else ""
    )
    letter.quoted_words = parts.quoted_words
    if parts.after_header and inline != parts.after_header:
        # Below a reply header: the mail replied to (ours is already left out of it),
        # under its header as attribution, so a staff member's mail from our address is
        # known (``pipeline.quoted_text_read``).
        below = ATTRIBUTION_MARK + parts.reply_header + "\n" + parts.after_header
        letter.quoted_words = "\n\n".join(p for p in (letter.quoted_words, below) if p)
    if inline:
        # A mail forwarded inline (Gmail, iPhone; Outlook's "FW:" under a reply header) goes
        # where an attached one goes, so ``pipeline.decide`` checks it for urgency too; its
        # lines are already in ``quoted``.
        letter.forwarded = "\n\n".join(p for p in (letter.forwarded, inline) if p)
    if "\ufffd" in body_text and not any(p.startswith("undecodable") for p in problems):
        problems.append("replacement-characters-in-body")


def letter_report(path: str, letter: Letter) -> dict[str, Any]:
    """The JSON object ``service.py parse --json PATH`` prints for one mail.

    Keys: path, from, subject, text (the new words), quoted, attachments
    ([{name, content_type, size}]), auto_reply (bool), auto_reason (why, or null),
    bounce, problems.
    """
    from intake.automatic import automatic_reason

    reason = automatic_reason(letter)
    return {
        "path": path,
        "from": letter.from_addr,
        "subject": letter.subject,
        "text": letter.text,
        "quoted": letter.quoted,
        "attachments": [
            {"name": a.name, "content_type": a.content_type, "size": a.size}
            for a in letter.attachments
        ],
        "auto_reply": reason is not None,
        "auto_reason": reason,
        "bounce": letter.bounce,
        "problems": list(letter.problems),
    }
