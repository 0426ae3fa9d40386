"""Write the synthetic Japanese mail corpus that ``tests/test_parse_mails.py`` decodes.

Why a generator: Japanese mail goes wrong byte by byte (NEC special characters that
Python's ``iso2022_jp`` cannot encode, CP932 vs Shift_JIS tilde mappings, encoded-words
split inside a character, labels that lie). Writing the ``.eml`` fixtures by hand would
hide how each byte was made, so this script builds every mail from the text its writer
typed, and the expectation in ``expected.json`` is that same text. The ``.eml`` files are
committed as the fixtures; ``test_generator_reproduces_the_committed_files`` checks that
this script still produces them byte for byte.

Everything here is synthetic: invented names and local parts, no real consultations.

Usage::

    python tests/mails/make_mails.py [OUTDIR]      # default: the directory of this file

``expected.json`` holds one entry per ``.eml`` file. Keys (``null`` = not asserted):

- ``file``: the file name.
- ``subject``: decoded subject exactly as typed; ``""`` when the mail has none.
- ``first_line``: first non-empty line of ``letter.text`` (the new words), compared after
  ``str.strip()``; ``""`` means ``letter.text`` must hold no non-blank line.
- ``body_contains``: a substring of ``letter.body`` (optional).
- ``from``: expected ``letter.from_addr``; ``""`` when there is no usable From.
- ``bounce``, ``auto``: expected ``letter.bounce`` and ``automatic_reason(letter) is not None``.
- ``attachments``: exact list of attachment names, in order (optional).
- ``attachments_include``: names that must be among the attachments (optional).
- ``problems``: ``"none"`` (must be empty), ``"some"`` (must be non-empty) or ``"any"``.
- ``covers``: which bullet of the brief the mail exists for.
- Optional extras: ``from_name``; ``text_excludes`` (substrings that must not be in
  ``letter.text``: quotes, signatures, HTML styles); ``html_only``; ``date`` (ISO 8601, or
  ``""`` for ``letter.date is None``); ``message_id`` (``""`` for ``None``).
"""

from __future__ import annotations

import base64
import json
import quopri
import random
import re
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

CITY = "soudan@city.kasaoka.example.jp"
CITY_TO = "笠岡市 若者相談窓口"
DATE = "Thu, 26 Nov 2026 10:00:00 +0900"
DATE_ISO = "2026-11-26T10:00:00+09:00"

Header = tuple[str, str | bytes]


# --------------------------------------------------------------------------- encoders


def _sjis_pair_to_jis(lead: int, trail: int) -> bytes:
    """Map one CP932 double-byte code to its JIS X 0208 row/cell bytes.

    This is the plain arithmetic Shift_JIS <-> JIS transform, so CP932's NEC row 13
    (①, ㈱, Ⅲ, №) lands on JIS row 0x2D as Windows mailers send it; IBM extensions
    (lead byte 0xFA-0xFC) have no JIS row and are refused.
    """
    base = lead - (0x70 if lead <= 0x9F else 0xB0)
    if trail >= 0x9F:
        row, cell = base * 2, trail - 0x7E
    else:
        row, cell = base * 2 - 1, trail - (0x20 if trail >= 0x80 else 0x1F)
    if not (0x21 <= row <= 0x7E and 0x21 <= cell <= 0x7E):
        raise ValueError(f"CP932 {lead:02X}{trail:02X} has no JIS X 0208 code")
    return bytes((row, cell))


def _jis_pair_to_sjis(row: int, cell: int) -> bytes:
    """Inverse of ``_sjis_pair_to_jis``; used only to self-check the fixtures."""
    lead = (row + 1) // 2 + (0x70 if row <= 0x5E else 0xB0)
    trail = cell + (0x1F if cell <= 0x5F else 0x20) if row % 2 else cell + 0x7E
    return bytes((lead, trail))


def _check_roundtrip(text: str, data: bytes, decoded: str, codec: str) -> bytes:
    """Refuse a character whose bytes would not decode back to what the writer typed.

    Example: U+301C WAVE DASH encodes to CP932 0x8160, which means U+FF5E on Windows; a
    fixture typed with 〜 but stored as 0x8160 would make the expectation wrong.
    """
    if decoded != text:
        bad = sorted({a for a, b in zip(text, decoded, strict=False) if a != b})
        raise ValueError(f"{codec} cannot carry {bad!r} unambiguously")
    return data


def cp932(text: str) -> bytes:
    """Bytes a Windows (CP932) mailer writes for ``text``; also used for Shift_JIS labels."""
    data = text.encode("cp932")
    return _check_roundtrip(text, data, data.decode("cp932"), "cp932")


def eucjp(text: str) -> bytes:
    """EUC-JP bytes, refusing characters with vendor-dependent mappings."""
    data = text.encode("euc_jp")
    return _check_roundtrip(text, data, data.decode("euc_jp"), "euc_jp")


def jis(text: str) -> bytes:
    """ISO-2022-JP as Japanese Windows and carrier mailers write it (RFC 1468 plus extras).

    Built from CP932 so NEC special characters get their row-13 codes (Python's codec
    refuses them) and half-width katakana go out as ``ESC ( I`` (JIS X 0201 katakana).
    Every line ends back in ASCII, as RFC 1468 requires.
    """
    out = bytearray()
    mode = b"\x1b(B"
    for ch in text:
        if ord(ch) < 0x80:
            want, chunk = b"\x1b(B", ch.encode("ascii")
        else:
            code = ch.encode("cp932")
            if len(code) == 1:
                want, chunk = b"\x1b(I", bytes((code[0] - 0x80,))
            else:
                want, chunk = b"\x1b$B", _sjis_pair_to_jis(code[0], code[1])
        if want != mode:
            out += want
            mode = want
        out += chunk
    if mode != b"\x1b(B":
        out += b"\x1b(B"
    return _check_roundtrip(text, bytes(out), unjis(bytes(out)), "iso-2022-jp")


def unjis(data: bytes) -> str:
    """Decode what ``jis`` writes, through CP932; a self-check, not a general decoder."""
    out: list[str] = []
    mode = b"\x1b(B"
    i = 0
    while i < len(data):
        if data[i] == 0x1B:
            mode = data[i : i + 3]
            i += 3
        elif mode == b"\x1b$B":
            out.append(_jis_pair_to_sjis(data[i], data[i + 1]).decode("cp932"))
            i += 2
        elif mode == b"\x1b(I":
            out.append(bytes((data[i] + 0x80,)).decode("cp932"))
            i += 1
        else:
            out.append(chr(data[i]))
            i += 1
    return "".join(out)


def encode(text: str, charset: str) -> bytes:
    """Bytes of ``text`` in the charset a mail declares (by our label spelling)."""
    key = charset.lower()
    if key == "iso-2022-jp":
        return jis(text)
    if key in ("shift_jis", "windows-31j", "cp932"):
        return cp932(text)
    if key == "euc-jp":
        return eucjp(text)
    return text.encode("utf-8")


def bword(data: bytes, charset: str) -> str:
    """One RFC 2047 B encoded-word around ``data`` (already in ``charset``)."""
    return f"=?{charset}?B?{base64.b64encode(data).decode('ascii')}?="


def bsubject(text: str, charset: str, per_word: int = 12) -> str:
    """RFC 2047 B encoding split on character boundaries, folded like real mailers."""
    chunks = [text[i : i + per_word] for i in range(0, len(text), per_word)]
    return "\n ".join(bword(encode(chunk, charset), charset) for chunk in chunks)


def qword(data: bytes, charset: str) -> str:
    """One RFC 2047 Q encoded-word; only letters and digits left literal (RFC 2047 5(3))."""
    body = "".join(
        chr(b) if chr(b).isascii() and chr(b).isalnum() else "_" if b == 0x20 else f"={b:02X}"
        for b in data
    )
    return f"=?{charset}?Q?{body}?="


def b64(data: bytes) -> bytes:
    """Base64 body lines of 76 characters, as MIME writers emit them."""
    return base64.encodebytes(data)


def qp(data: bytes) -> bytes:
    """Quoted-printable body (RFC 2045 6.7)."""
    return quopri.encodestring(data)


def rfc2231(name: str) -> str:
    """``filename*`` value of RFC 2231 with UTF-8 and percent-encoding."""
    return "UTF-8''" + urllib.parse.quote(name, safe="")


# --------------------------------------------------------------------------- message building


def headers_bytes(headers: Sequence[Header]) -> bytes:
    """Header block. A ``str`` value must be ASCII; ``bytes`` go in raw (8-bit headers).

    An empty name writes the value as a bare line: a header line with no colon.
    """
    out = bytearray()
    for name, value in headers:
        raw = value if isinstance(value, bytes) else value.encode("ascii")
        out += raw if not name else name.encode("ascii") + b": " + raw
        out += b"\n"
    return bytes(out)


def entity(headers: Sequence[Header], body: bytes) -> bytes:
    """A message or body part: headers, blank line, body."""
    return headers_bytes(headers) + b"\n" + body


def multipart(boundary: str, parts: Sequence[bytes], *, close: bool = True) -> bytes:
    """A multipart body (RFC 2046 5.1.1); ``close=False`` leaves out the final boundary."""
    out = bytearray()
    for part in parts:
        out += b"--" + boundary.encode("ascii") + b"\n" + part
        if not part.endswith(b"\n"):
            out += b"\n"
    if close:
        out += b"--" + boundary.encode("ascii") + b"--\n"
    return bytes(out)


def text_part(text: str, charset: str, cte: str = "") -> bytes:
    """A ``text/plain`` part with the transfer encoding real mailers pick for the charset."""
    return _text_entity("plain", text, charset, cte)


def html_part(html: str, charset: str, cte: str = "") -> bytes:
    """A ``text/html`` part."""
    return _text_entity("html", html, charset, cte)


