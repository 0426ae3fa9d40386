"""Property test: ``parse`` returns a Letter quickly for mutated and random MIME.

The contract is that the parse stage never raises and never hangs a worker, whatever
arrives in the mailbox. Hypothesis mutates a few synthetic seed mails (truncation,
byte flips, boundary removal, header garbage, spliced nesting) and also feeds
random bytes; each parse must return within ``TIME_BOUND`` CPU seconds.
"""

from __future__ import annotations

import base64
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intake.charsets import _decode_iso2022jp_bytewise, decode_iso2022jp
from intake.letter import Letter
from intake.parse import parse

TIME_BOUND = 2.0  # CPU seconds per mail; real mail parses in well under a millisecond

_JIS = b"\x1b$B%F%9%H-!\x1b(B"  # テスト① in ISO-2022-JP

SEEDS: list[bytes] = [
    (
        b"From: =?ISO-2022-JP?B?" + base64.b64encode(_JIS) + b"?= <taro..x.@docomo.ne.jp>\r\n"
        b"Subject: =?ISO-2022-JP?B?" + base64.b64encode(_JIS) + b"?=\r\n"
        b"Message-ID: <seed-1@example.jp>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0900\r\n"
        b"Content-Type: text/plain; charset=ISO-2022-JP\r\n\r\n" + _JIS + b"\r\n> quoted\r\n"
    ),
    (
        b"From: a@example.jp\r\nSubject: alt\r\n"
        b"Content-Type: multipart/mixed; boundary=MIX\r\n\r\n"
        b"--MIX\r\nContent-Type: multipart/alternative; boundary=ALT\r\n\r\n"
        b"--ALT\r\nContent-Type: text/plain; charset=shift_jis\r\n\r\n"
        + "相談です".encode("cp932")
        + b"\r\n--ALT\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode("<p>相談<br>です</p>".encode())
        + b"\r\n--ALT--\r\n"
        b"--MIX\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=UTF-8''%E8%B3%87%E6%96%99.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
        b"--MIX\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: b@example.jp\r\nSubject: inner\r\n\r\ninner body\r\n"
        b"--MIX--\r\n"
    ),
    (
        b"From: MAILER-DAEMON@mx.example.jp\r\nSubject: Undelivered\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=R\r\n\r\n"
        b"--R\r\nContent-Type: text/plain; charset=iso-2022-jp\r\n\r\n"
        + "宛先不明".encode("euc_jp")
        + b"\r\n--R\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx\r\n\r\nAction: failed\r\n--R--\r\n"
    ),
]


def _nest(body: bytes, depth: int) -> bytes:
    for i in range(depth):
        body = (
            b"Content-Type: multipart/mixed; boundary=N%d\r\n\r\n--N%d\r\n" % (i, i)
            + body
            + b"\r\n--N%d--\r\n" % i
        )
    return body