def _text_entity(subtype: str, text: str, charset: str, cte: str) -> bytes:
    data = encode(text, charset)
    cte = cte or ("7bit" if charset.lower() == "iso-2022-jp" else "base64")
    body = b64(data) if cte == "base64" else qp(data) if cte == "quoted-printable" else data
    return entity(
        [
            ("Content-Type", f'text/{subtype}; charset="{charset}"'),
            ("Content-Transfer-Encoding", cte),
        ],
        body,
    )


def attachment_part(
    content_type: str, data: bytes, disposition: str, extra: Sequence[Header] = ()
) -> bytes:
    """A base64 attachment part; ``disposition`` is the full Content-Disposition value."""
    return entity(
        [
            ("Content-Type", content_type),
            ("Content-Transfer-Encoding", "base64"),
            ("Content-Disposition", disposition),
            *extra,
        ],
        b64(data),
    )


def envelope(
    *,
    from_: str | bytes | None,
    subject: str | bytes | None,
    stem: str,
    date: str | None = DATE,
    message_id: bool = True,
    extra: Sequence[Header] = (),
    to: str = CITY,
) -> list[Header]:
    """The usual top headers; ``None`` leaves a header out."""
    domain = "example.jp"
    hs: list[Header] = []
    if from_ is not None:
        hs.append(("From", from_))
    hs.append(("To", to))
    if subject is not None:
        hs.append(("Subject", subject))
    if date is not None:
        hs.append(("Date", date))
    if message_id:
        hs.append(("Message-ID", f"<{stem.replace('_', '.')}.20261126@{domain}>"))
    hs.extend(extra)
    return hs


MIME = ("MIME-Version", "1.0")


def single(charset: str, cte: str = "") -> list[Header]:
    """MIME headers of a single-part text/plain mail."""
    cte = cte or ("7bit" if charset.lower() == "iso-2022-jp" else "base64")
    return [
        MIME,
        ("Content-Type", f"text/plain; charset={charset}"),
        ("Content-Transfer-Encoding", cte),
    ]


def body_of(text: str, charset: str, cte: str = "") -> bytes:
    """Encode a single-part body the way ``single`` declares it."""
    data = encode(text, charset)
    cte = cte or ("7bit" if charset.lower() == "iso-2022-jp" else "base64")
    return b64(data) if cte == "base64" else qp(data) if cte == "quoted-printable" else data


def addr(name: str, address: str, charset: str = "ISO-2022-JP") -> str:
    """``From`` value with a B-encoded Japanese display name."""
    return f"{bword(encode(name, charset), charset)} <{address}>"


# Small, valid-enough binary payloads; only their metadata is ever kept.
PDF = b"%PDF-1.4\n%synthetic test attachment\n1 0 obj\n<< >>\nendobj\ntrailer\n<< >>\n%%EOF\n"
JPEG = (
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    + bytes(range(48))
    + b"\xff\xd9"
)
GIF = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)


# --------------------------------------------------------------------------- registry


@dataclass
class Mail:
    """One fixture: its bytes (LF line ends, turned to CRLF on write) and its expectation."""

    raw: bytes
    expect: dict[str, Any]
    crlf: bool = True
    prefix: bytes = b""


@dataclass
class _Registry:
    makers: list[tuple[str, Callable[[], Mail]]] = field(default_factory=list)

    def __call__(self, file: str) -> Callable[[Callable[[], Mail]], Callable[[], Mail]]:
        def register(fn: Callable[[], Mail]) -> Callable[[], Mail]:
            self.makers.append((file, fn))
            return fn

        return register


mail = _Registry()


def expect(
    *,
    subject: str | None,
    first_line: str | None,
    from_: str | None,
    covers: str,
    problems: str = "none",
    bounce: bool = False,
    auto: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """An expectation entry; ``extra`` carries the optional keys named in the module doc."""
    entry: dict[str, Any] = {
        "subject": subject,
        "first_line": first_line,
        "from": from_,
        "bounce": bounce,
        "auto": auto,
        "problems": problems,
        "covers": covers,
    }
    entry.update(extra)
    return entry


def first_line_of(text: str) -> str:
    """First non-blank line, stripped: how expectations name the start of a text."""
    return next(line.strip() for line in text.splitlines() if line.strip())


# --------------------------------------------------------------------------- texts (synthetic)

LONELY = """笠岡市の相談窓口の方へ

はじめてメールします。19歳の大学生です。
春から一人暮らしを始めたのですが、友達ができず毎日ひとりで過ごしています。
話す相手がいなくて、夜になるとさみしくて眠れません。
どこか人と話せる場所があれば教えてください。

山田花子
"""

BULLYING = """はじめまして。高校2年の鈴木美咲といいます。
クラスで無視されたり、SNSで悪口を書かれたりしています。
先生に言うともっとひどくなる気がして、誰にも相談できていません。
学校に行くのがこわいです。どうしたらいいですか。
"""

POVERTY = """こんにちは。22歳でアルバイトをしています。
今月は家賃を払うと食費がほとんど残りません。
光熱費も滞納していて、督促の通知が来ました。
使える支援制度があれば知りたいです。
"""

CAREGIVING = """家族の介護で学校に行けなくなりました。
毎日祖母の世話をしていて、勉強する時間がありません。
母は仕事で帰りが遅く、父はいません。
同じような立場の人と話せる場があれば参加したいです。
"""

VOLUNTEER = """笠岡市役所 ご担当者様

市内の大学に通う伊藤翔と申します。
地域の子ども食堂や学習支援のボランティアに参加したいと考えています。
土日であれば活動できます。募集があれば教えてください。

よろしくお願いいたします。
"""

URGENT = """もう限界です。
毎日死にたいと思ってしまいます。
誰にも言えなくて、今夜どうしたらいいかわかりません。
"""

ACK = """山田花子 様

笠岡市 若者相談窓口です。ご相談のメールを受け付けました。
担当の相談員から、3営業日以内にご連絡します。

今すぐ危険を感じているときは、110番（警察）または119番（救急）に電話してください。
つらい気持ちを誰かに聞いてほしいときは、いのちの電話にも相談できます。
"""


def quote(text: str, prefix: str = "> ") -> str:
    """Quote every line the way mailers do (``>`` alone on blank lines)."""
    return "".join(
        (prefix + line if line.strip() else prefix.rstrip()) + "\n" for line in text.splitlines()
    )


# --------------------------------------------------------------------------- encodings


@mail("enc_iso2022jp_basic.eml")
def _() -> Mail:
    subject = "はじめまして、一人暮らしのさみしさについて相談です"
    hs = envelope(
        from_=addr("山田 花子", "hanako.yamada@example.jp"),
        subject=bsubject(subject, "ISO-2022-JP", 10),
        stem="iso2022jp-basic",
    )
    return Mail(
        entity(hs + single("ISO-2022-JP"), jis(LONELY)),
        expect(
            subject=subject,
            first_line=first_line_of(LONELY),
            from_="hanako.yamada@example.jp",
            from_name="山田 花子",
            body_contains="夜になるとさみしくて眠れません",
            date=DATE_ISO,
            attachments=[],
            covers="ISO-2022-JP body and RFC 2047 B subject (several encoded-words)",
        ),
    )


@mail("enc_iso2022jp_nec_special.eml")
def _() -> Mail:
    subject = "相談①：㈱のアルバイト先について"
    text = """お世話になります。佐藤太郎です。
アルバイト先の㈱カサオカ物流で困っていることがあります。
① 休憩時間がもらえない
② 残業代が出ない
③ 先輩から怒鳴られる
契約書にはⅢ型勤務と書いてあり、書類の№は12です。
"""
    hs = envelope(
        from_=addr("佐藤 太郎", "taro.sato@example.jp"),
        subject=bword(jis(subject), "ISO-2022-JP"),
        stem="nec-special",
        extra=[("X-Mailer", "Microsoft Outlook 16.0")],
    )
    return Mail(
        entity(hs + single("ISO-2022-JP"), jis(text)),
        expect(
            subject=subject,
            first_line=first_line_of(text),
            from_="taro.sato@example.jp",
            body_contains="① 休憩時間がもらえない",
            problems="any",
            covers="ISO-2022-JP with NEC special characters (① ㈱ Ⅲ №) in body and subject",
        ),
    )


@mail("enc_iso2022jp_nec_roman_numero.eml")
def _() -> Mail:
    text = "書類の№とⅢの意味がわかりません。㈱の読み方も教えてください。\n"
    subject = "書類№Ⅲについて"
    hs = envelope(
        from_="kenta.takahashi@example.jp",
        subject=bword(jis(subject), "ISO-2022-JP"),
        stem="nec-roman",
    )
    return Mail(
        entity(hs + single("ISO-2022-JP"), jis(text)),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="kenta.takahashi@example.jp",
            problems="any",
            covers="ISO-2022-JP NEC row 13: № (0x2D62), Ⅲ (0x2D37), ㈱ (0x2D6A)",
        ),
    )


@mail("enc_iso2022jp_halfwidth_kana.eml")
def _() -> Mail:
    subject = "ﾊﾞｲﾄ先のことで相談"
    text = """ｺﾝﾋﾞﾆのﾊﾞｲﾄで、店長に毎日ｼﾌﾄを増やされます。
ﾃｽﾄ前でも休めなくて、ﾂﾗｲです。
17歳 高校生 ｱｵｲ
"""
    hs = envelope(
        from_="aoi-0417@ezweb.ne.jp",
        subject=bword(jis(subject), "ISO-2022-JP"),
        stem="halfwidth-kana",
    )
    return Mail(
        entity(hs + single("ISO-2022-JP"), jis(text)),
        expect(
            subject=subject,
            first_line=first_line_of(text),
            from_="aoi-0417@ezweb.ne.jp",
            body_contains="ﾃｽﾄ前でも休めなくて",
            problems="any",
            covers="half-width katakana via ESC ( I in body and subject",
        ),
    )