@st.composite
def mutated_mail(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(
            st.sampled_from(["truncate", "flip", "insert", "drop-boundary", "garbage", "nest"])
        )
        if not raw:
            break
        pos = draw(st.integers(0, len(raw) - 1))
        if op == "truncate":
            del raw[pos:]
        elif op == "flip":
            raw[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            raw[pos:pos] = draw(st.binary(max_size=40))
        elif op == "drop-boundary":
            raw = bytearray(bytes(raw).replace(b"boundary=", b"boundar=", 1))
        elif op == "garbage":
            garbage = draw(
                st.sampled_from(
                    [
                        b"Subject: =?iso-2022-jp?B?GyRC?=\r\n",
                        b'Content-Type: multipart/mixed; boundary="\r\n',
                        b"Content-Type: text/plain; charset*0*=''%ZZ\r\n",
                        b"From: <<<@@@>>>\r\n",
                        b"Date: \xff\xfe\r\n",
                        b"\x1b$B\x1b$B\x1b(I\r\n",
                        b"Content-Transfer-Encoding: base64\r\n",
                        b": no name\r\n",
                    ]
                )
            )
            raw[0:0] = garbage
        else:  # nest
            raw = bytearray(_nest(bytes(raw), draw(st.integers(1, 120))))
    return bytes(raw)


def _parse_within_bound(raw: bytes) -> Letter:
    # CPU time of this thread: a slow or busy machine (other processes, this process's
    # server threads, a GC pause elsewhere) does not count, a parse that loops does.
    start = time.thread_time()
    letter = parse(raw)
    elapsed = time.thread_time() - start
    assert elapsed < TIME_BOUND, f"parse took {elapsed:.2f}s on {len(raw)} bytes"
    return letter


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_mail())
def test_mutated_mail_parses_without_raising(raw: bytes) -> None:
    letter = _parse_within_bound(raw)
    assert isinstance(letter, Letter)
    assert isinstance(letter.problems, list)
    assert not [p for p in letter.problems if p.startswith("parse-error")]
    assert isinstance(letter.text, str) and isinstance(letter.quoted, str)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_parse_without_raising(raw: bytes) -> None:
    letter = _parse_within_bound(raw)
    assert not [p for p in letter.problems if p.startswith("parse-error")]


def test_seed_mails_parse_cleanly() -> None:
    """The seeds themselves decode (so the fuzzing starts from meaningful mail)."""
    first, second, third = (parse(seed) for seed in SEEDS)
    assert first.subject == "テスト①"
    assert first.from_addr == "taro..x.@docomo.ne.jp"
    assert first.text == "テスト①"
    assert second.text == "相談です"
    assert [a.name for a in second.attachments] == ["資料.pdf", "inner"]
    assert third.bounce
    assert "宛先不明" in third.body


_JIS_ESCAPES = [b"\x1b$B", b"\x1b(B", b"\x1b(J", b"\x1b(I", b"\x1b$@", b"\x1b$(D", b"\x1b$(Q"]
_JIS_BYTES = st.sampled_from([*range(0x21, 0x7F), 0x20, 0x0A, 0x0D])


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(_JIS_ESCAPES), st.lists(_JIS_BYTES, max_size=12)), max_size=8
    )
)
def test_iso2022jp_fast_path_agrees_with_bytewise_decoder(runs: list[tuple[bytes, list[int]]]):
    """The run-at-a-time fast path must decode exactly like the careful decoder."""
    data = b"".join(esc + bytes(body) for esc, body in runs)
    assert decode_iso2022jp(data) == _decode_iso2022jp_bytewise(data)


def _quote_header_reference(line: str, following: str = "") -> bool:
    """``quotes.is_quote_header`` written plainly, each test in its own step (the module's
    version shares the date search and skips the separator pattern on lines that cannot
    start one; both must answer alike)."""
    from intake import quotes as q

    stripped = line.strip()
    if not stripped:
        return False
    if q._SEPARATOR.match(stripped):
        return True
    if q._WROTE.search(stripped) and (
        q._DATEISH.search(stripped) or q._ADDRESSISH.search(stripped)
    ):
        return True
    if (
        q._ends_with_colon(stripped)
        and q._DATEISH.search(stripped)
        and q._ADDRESSISH.search(stripped)
    ):
        return True
    if (
        q._ON_START.match(stripped)
        and q._DATEISH.search(stripped)
        and q._WROTE.search(f"{stripped} {following.strip()}")
    ):
        return True
    if q._DATEISH.search(stripped) and q._ends_with_colon(following) and "@" in following:
        return True
    return bool(q._OUTLOOK_FROM.match(stripped) and q._OUTLOOK_NEXT.match(following))


_QUOTE_PIECES = [
    " ",
    "\u3000",
    "\t",
    "-",
    "--",
    "-----",
    "_____",
    "Original Message",
    "元のメッセージ",
    "転送",
    "Begin forwarded message",
    "begin FORWARDED message",
    ":",
    "：",
    "wrote",
    "書きました",
    "On",
    "Thu,",
    "2026年11月26日",
    "10:00",
    "<taro@example.jp>",
    "x@y.jp",
    "From",
    "差出人",
    "Sent",
    "送信日時",
    "相談です",
    "。",
    ">",
    "＞",
    "b",
    "_",
]


@given(
    st.lists(st.sampled_from(_QUOTE_PIECES), max_size=8).map("".join),
    st.lists(st.sampled_from(_QUOTE_PIECES), max_size=6).map("".join),
)
@settings(max_examples=400, deadline=None)
def test_quote_header_check_agrees_with_its_plain_definition(line: str, following: str) -> None:
    from intake.quotes import is_quote_header

    assert is_quote_header(line, following) == _quote_header_reference(line, following)