@mail("enc_subject_split_utf8.eml")
def _() -> Mail:
    subject = "家族の介護で学校に行けません"
    data = subject.encode("utf-8")
    cut = 7  # inside the third character (3 bytes each)
    folded = bword(data[:cut], "UTF-8") + "\n " + bword(data[cut:], "UTF-8")
    hs = envelope(from_="misaki.s@i.softbank.jp", subject=folded, stem="split-utf8")
    return Mail(
        entity(hs + single("UTF-8"), b64(CAREGIVING.encode())),
        expect(
            subject=subject,
            first_line=first_line_of(CAREGIVING),
            from_="misaki.s@i.softbank.jp",
            problems="any",
            covers="encoded-word subject split inside a UTF-8 character across two words",
        ),
    )


@mail("enc_subject_split_iso2022jp.eml")
def _() -> Mail:
    subject = "アルバイト先でのいじめについて"
    data = jis(subject)
    cut = 3 + 5  # ESC $ B, two characters and half of the third
    folded = bword(data[:cut], "ISO-2022-JP") + "\n " + bword(data[cut:], "ISO-2022-JP")
    text = "アルバイト先の先輩から、毎日のように暴言を言われています。\n"
    hs = envelope(from_="sho.n@docomo.ne.jp", subject=folded, stem="split-jis")
    return Mail(
        entity(hs + single("ISO-2022-JP"), jis(text)),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="sho.n@docomo.ne.jp",
            problems="any",
            covers="encoded-word subject split inside a JIS character across two words",
        ),
    )


@mail("enc_sjis_cp932_chars.eml")
def _() -> Mail:
    subject = "①生活費の相談～家賃について"
    text = """笠岡市 ご担当者様

㈱笠岡サービスで契約社員をしている中村大輝です。
① 家賃が払えない
② 食費が足りない
今月～来月がとくに苦しいです。
"""
    hs = envelope(
        from_=addr("中村 大輝", "daiki.nakamura@example.jp", "Shift_JIS"),
        subject=bword(cp932(subject), "Shift_JIS"),
        stem="sjis-cp932",
    )
    return Mail(
        entity(hs + single("Shift_JIS", "8bit"), cp932(text)),
        expect(
            subject=subject,
            first_line=first_line_of(text),
            from_="daiki.nakamura@example.jp",
            from_name="中村 大輝",
            body_contains="今月～来月がとくに苦しいです。",
            problems="any",
            covers="Shift_JIS label with CP932-only characters (① ㈱ ～ as 0x8160)",
        ),
    )


@mail("enc_sjis_base64_mobile.eml")
def _() -> Mail:
    subject = "いじめの相談"
    hs = envelope(
        from_="misaki-0822@docomo.ne.jp",
        subject=bword(cp932(subject), "Shift_JIS"),
        stem="sjis-mobile",
    )
    return Mail(
        entity(hs + single("Shift_JIS", "base64"), b64(cp932(BULLYING))),
        expect(
            subject=subject,
            first_line=first_line_of(BULLYING),
            from_="misaki-0822@docomo.ne.jp",
            body_contains="学校に行くのがこわいです。",
            covers="Shift_JIS base64 body from a carrier address",
        ),
    )


@mail("enc_cp932_8bit_fullwidth_tilde.eml")
def _() -> Mail:
    subject = "ボランティア募集～子ども食堂"
    text = """はじめまして、加藤陽菜です。
毎週土曜日の10時～15時なら子ども食堂のお手伝いができます。
調理師専門学校の1年生です～。
"""
    hs = envelope(
        from_="hina.kato@example.jp",
        subject=bword(cp932(subject), "Shift_JIS"),
        stem="cp932-tilde",
    )
    mime: list[Header] = [
        MIME,
        ("Content-Type", "text/plain; charset=Windows-31J"),
        ("Content-Transfer-Encoding", "8bit"),
    ]
    return Mail(
        entity(hs + mime, cp932(text)),
        expect(
            subject=subject,
            first_line=first_line_of(text),
            from_="hina.kato@example.jp",
            body_contains="10時～15時",
            problems="any",
            covers="CP932 (Windows-31J) 8bit; ～ typed on Windows (0x8160) stays U+FF5E",
        ),
    )


@mail("enc_eucjp.eml")
def _() -> Mail:
    subject = "生活が苦しいです"
    hs = envelope(
        from_="ren.yoshida@example.jp",
        subject=bword(eucjp(subject), "EUC-JP"),
        stem="eucjp",
        extra=[("X-Mailer", "Sylpheed 3.7.0")],
    )
    return Mail(
        entity(hs + single("EUC-JP", "8bit"), eucjp(POVERTY)),
        expect(
            subject=subject,
            first_line=first_line_of(POVERTY),
            from_="ren.yoshida@example.jp",
            body_contains="督促の通知が来ました",
            covers="EUC-JP 8bit body and EUC-JP B subject",
        ),
    )


@mail("enc_utf8_base64.eml")
def _() -> Mail:
    subject = "いじめについて相談させてください"
    hs = envelope(
        from_=addr("鈴木 美咲", "misaki.suzuki@gmail.com", "UTF-8"),
        subject=bsubject(subject, "UTF-8"),
        stem="utf8-b64",
    )
    return Mail(
        entity(hs + single("UTF-8", "base64"), b64(BULLYING.encode())),
        expect(
            subject=subject,
            first_line=first_line_of(BULLYING),
            from_="misaki.suzuki@gmail.com",
            from_name="鈴木 美咲",
            body_contains="SNSで悪口を書かれたり",
            date=DATE_ISO,
            message_id="<utf8-b64.20261126@example.jp>",
            attachments=[],
            covers="UTF-8 base64 body",
        ),
    )


@mail("enc_utf8_qp.eml")
def _() -> Mail:
    subject = "介護と学校の両立"
    hs = envelope(
        from_="yui.yamamoto@example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="utf8-qp",
    )
    return Mail(
        entity(hs + single("UTF-8", "quoted-printable"), qp(CAREGIVING.encode())),
        expect(
            subject=subject,
            first_line=first_line_of(CAREGIVING),
            from_="yui.yamamoto@example.jp",
            body_contains="毎日祖母の世話をしていて",
            covers="UTF-8 quoted-printable body",
        ),
    )


@mail("enc_utf8_8bit_wave_dash.eml")
def _() -> Mail:
    subject = "夜がつらい〜誰かと話したい"
    text = """夜になると涙が止まりません〜。
もう消えたいと思うことがあります。
21時〜翌2時くらいがいちばんつらいです。
"""
    hs = envelope(
        from_="haruto.matsumoto@icloud.example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="utf8-8bit",
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=first_line_of(text),
            from_="haruto.matsumoto@icloud.example.jp",
            body_contains="21時〜翌2時",
            covers="UTF-8 8bit; WAVE DASH U+301C typed on a phone stays 〜 (urgent wording)",
        ),
    )


@mail("enc_utf8_body_bom.eml")
def _() -> Mail:
    subject = "相談です"
    hs = envelope(
        from_="sakura.w@example.jp", subject=bword(subject.encode(), "UTF-8"), stem="utf8-bom-body"
    )
    return Mail(
        entity(hs + single("UTF-8", "base64"), b64(b"\xef\xbb\xbf" + POVERTY.encode())),
        expect(
            subject=subject,
            first_line=first_line_of(POVERTY),
            from_="sakura.w@example.jp",
            problems="any",
            covers="UTF-8 with a BOM at the start of the body (BOM must not reach text)",
        ),
    )


@mail("enc_utf8_bom_before_headers.eml")
def _() -> Mail:
    subject = "一人でいるのがつらい"
    hs = envelope(
        from_="kaito.i@example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="utf8-bom-headers",
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), LONELY.encode()),
        expect(
            subject=subject,
            first_line=first_line_of(LONELY),
            from_="kaito.i@example.jp",
            problems="any",
            covers="UTF-8 BOM before the first header (saved by a Windows editor)",
        ),
        prefix=b"\xef\xbb\xbf",
    )


@mail("enc_no_charset_iso2022jp.eml")
def _() -> Mail:
    subject = "友達がいません"
    hs = envelope(
        from_="aoi.kobayashi@example.jp",
        subject=bword(jis(subject), "ISO-2022-JP"),
        stem="no-charset",
    )
    mime: list[Header] = [
        MIME,
        ("Content-Type", "text/plain"),
        ("Content-Transfer-Encoding", "7bit"),
    ]
    return Mail(
        entity(hs + mime, jis(LONELY)),
        expect(
            subject=subject,
            first_line=first_line_of(LONELY),
            from_="aoi.kobayashi@example.jp",
            body_contains="話す相手がいなくて",
            problems="any",
            covers="no charset declared: ISO-2022-JP bytes under plain text/plain",
        ),
    )


@mail("enc_no_mime_raw_jis_subject.eml")
def _() -> Mail:
    subject = "進路のことで悩んでいます"
    text = "高校3年です。進学するお金がなく、就職するか迷っています。\n"
    hs = envelope(from_="yuto-m@example.jp", subject=jis(subject), stem="no-mime")
    return Mail(
        entity(hs, jis(text)),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="yuto-m@example.jp",
            problems="any",
            covers="no MIME headers at all; raw ISO-2022-JP in body and in the Subject",
        ),
    )


@mail("enc_wrong_label_utf8_as_iso2022jp.eml")
def _() -> Mail:
    subject = "相談したいことがあります"
    hs = envelope(
        from_="rin.sasaki@example.jp", subject=bword(subject.encode(), "UTF-8"), stem="wrong-jis"
    )
    mime: list[Header] = [
        MIME,
        ("Content-Type", "text/plain; charset=iso-2022-jp"),
        ("Content-Transfer-Encoding", "8bit"),
    ]
    return Mail(
        entity(hs + mime, BULLYING.encode()),
        expect(
            subject=subject,
            first_line=first_line_of(BULLYING),
            from_="rin.sasaki@example.jp",
            body_contains="誰にも相談できていません",
            problems="some",
            covers="declared charset wrong: UTF-8 bytes labelled iso-2022-jp",
        ),
    )


@mail("enc_wrong_label_utf8_as_sjis.eml")
def _() -> Mail:
    subject = "介護の相談"
    hs = envelope(
        from_="mei.yamaguchi@example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="wrong-sjis",
    )
    mime: list[Header] = [
        MIME,
        ("Content-Type", "text/plain; charset=shift_jis"),
        ("Content-Transfer-Encoding", "8bit"),
    ]
    return Mail(
        entity(hs + mime, CAREGIVING.encode()),
        expect(
            subject=subject,
            first_line=first_line_of(CAREGIVING),
            from_="mei.yamaguchi@example.jp",
            body_contains="勉強する時間がありません",
            problems="some",
            covers="declared charset wrong: UTF-8 bytes labelled shift_jis",
        ),
    )


@mail("enc_wrong_label_eucjp_as_iso2022jp.eml")
def _() -> Mail:
    subject = "お金のこと"
    hs = envelope(
        from_="kota.hayashi@example.jp", subject=bword(eucjp(subject), "EUC-JP"), stem="wrong-euc"
    )
    mime: list[Header] = [
        MIME,
        ("Content-Type", 'text/plain; charset="ISO-2022-JP"'),
        ("Content-Transfer-Encoding", "8bit"),
    ]
    return Mail(
        entity(hs + mime, eucjp(POVERTY)),
        expect(
            subject=subject,
            first_line=first_line_of(POVERTY),
            from_="kota.hayashi@example.jp",
            body_contains="使える支援制度があれば知りたいです",
            problems="some",
            covers="declared charset wrong: EUC-JP bytes labelled iso-2022-jp",
        ),
    )


@mail("enc_raw_utf8_subject.eml")
def _() -> Mail:
    subject = "学校に行けない日が続いています"
    text = "最近、朝になるとお腹が痛くなって学校に行けません。\n"
    hs = envelope(from_="hinata.ogawa@gmail.com", subject=subject.encode(), stem="raw-utf8")
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="hinata.ogawa@gmail.com",
            problems="any",
            covers="raw 8-bit UTF-8 bytes in the Subject header",
        ),
    )


@mail("enc_raw_sjis_subject.eml")
def _() -> Mail:
    subject = "家にいるのがつらいです"
    text = "親とけんかが絶えず、家にいるのがつらいです。\n相談に乗ってもらえますか。\n"
    hs = envelope(from_="souta.k@softbank.ne.jp", subject=cp932(subject), stem="raw-sjis")
    return Mail(
        entity(hs + single("Shift_JIS", "8bit"), cp932(text)),
        expect(
            subject=subject,
            first_line=first_line_of(text),
            from_="souta.k@softbank.ne.jp",
            problems="some",
            covers="raw Shift_JIS bytes in the Subject header",
        ),
    )


@mail("enc_unknown_charset_utf8.eml")
def _() -> Mail:
    subject = "ボランティアの件"
    hs = envelope(
        from_="sho.ito@example.jp", subject=bword(subject.encode(), "UTF-8"), stem="unknown-utf8"
    )
    mime: list[Header] = [
        MIME,
        ("Content-Type", "text/plain; charset=x-kasaoka-unknown"),
        ("Content-Transfer-Encoding", "8bit"),
    ]
    return Mail(
        entity(hs + mime, VOLUNTEER.encode()),
        expect(
            subject=subject,
            first_line=first_line_of(VOLUNTEER),
            from_="sho.ito@example.jp",
            body_contains="子ども食堂や学習支援のボランティア",
            problems="some",
            covers="an unknown charset label (UTF-8 bytes underneath)",
        ),
    )


@mail("enc_unknown_8bit_sjis.eml")
def _() -> Mail:
    subject = "生活費の相談"
    hs = envelope(
        from_="daichi.m@example.jp", subject=bword(cp932(subject), "Shift_JIS"), stem="unknown-8bit"
    )
    mime: list[Header] = [
        MIME,
        ("Content-Type", "text/plain; charset=unknown-8bit"),
        ("Content-Transfer-Encoding", "8bit"),
    ]
    return Mail(
        entity(hs + mime, cp932(POVERTY + CAREGIVING)),
        expect(
            subject=subject,
            first_line=first_line_of(POVERTY),
            from_="daichi.m@example.jp",
            body_contains="光熱費も滞納していて",
            problems="some",
            covers="an unknown charset label (unknown-8bit, Shift_JIS bytes underneath)",
        ),
    )


@mail("enc_undecodable_bytes_utf8.eml")
def _() -> Mail:
    subject = "文字化けしていたらすみません"
    rng = random.Random(20261126)
    junk = bytes(rng.randrange(0x80, 0x100) for _ in range(40))
    head = "スマホから送っています。\n途中が文字化けしているかもしれません。\n"
    tail = "\n学費のことで相談したいです。\n"
    hs = envelope(
        from_="nanami.t@example.jp", subject=bword(subject.encode(), "UTF-8"), stem="undecodable"
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), head.encode() + junk + tail.encode()),
        expect(
            subject=subject,
            first_line=first_line_of(head),
            from_="nanami.t@example.jp",
            body_contains="学費のことで相談したいです。",
            problems="some",
            covers="undecodable bytes: random high bytes under a UTF-8 label",
        ),
    )


@mail("enc_lf_line_endings.eml")
def _() -> Mail:
    subject = "ひとりぼっちです"
    hs = envelope(
        from_="riku.s@example.jp", subject=bword(subject.encode(), "UTF-8"), stem="lf-only"
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), LONELY.encode()),
        expect(
            subject=subject,
            first_line=first_line_of(LONELY),
            from_="riku.s@example.jp",
            covers="bare LF line ends (exported from an mbox), otherwise clean UTF-8",
        ),
        crlf=False,
    )


# --------------------------------------------------------------------------- headers


@mail("hdr_subject_q_utf8.eml")
def _() -> Mail:
    subject = "Re: 相談 (2回目)"
    text = "先日はありがとうございました。もう一度相談させてください。\n"
    hs = envelope(
        from_="ayaka.mori@gmail.com",
        subject="Re: " + qword("相談 (2回目)".encode(), "UTF-8"),
        stem="q-utf8",
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="ayaka.mori@gmail.com",
            covers="Q-encoded subject (UTF-8, underscore for space) after plain ASCII",
        ),
    )


@mail("hdr_subject_q_iso2022jp.eml")
def _() -> Mail:
    subject = "居場所がほしい"
    text = "学校にも家にも居場所がないと感じています。\n"
    hs = envelope(
        from_="mio.ishii@example.jp", subject=qword(jis(subject), "iso-2022-jp"), stem="q-jis"
    )
    return Mail(
        entity(hs + single("ISO-2022-JP"), jis(text)),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="mio.ishii@example.jp",
            covers="Q-encoded subject carrying ISO-2022-JP",
        ),
    )


@mail("hdr_from_name_quoted_encoded_word.eml")
def _() -> Mail:
    name = "小林 葵"
    subject = "相談"
    text = "誰かに話を聞いてほしいです。\n"
    hs = envelope(
        from_=f'"{bword(name.encode(), "UTF-8")}" <aoi.k@example.jp>',
        subject=bword(subject.encode(), "UTF-8"),
        stem="quoted-ew",
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="aoi.k@example.jp",
            from_name=name,
            problems="any",
            covers="B-encoded Japanese display name inside quotes (non-RFC, common)",
        ),
    )


@mail("hdr_attachment_rfc2231_utf8.eml")
def _() -> Mail:
    fname = "相談票_山田.pdf"
    subject = "相談票を送ります"
    text = "記入した相談票を添付します。よろしくお願いします。\n"
    body = multipart(
        "=_rfc2231_a",
        [
            text_part(text, "UTF-8", "8bit"),
            attachment_part(
                "application/pdf",
                PDF,
                f"attachment; filename*={rfc2231(fname)}",
            ),
        ],
    )
    hs = envelope(
        from_="hanako.yamada@example.jp", subject=bword(subject.encode(), "UTF-8"), stem="rfc2231"
    )
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/mixed; boundary="=_rfc2231_a"')]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="hanako.yamada@example.jp",
            attachments=[fname],
            covers="RFC 2231 Japanese attachment file name (filename*=UTF-8''...)",
        ),
    )


@mail("hdr_attachment_rfc2231_continuation.eml")
def _() -> Mail:
    fname = "笠岡市ボランティア参加申込書_伊藤翔.pdf"
    # Cut between %XX escapes (never inside one), so a character's bytes may straddle
    # two sections: RFC 2231 section 4.1 joins the sections before decoding.
    enc = rfc2231(fname)
    tokens = re.findall(r"%[0-9A-F]{2}|[^%]", enc)
    pieces = ["".join(tokens[i : i + 14]) for i in range(0, len(tokens), 14)]
    disposition = "attachment;\n" + ";\n".join(
        f" filename*{i}*={piece}" for i, piece in enumerate(pieces)
    )
    subject = "申込書を添付します"
    text = "ボランティアの申込書を添付しました。ご確認ください。\n"
    body = multipart(
        "=_cont_b",
        [text_part(text, "UTF-8", "base64"), attachment_part("application/pdf", PDF, disposition)],
    )
    hs = envelope(
        from_="sho.ito@example.jp", subject=bword(subject.encode(), "UTF-8"), stem="rfc2231-cont"
    )
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/mixed; boundary="=_cont_b"')]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="sho.ito@example.jp",
            attachments=[fname],
            covers="RFC 2231 continuation filename*0*= / filename*1*= ...",
        ),
    )


@mail("hdr_attachment_rfc2047_filename.eml")
def _() -> Mail:
    fname = "写真.jpg"
    encoded = bword(jis(fname), "ISO-2022-JP")
    subject = "写真を送ります"
    text = "ボランティア活動の写真を送ります。\n"
    body = multipart(
        "=_rfc2047_c",
        [
            text_part(text, "ISO-2022-JP"),
            attachment_part(
                f'image/jpeg; name="{encoded}"', JPEG, f'attachment; filename="{encoded}"'
            ),
        ],
    )
    hs = envelope(
        from_="hina.kato@example.jp",
        subject=bword(jis(subject), "ISO-2022-JP"),
        stem="rfc2047-filename",
    )
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/mixed; boundary="=_rfc2047_c"')]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="hina.kato@example.jp",
            attachments=[fname],
            problems="any",
            covers="RFC 2047 encoded-word inside a quoted filename (Outlook/Thunderbird style)",
        ),
    )


@mail("hdr_missing_from.eml")
def _() -> Mail:
    subject = "名前は書けませんが相談です"
    text = "名前は言えませんが、いじめのことで相談したいです。\n"
    hs = envelope(from_=None, subject=bword(subject.encode(), "UTF-8"), stem="no-from")
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="",
            problems="any",
            covers="missing From",
        ),
    )


@mail("hdr_missing_date.eml")
def _() -> Mail:
    subject = "日付なしの相談"
    text = "アルバイトの給料が払われていません。\n"
    hs = envelope(
        from_="takumi.s@example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="no-date",
        date=None,
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="takumi.s@example.jp",
            date="",
            problems="any",
            covers="missing Date",
        ),
    )


@mail("hdr_missing_message_id.eml")
def _() -> Mail:
    subject = "はじめての相談"
    text = "一人暮らしで、誰とも話さない日が続いています。\n"
    hs = envelope(
        from_="kanon.a@example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="no-mid",
        message_id=False,
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="kanon.a@example.jp",
            message_id="",
            date=DATE_ISO,
            problems="any",
            covers="missing Message-ID",
        ),
    )


@mail("hdr_malformed_date.eml")
def _() -> Mail:
    subject = "相談です（日付が変です）"
    text = "スマホの設定がおかしいかもしれません。家計の相談です。\n"
    hs = envelope(
        from_="yuna.tanaka@example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="bad-date",
        date="Thu, 31 Nov 2026 25:61:00 +0900",
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="yuna.tanaka@example.jp",
            date="",
            problems="some",
            covers="malformed Date (31 November, 25:61)",
        ),
    )


@mail("hdr_carrier_double_dot.eml")
def _() -> Mail:
    subject = "相談"
    text = "バイト先でいじめられています。\n"
    hs = envelope(
        from_="taro..yamada.@docomo.ne.jp",
        subject=bword(cp932(subject), "Shift_JIS"),
        stem="carrier-dots",
    )
    return Mail(
        entity(hs + single("Shift_JIS", "base64"), b64(cp932(text))),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="taro..yamada.@docomo.ne.jp",
            problems="any",
            covers="carrier address with non-RFC local part (taro..yamada.@docomo.ne.jp)",
        ),
    )


@mail("hdr_carrier_leading_dot.eml")
def _() -> Mail:
    name = "はなこ"
    subject = "眠れません"
    text = "最近ずっと眠れなくて、学校でも集中できません。\n"
    hs = envelope(
        from_=addr(name, ".hanako@ezweb.ne.jp"),
        subject=bword(jis(subject), "ISO-2022-JP"),
        stem="carrier-leading-dot",
    )
    return Mail(
        entity(hs + single("ISO-2022-JP"), jis(text)),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_=".hanako@ezweb.ne.jp",
            from_name=name,
            problems="any",
            covers="carrier address with a leading dot (.hanako@ezweb.ne.jp) and a name",
        ),
    )


@mail("hdr_domain_uppercase.eml")
def _() -> Mail:
    subject = "ボランティアに興味があります"
    text = "高校生でも参加できるボランティアはありますか。\n"
    hs = envelope(
        from_="Hanako.Sato@EXAMPLE.JP",
        subject=bword(subject.encode(), "UTF-8"),
        stem="upper-domain",
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="Hanako.Sato@example.jp",
            covers="From with upper-case domain: domain lower-cased, local part kept",
        ),
    )


@mail("hdr_auto_submitted_no.eml")
def _() -> Mail:
    subject = "友達関係の相談"
    text = "仲の良かった友達グループから外されてしまいました。\n"
    hs = envelope(
        from_="yuka.okada@example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="auto-no",
        extra=[("Auto-Submitted", "no")],
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="yuka.okada@example.jp",
            auto=False,
            covers="Auto-Submitted: no is a human mail (RFC 3834 5.1), not automatic",
        ),
    )


@mail("hdr_no_subject.eml")
def _() -> Mail:
    text = "件名をつけ忘れました。家族のことで相談があります。\n"
    hs = envelope(from_="mao.f@softbank.ne.jp", subject=None, stem="no-subject")
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject="",
            first_line=text.strip(),
            from_="mao.f@softbank.ne.jp",
            problems="any",
            covers="missing Subject",
        ),
    )


# --------------------------------------------------------------------------- structure

HTML_HEAD = '<html><head><meta charset="{cs}"><style>p {{ font-size: 14px; }}</style></head>'


@mail("struct_alternative_text_preferred.eml")
def _() -> Mail:
    subject = "いじめの相談"
    html = (
        HTML_HEAD.format(cs="UTF-8")
        + "<body><div>はじめまして。高校2年の鈴木美咲といいます。</div>"
        "<div>クラスで無視されています。（HTML版の本文）</div></body></html>\n"
    )
    body = multipart(
        "=_alt_d",
        [text_part(BULLYING, "UTF-8", "base64"), html_part(html, "UTF-8", "base64")],
    )
    hs = envelope(
        from_="misaki.suzuki@gmail.com", subject=bword(subject.encode(), "UTF-8"), stem="alt-text"
    )
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/alternative; boundary="=_alt_d"')]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line=first_line_of(BULLYING),
            from_="misaki.suzuki@gmail.com",
            body_contains="先生に言うともっとひどくなる気がして",
            text_excludes=["HTML版", "font-size"],
            html_only=False,
            attachments=[],
            covers="multipart/alternative text+html: the text part is preferred",
        ),
    )


@mail("struct_alternative_empty_text.eml")
def _() -> Mail:
    subject = "家のこと"
    html = (
        HTML_HEAD.format(cs="UTF-8") + "<body><div>家族の介護で学校に行けなくなりました。</div>"
        "<div>毎日祖母の世話をしています。&nbsp;相談できますか。</div></body></html>\n"
    )
    body = multipart(
        "=_alt_e", [text_part("", "UTF-8", "base64"), html_part(html, "UTF-8", "base64")]
    )
    hs = envelope(
        from_="yui.yamamoto@example.jp", subject=bword(subject.encode(), "UTF-8"), stem="alt-empty"
    )
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/alternative; boundary="=_alt_e"')]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line="家族の介護で学校に行けなくなりました。",
            from_="yui.yamamoto@example.jp",
            body_contains="毎日祖母の世話をしています。",
            text_excludes=["font-size", "<div>"],
            html_only=True,
            problems="any",
            covers="multipart/alternative whose text part is empty: words come from HTML",
        ),
    )


@mail("struct_alternative_stub_text.eml")
def _() -> Mail:
    subject = "相談させてください"
    stub = "このメールはHTML形式です。HTML表示に対応したメールソフトでご覧ください。\n"
    html = (
        HTML_HEAD.format(cs="UTF-8") + "<body><p>アルバイトの給料が2か月払われていません。</p>"
        "<p>店長に聞いても「来月払う」と言われるだけです。</p></body></html>\n"
    )
    body = multipart(
        "=_alt_f", [text_part(stub, "UTF-8", "base64"), html_part(html, "UTF-8", "base64")]
    )
    hs = envelope(
        from_="takumi.s@example.jp", subject=bword(subject.encode(), "UTF-8"), stem="alt-stub"
    )
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/alternative; boundary="=_alt_f"')]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line="アルバイトの給料が2か月払われていません。",
            from_="takumi.s@example.jp",
            body_contains="来月払う",
            text_excludes=["HTML表示に対応した"],
            html_only=True,
            problems="any",
            covers="multipart/alternative whose text part is a stub: words come from HTML",
        ),
    )


@mail("struct_html_only.eml")
def _() -> Mail:
    subject = "たすけて"
    html = (
        HTML_HEAD.format(cs="Shift_JIS")
        + "<body><div>もう限界です。</div><div>毎日死にたいと思ってしまいます。</div>"
        "<div>誰にも言えなくて、今夜どうしたらいいかわかりません。</div></body></html>\n"
    )
    hs = envelope(
        from_="anon-2026@docomo.ne.jp", subject=bword(cp932(subject), "Shift_JIS"), stem="html-only"
    )
    mime: list[Header] = [
        MIME,
        ("Content-Type", 'text/html; charset="Shift_JIS"'),
        ("Content-Transfer-Encoding", "base64"),
    ]
    return Mail(
        entity(hs + mime, b64(cp932(html))),
        expect(
            subject=subject,
            first_line=first_line_of(URGENT),
            from_="anon-2026@docomo.ne.jp",
            body_contains="毎日死にたいと思ってしまいます。",
            text_excludes=["font-size", "<div>"],
            html_only=True,
            problems="any",
            covers="HTML-only mail (Shift_JIS, urgent wording)",
        ),
    )


@mail("struct_decome_related.eml")
def _() -> Mail:
    subject = "ボランティアしたいです"
    html = (
        '<html><body><div style="color:#ff6699">こんにちは！ボランティアに参加したいです。</div>'
        '<img src="cid:deco01@softbank.ne.jp"><div>土曜日なら行けます。</div></body></html>\n'
    )
    body = multipart(
        "=_deco_g",
        [
            html_part(html, "Shift_JIS", "quoted-printable"),
            entity(
                [
                    ("Content-Type", 'image/gif; name="heart.gif"'),
                    ("Content-Transfer-Encoding", "base64"),
                    ("Content-ID", "<deco01@softbank.ne.jp>"),
                    ("Content-Disposition", 'inline; filename="heart.gif"'),
                ],
                b64(GIF),
            ),
        ],
    )
    hs = envelope(
        from_="kokona.n@softbank.ne.jp", subject=bword(cp932(subject), "Shift_JIS"), stem="decome"
    )
    mime: list[Header] = [
        MIME,
        ("Content-Type", 'multipart/related; type="text/html"; boundary="=_deco_g"'),
    ]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line="こんにちは！ボランティアに参加したいです。",
            from_="kokona.n@softbank.ne.jp",
            body_contains="土曜日なら行けます。",
            text_excludes=["cid:", "color:"],
            html_only=True,
            problems="any",
            covers="carrier decoration mail: multipart/related HTML with an inline image",
        ),
    )


@mail("struct_nested_mixed_alt_related.eml")
def _() -> Mail:
    subject = "学習支援ボランティアの応募"
    text = VOLUNTEER
    html = (
        "<html><body><div>笠岡市役所 ご担当者様</div>"
        '<div>市内の大学に通う伊藤翔と申します。</div><img src="cid:logo@example.jp">'
        "</body></html>\n"
    )
    related = multipart(
        "=_rel_j",
        [
            html_part(html, "UTF-8", "base64"),
            entity(
                [
                    ("Content-Type", "image/png"),
                    ("Content-Transfer-Encoding", "base64"),
                    ("Content-ID", "<logo@example.jp>"),
                    ("Content-Disposition", 'inline; filename="logo.png"'),
                ],
                b64(PNG),
            ),
        ],
    )
    alternative = multipart(
        "=_alt_i",
        [
            text_part(text, "UTF-8", "base64"),
            entity([("Content-Type", 'multipart/related; boundary="=_rel_j"')], related),
        ],
    )
    mixed = multipart(
        "=_mix_h",
        [
            entity([("Content-Type", 'multipart/alternative; boundary="=_alt_i"')], alternative),
            attachment_part("application/pdf", PDF, 'attachment; filename="resume.pdf"'),
        ],
    )
    hs = envelope(
        from_="sho.ito@example.jp", subject=bword(subject.encode(), "UTF-8"), stem="nested"
    )
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/mixed; boundary="=_mix_h"')]
    return Mail(
        entity(hs + mime, mixed),
        expect(
            subject=subject,
            first_line=first_line_of(text),
            from_="sho.ito@example.jp",
            body_contains="土日であれば活動できます。",
            html_only=False,
            attachments_include=["resume.pdf"],
            covers="nested multipart/mixed > alternative > related, plus a PDF",
        ),
    )


@mail("struct_forwarded_rfc822.eml")
def _() -> Mail:
    subject = "Fwd: 友達からのメール"
    outer = (
        "友達から届いたメールを転送します。\nこの子のことが心配です。相談に乗ってもらえますか。\n"
    )
    inner_text = "もう学校には行かない。誰とも会いたくない。\n"
    inner = entity(
        [
            ("From", "friend.0303@ezweb.ne.jp"),
            ("To", "kanon.a@example.jp"),
            ("Subject", bword(jis("ごめんね"), "ISO-2022-JP")),
            ("Date", "Wed, 25 Nov 2026 22:40:00 +0900"),
            MIME,
            ("Content-Type", "text/plain; charset=ISO-2022-JP"),
            ("Content-Transfer-Encoding", "7bit"),
        ],
        jis(inner_text),
    )
    body = multipart(
        "=_fwd_k",
        [
            text_part(outer, "UTF-8", "8bit"),
            entity([("Content-Type", "message/rfc822"), ("Content-Disposition", "inline")], inner),
        ],
    )
    hs = envelope(
        from_="kanon.a@example.jp",
        subject="Fwd: " + bword("友達からのメール".encode(), "UTF-8"),
        stem="forward",
    )
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/mixed; boundary="=_fwd_k"')]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line=first_line_of(outer),
            from_="kanon.a@example.jp",
            body_contains="この子のことが心配です。",
            problems="any",
            covers="forwarded message/rfc822 part (inner ISO-2022-JP): outer headers win",
        ),
    )


@mail("struct_attachment_pdf.eml")
def _() -> Mail:
    subject = "督促状の写しを送ります"
    text = "電気代の督促状が届きました。PDFを添付します。\n"
    body = multipart(
        "=_pdf_l",
        [
            text_part(text, "ISO-2022-JP"),
            attachment_part(
                'application/pdf; name="tokusoku.pdf"', PDF, 'attachment; filename="tokusoku.pdf"'
            ),
        ],
    )
    hs = envelope(
        from_="ren.yoshida@example.jp", subject=bword(jis(subject), "ISO-2022-JP"), stem="pdf"
    )
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/mixed; boundary="=_pdf_l"')]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="ren.yoshida@example.jp",
            attachments=["tokusoku.pdf"],
            covers="attachment kept as metadata (PDF)",
        ),
    )


@mail("struct_attachment_jpg.eml")
def _() -> Mail:
    subject = "写真"
    text = "SNSに書かれた悪口のスクショです。\n"
    body = multipart(
        "=_jpg_m",
        [
            text_part(text, "UTF-8", "base64"),
            attachment_part("image/jpeg", JPEG, 'attachment; filename="IMG_0123.JPG"'),
        ],
    )
    hs = envelope(
        from_="misaki.s@i.softbank.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="jpg",
        extra=[("X-Mailer", "iPhone Mail (22A100)")],
    )
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/mixed; boundary="=_jpg_m"')]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="misaki.s@i.softbank.jp",
            attachments=["IMG_0123.JPG"],
            covers="attachment kept as metadata (JPEG from a phone)",
        ),
    )


@mail("struct_attachment_only.eml")
def _() -> Mail:
    fname = "相談シート.pdf"
    body = multipart(
        "=_only_n",
        [attachment_part("application/pdf", PDF, f"attachment; filename*={rfc2231(fname)}")],
    )
    hs = envelope(from_="hanako.yamada@example.jp", subject="", stem="attachment-only")
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/mixed; boundary="=_only_n"')]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject="",
            first_line="",
            from_="hanako.yamada@example.jp",
            attachments=[fname],
            problems="any",
            covers="attachment-only mail: no text part, empty Subject",
        ),
    )


@mail("struct_empty_body.eml")
def _() -> Mail:
    subject = "相談したいです"
    hs = envelope(
        from_="riko.h@docomo.ne.jp", subject=bword(cp932(subject), "Shift_JIS"), stem="empty"
    )
    return Mail(
        entity(hs + single("Shift_JIS", "8bit"), b""),
        expect(
            subject=subject,
            first_line="",
            from_="riko.h@docomo.ne.jp",
            problems="any",
            covers="subject only, empty body (the words are in the subject)",
        ),
    )


# --------------------------------------------------------------------------- automatic mail

ORIGINAL_HEADERS = (
    "Return-Path: <soudan@city.kasaoka.example.jp>\n"
    "From: soudan@city.kasaoka.example.jp\n"
    "To: hanako.yamada@example.jp\n"
    f"Subject: {bword(jis('ご相談を受け付けました'), 'ISO-2022-JP')}\n"
    f"Date: {DATE}\n"
    "Message-ID: <ack-0001@city.kasaoka.example.jp>\n"
)


@mail("auto_bounce_english.eml")
def _() -> Mail:
    notice = """This is the mail system at host mx.city.kasaoka.example.jp.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

<hanako.yamada@example.jp>: host mx.example.jp[192.0.2.25] said: 550 5.1.1
    <hanako.yamada@example.jp>: Recipient address rejected: User unknown
"""
    status = """Reporting-MTA: dns; mx.city.kasaoka.example.jp
Arrival-Date: Thu, 26 Nov 2026 10:00:01 +0900

Final-Recipient: rfc822; hanako.yamada@example.jp
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <hanako.yamada@example.jp>: User unknown
"""
    body = multipart(
        "=_dsn_o",
        [
            entity(
                [
                    ("Content-Description", "Notification"),
                    ("Content-Type", "text/plain; charset=us-ascii"),
                ],
                notice.encode(),
            ),
            entity(
                [
                    ("Content-Description", "Delivery report"),
                    ("Content-Type", "message/delivery-status"),
                ],
                status.encode(),
            ),
            entity(
                [
                    ("Content-Description", "Undelivered Message Headers"),
                    ("Content-Type", "text/rfc822-headers"),
                ],
                ORIGINAL_HEADERS.encode(),
            ),
        ],
    )
    hs = [
        ("Return-Path", "<>"),
        ("From", "MAILER-DAEMON@mx.city.kasaoka.example.jp (Mail Delivery System)"),
        ("To", CITY),
        ("Subject", "Undelivered Mail Returned to Sender"),
        ("Date", "Thu, 26 Nov 2026 10:00:02 +0900"),
        ("Message-ID", "<20261126010002.dsn@mx.city.kasaoka.example.jp>"),
        ("Auto-Submitted", "auto-replied"),
        MIME,
        ("Content-Type", 'multipart/report; report-type=delivery-status;\n boundary="=_dsn_o"'),
    ]
    return Mail(
        entity(hs, body),
        expect(
            subject="Undelivered Mail Returned to Sender",
            first_line=None,
            from_="MAILER-DAEMON@mx.city.kasaoka.example.jp",
            bounce=True,
            auto=True,
            problems="any",
            covers="multipart/report delivery-status bounce (English, Postfix)",
        ),
    )


@mail("auto_bounce_japanese.eml")
def _() -> Mail:
    subject = "配信不能のお知らせ"
    notice = """送信されたメールは、以下の宛先に配信できませんでした。

宛先：hanako.yamada@example.jp
理由：宛先のメールアドレスが存在しません。
"""
    status = """Reporting-MTA: dns; mail.example.jp

Final-Recipient: rfc822; hanako.yamada@example.jp
Action: failed
Status: 5.1.1
"""
    body = multipart(
        "=_dsn_p",
        [
            text_part(notice, "ISO-2022-JP"),
            entity([("Content-Type", "message/delivery-status")], status.encode()),
            entity([("Content-Type", "text/rfc822-headers")], ORIGINAL_HEADERS.encode()),
        ],
    )
    hs = [
        ("Return-Path", "<>"),
        ("From", addr("メール配信システム", "MAILER-DAEMON@mail.example.jp")),
        ("To", CITY),
        ("Subject", bword(jis(subject), "ISO-2022-JP")),
        ("Date", "Thu, 26 Nov 2026 10:00:03 +0900"),
        ("Message-ID", "<20261126100003.bounce@mail.example.jp>"),
        MIME,
        ("Content-Type", 'multipart/report; report-type="delivery-status"; boundary="=_dsn_p"'),
    ]
    return Mail(
        entity(hs, body),
        expect(
            subject=subject,
            first_line=None,
            from_="MAILER-DAEMON@mail.example.jp",
            body_contains="配信できませんでした",
            bounce=True,
            auto=True,
            problems="any",
            covers="multipart/report delivery-status bounce (Japanese text, no Auto-Submitted)",
        ),
    )


@mail("auto_replied.eml")
def _() -> Mail:
    subject = "自動応答: ご相談を受け付けました"
    text = "ただいま不在にしております。12月1日以降に確認いたします。\n"
    hs = envelope(
        from_="hanako.yamada@example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="auto-replied",
        extra=[
            ("Auto-Submitted", "auto-replied"),
            ("In-Reply-To", "<ack-0001@city.kasaoka.example.jp>"),
        ],
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="hanako.yamada@example.jp",
            auto=True,
            covers="auto-reply (Auto-Submitted: auto-replied, RFC 3834)",
        ),
    )


@mail("auto_x_autoreply.eml")
def _() -> Mail:
    subject = "不在通知"
    text = "メールありがとうございます。出張のため返信が遅れます。\n"
    hs = envelope(
        from_="daiki.nakamura@example.jp",
        subject=bword(jis(subject), "ISO-2022-JP"),
        stem="x-autoreply",
        extra=[("X-Autoreply", "yes")],
    )
    return Mail(
        entity(hs + single("ISO-2022-JP"), jis(text)),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="daiki.nakamura@example.jp",
            auto=True,
            covers="auto-reply marked only by X-Autoreply (vacation responders)",
        ),
    )


@mail("auto_list_id.eml")
def _() -> Mail:
    subject = "【かさおかボランティア通信】12月の募集案内"
    text = "12月のボランティア募集をお知らせします。\n・子ども食堂（12/5）\n・清掃活動（12/12）\n"
    hs = envelope(
        from_=addr("かさおかボランティア通信", "news@volunteer.kasaoka.example.jp"),
        subject=bsubject(subject, "ISO-2022-JP", 10),
        stem="list-id",
        extra=[
            (
                "List-Id",
                f"{bword(jis('かさおかボランティア'), 'ISO-2022-JP')} "
                "<news.volunteer.kasaoka.example.jp>",
            ),
            ("List-Unsubscribe", "<mailto:leave@volunteer.kasaoka.example.jp>"),
        ],
    )
    return Mail(
        entity(hs + single("ISO-2022-JP"), jis(text)),
        expect(
            subject=subject,
            first_line=first_line_of(text),
            from_="news@volunteer.kasaoka.example.jp",
            auto=True,
            covers="list mail (List-Id)",
        ),
    )


@mail("auto_precedence_bulk.eml")
def _() -> Mail:
    subject = "NPO法人 笠岡ユースネット メールマガジン 第12号"
    text = "いつもご支援ありがとうございます。今月の活動報告をお届けします。\n"
    hs = envelope(
        from_="magazine@youth-net.example.jp",
        subject=bsubject(subject, "UTF-8", 14),
        stem="bulk",
        extra=[("Precedence", "bulk")],
    )
    return Mail(
        entity(hs + single("UTF-8", "quoted-printable"), qp(text.encode())),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="magazine@youth-net.example.jp",
            auto=True,
            covers="Precedence: bulk",
        ),
    )


# --------------------------------------------------------------------------- quoted replies


@mail("quote_gt_top_posted.eml")
def _() -> Mail:
    subject = "Re: ご相談を受け付けました"
    new = "返信ありがとうございます。\n来週の火曜日の夕方なら電話で話せます。\n"
    old = "鈴木美咲 様\n\nご都合のよい日時を教えてください。\n"
    text = new + "\n" + quote(old)
    hs = envelope(
        from_="misaki.suzuki@gmail.com",
        subject="Re: " + bword("ご相談を受け付けました".encode(), "UTF-8"),
        stem="gt-top",
        extra=[("In-Reply-To", "<ack-0002@city.kasaoka.example.jp>")],
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=first_line_of(new),
            from_="misaki.suzuki@gmail.com",
            body_contains="> ご都合のよい日時を教えてください。",
            text_excludes=["ご都合のよい日時", ">"],
            covers="quoted reply with '>' lines under the new text",
        ),
    )


@mail("quote_japanese_wrote.eml")
def _() -> Mail:
    subject = "Re: 説明会のご案内"
    new = "山田さん\n\nご案内ありがとうございます。説明会に参加します。\n"
    old = (
        "伊藤さん\n\n12月5日に子ども食堂ボランティアの説明会があります。\nご都合はいかがですか。\n"
    )
    attribution = "2026年11月26日(木) 10:00 山田 <yamada@example.jp>:\n"
    text = new + "\n" + attribution + quote(old)
    hs = envelope(
        from_="sho.ito@gmail.com",
        subject="Re: " + bword("説明会のご案内".encode(), "UTF-8"),
        stem="ja-wrote",
    )
    return Mail(
        entity(hs + single("UTF-8", "base64"), b64(text.encode())),
        expect(
            subject=subject,
            first_line="山田さん",
            from_="sho.ito@gmail.com",
            body_contains="12月5日に子ども食堂ボランティアの説明会があります。",
            text_excludes=["2026年11月26日(木) 10:00", "yamada@example.jp", "説明会があります"],
            covers="Japanese 'wrote:' header line (Gmail 日本語) followed by quoted text",
        ),
    )


@mail("quote_english_wrote.eml")
def _() -> Mail:
    subject = "Re: volunteer"
    new = "ありがとうございます。土曜日に伺います。\n"
    old = "土曜日の10時に公民館に来てください。\n"
    attribution = "On Thu, Nov 26, 2026 at 10:00 AM Yamada <yamada@example.jp> wrote:\n"
    text = new + "\n" + attribution + quote(old)
    hs = envelope(from_="hina.kato@gmail.com", subject=subject, stem="en-wrote")
    return Mail(
        entity(hs + single("UTF-8", "quoted-printable"), qp(text.encode())),
        expect(
            subject=subject,
            first_line=new.strip(),
            from_="hina.kato@gmail.com",
            text_excludes=["wrote:", "公民館に来てください"],
            covers="English 'On ... wrote:' attribution followed by quoted text",
        ),
    )


@mail("quote_english_wrote_wrapped.eml")
def _() -> Mail:
    subject = "Re: ご相談を受け付けました"
    new = "お返事ありがとうございます。\n少し気持ちが楽になりました。\n"
    attribution = (
        "On Thu, Nov 26, 2026 at 10:05 AM 笠岡市 若者相談窓口 <\n"
        "soudan@city.kasaoka.example.jp> wrote:\n"
    )
    text = new + "\n" + attribution + "\n" + quote(ACK)
    hs = envelope(
        from_="hanako.yamada@gmail.com",
        subject="Re: " + bword("ご相談を受け付けました".encode(), "UTF-8"),
        stem="en-wrote-wrapped",
    )
    return Mail(
        entity(hs + single("UTF-8", "base64"), b64(text.encode())),
        expect(
            subject=subject,
            first_line=first_line_of(new),
            from_="hanako.yamada@gmail.com",
            text_excludes=["On Thu", "wrote:", "soudan@city", "いのちの電話", "110", "119"],
            covers="Gmail attribution wrapped over two lines, quoting our acknowledgement",
        ),
    )


@mail("quote_original_message.eml")
def _() -> Mail:
    subject = "RE: ボランティアについて"
    new = "わかりました。来週の説明会に参加します。\n\n伊藤翔\n"
    old = (
        "-----Original Message-----\n"
        f"From: {CITY_TO} <{CITY}>\n"
        "Sent: Thursday, November 26, 2026 10:05 AM\n"
        "To: 伊藤翔 <sho.ito@example.jp>\n"
        "Subject: RE: ボランティアについて\n\n"
        "伊藤様\n\n説明会は12月5日の14時からです。\n"
    )
    text = new + "\n" + old
    hs = envelope(
        from_="sho.ito@example.jp",
        subject="RE: " + bword(jis("ボランティアについて"), "ISO-2022-JP"),
        stem="original-message",
        extra=[("X-Mailer", "Microsoft Outlook 16.0")],
    )
    return Mail(
        entity(hs + single("ISO-2022-JP"), jis(text)),
        expect(
            subject=subject,
            first_line=first_line_of(new),
            from_="sho.ito@example.jp",
            body_contains="説明会は12月5日の14時からです。",
            text_excludes=["-----Original Message-----", "Sent:", "説明会は12月5日"],
            covers="Outlook '-----Original Message-----' with unquoted original below",
        ),
    )


@mail("quote_signature_dashes.eml")
def _() -> Mail:
    subject = "子ども食堂のボランティア"
    new = (
        "来月から地域の子ども食堂でボランティアをしたいと考えています。\n"
        "平日の夕方なら参加できます。\n"
    )
    sig = "-- \n田中優奈\n笠岡市在住 大学2年\n"
    hs = envelope(
        from_="yuna.tanaka@example.jp", subject=bword(subject.encode(), "UTF-8"), stem="signature"
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), (new + "\n" + sig).encode()),
        expect(
            subject=subject,
            first_line=first_line_of(new),
            from_="yuna.tanaka@example.jp",
            body_contains="笠岡市在住 大学2年",
            text_excludes=["笠岡市在住 大学2年"],
            covers="signature after '-- ' is not part of the new text",
        ),
    )


@mail("quote_reply_to_ack.eml")
def _() -> Mail:
    subject = "Re: ご相談を受け付けました"
    new = (
        "ご連絡ありがとうございます。\n"
        "昨日よりは少し落ち着きました。相談員の方からの連絡を待っています。\n"
    )
    attribution = f"2026年11月26日(木) 10:05 {CITY_TO} <{CITY}>:\n"
    text = new + "\n" + attribution + "\n" + quote(ACK)
    hs = envelope(
        from_=addr("山田花子", "hanako.yamada@gmail.com", "UTF-8"),
        subject="Re: " + bword("ご相談を受け付けました".encode(), "UTF-8"),
        stem="reply-ack",
        extra=[
            ("In-Reply-To", "<ack-0001@city.kasaoka.example.jp>"),
            ("References", "<ack-0001@city.kasaoka.example.jp>"),
        ],
    )
    return Mail(
        entity(hs + single("UTF-8", "base64"), b64(text.encode())),
        expect(
            subject=subject,
            first_line=first_line_of(new),
            from_="hanako.yamada@gmail.com",
            body_contains="いのちの電話",
            text_excludes=["いのちの電話", "110", "119", "受け付けました"],
            covers="reply quoting our acknowledgement (crisis lines) stays out of the text",
        ),
    )


@mail("quote_reply_to_ack_carrier.eml")
def _() -> Mail:
    subject = "Re: ご相談を受け付けました"
    new = "返信ありがとうございます。\n今日は学校に行けました。\n"
    old = (
        "----- Original Message -----\n"
        f"From: {CITY}\n"
        "Date: 2026/11/26 10:05\n"
        "Subject: ご相談を受け付けました\n\n" + ACK
    )
    hs = envelope(
        from_="hanako-0101@ezweb.ne.jp",
        subject="Re: " + bword(jis("ご相談を受け付けました"), "ISO-2022-JP"),
        stem="reply-ack-carrier",
        extra=[("In-Reply-To", "<ack-0003@city.kasaoka.example.jp>")],
    )
    return Mail(
        entity(hs + single("ISO-2022-JP"), jis(new + "\n" + old)),
        expect(
            subject=subject,
            first_line=first_line_of(new),
            from_="hanako-0101@ezweb.ne.jp",
            body_contains="いのちの電話",
            text_excludes=["いのちの電話", "110", "119", "Original Message"],
            covers="carrier reply: '----- Original Message -----' over our unquoted ack",
        ),
    )


@mail("quote_bottom_posted.eml")
def _() -> Mail:
    subject = "Re: 面談の日程"
    old = "来週、面談の時間を取れますか。\n"
    new = "はい、水曜日の午後なら大丈夫です。\n"
    text = "2026年11月26日(木) 10:00 山田 <yamada@example.jp>:\n" + quote(old) + "\n" + new
    hs = envelope(
        from_="kaito.i@example.jp",
        subject="Re: " + bword("面談の日程".encode(), "UTF-8"),
        stem="bottom",
    )
    return Mail(
        entity(hs + single("UTF-8", "8bit"), text.encode()),
        expect(
            subject=subject,
            first_line=new.strip(),
            from_="kaito.i@example.jp",
            text_excludes=["面談の時間を取れますか", "yamada@example.jp"],
            covers="bottom-posted reply: new text below the quote",
        ),
    )


# --------------------------------------------------------------------------- broken


@mail("broken_truncated_base64.eml")
def _() -> Mail:
    subject = "途中で切れた相談"
    flat = base64.b64encode(LONELY.encode())
    keep = len(flat) * 2 // 3
    keep = keep - keep % 4 + 3  # stop three characters into a quartet: no padding possible
    cut = b"\n".join(flat[i : min(i + 76, keep)] for i in range(0, keep, 76))
    hs = envelope(
        from_="hanako.yamada@example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="truncated-b64",
    )
    return Mail(
        entity(hs + single("UTF-8", "base64"), cut + b"\n"),
        expect(
            subject=subject,
            first_line=first_line_of(LONELY),
            from_="hanako.yamada@example.jp",
            body_contains="はじめてメールします。",
            problems="some",
            covers="truncated base64 (cut mid-quartet): keep what decodes, record a problem",
        ),
    )


@mail("broken_missing_final_boundary.eml")
def _() -> Mail:
    subject = "添付が送れたか不安です"
    text = "家計の状況をまとめた表を送ります。\n"
    body = multipart(
        "=_open_q",
        [
            text_part(text, "UTF-8", "8bit"),
            attachment_part("application/pdf", PDF, 'attachment; filename="kakei.pdf"'),
        ],
        close=False,
    )
    hs = envelope(
        from_="yuna.tanaka@example.jp", subject=bword(subject.encode(), "UTF-8"), stem="no-close"
    )
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/mixed; boundary="=_open_q"')]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line=text.strip(),
            from_="yuna.tanaka@example.jp",
            problems="some",
            covers="multipart with no final boundary",
        ),
    )


@mail("broken_boundary_mismatch.eml")
def _() -> Mail:
    subject = "相談です"
    text = "いじめのことで相談したいです。毎日学校に行くのがつらいです。\n"
    body = multipart("=_real_r", [text_part(text, "UTF-8", "8bit")])
    hs = envelope(
        from_="sota.k@example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="boundary-mismatch",
    )
    mime: list[Header] = [MIME, ("Content-Type", 'multipart/mixed; boundary="=_declared_s"')]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line="いじめのことで相談したいです。毎日学校に行くのがつらいです。",
            from_="sota.k@example.jp",
            body_contains="毎日学校に行くのがつらいです。",
            problems="some",
            covers="boundary parameter never matches: recover the part by the delimiter used",
        ),
    )


@mail("broken_multipart_no_boundary.eml")
def _() -> Mail:
    subject = "家族の介護"
    body = multipart("=_lost_t", [text_part(CAREGIVING, "UTF-8", "8bit")])
    hs = envelope(
        from_="yui.yamamoto@example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="no-boundary",
    )
    mime: list[Header] = [MIME, ("Content-Type", "multipart/mixed")]
    return Mail(
        entity(hs + mime, body),
        expect(
            subject=subject,
            first_line=first_line_of(CAREGIVING),
            from_="yui.yamamoto@example.jp",
            body_contains="毎日祖母の世話をしていて",
            problems="some",
            covers="multipart/mixed without a boundary parameter: recover by the delimiter used",
        ),
    )


@mail("broken_header_no_colon.eml")
def _() -> Mail:
    subject = "お金の相談"
    hs = envelope(
        from_="kota.hayashi@example.jp",
        subject=bword(subject.encode(), "UTF-8"),
        stem="no-colon",
        to=f"{CITY},",
    )
    hs.append(("", "info@city.kasaoka.example.jp"))  # a To list folded without indentation
    return Mail(
        entity(hs + single("UTF-8", "8bit"), POVERTY.encode()),
        expect(
            subject=subject,
            first_line=first_line_of(POVERTY),
            text_excludes=["MIME-Version", "Content-Type"],
            from_="kota.hayashi@example.jp",
            body_contains="今月は家賃を払うと食費がほとんど残りません。",
            problems="some",
            covers="header line with no colon (To folded without indent): keep reading headers",
        ),
    )


# --------------------------------------------------------------------------- writer


def build() -> list[tuple[str, bytes, dict[str, Any]]]:
    """Every fixture as (file name, bytes on disk, expectation entry)."""
    out = []
    for file, maker in mail.makers:
        m = maker()
        if b"\r" in m.raw:
            raise ValueError(f"{file}: write LF only; CRLF is added on write")
        raw = m.prefix + (m.raw.replace(b"\n", b"\r\n") if m.crlf else m.raw)
        if len(raw) >= 10_240:
            raise ValueError(f"{file}: {len(raw)} bytes; keep fixtures under 10 KB")
        out.append((file, raw, {"file": file, **m.expect}))
    names = [f for f, _, _ in out]
    if len(set(names)) != len(names):
        raise ValueError("duplicate fixture file names")
    return out


def write_corpus(outdir: Path) -> list[str]:
    """Write every ``.eml`` and ``expected.json`` into ``outdir``; return the file names."""
    outdir.mkdir(parents=True, exist_ok=True)
    built = build()
    for file, raw, _ in built:
        (outdir / file).write_bytes(raw)
    entries = [entry for _, _, entry in built]
    (outdir / "expected.json").write_text(
        json.dumps(entries, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    return [file for file, _, _ in built]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    written = write_corpus(target)
    print(f"wrote {len(written)} mails and expected.json to {target}")
