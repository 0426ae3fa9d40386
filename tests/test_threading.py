"""The resident's mail app threads our acknowledgement under their mail: In-Reply-To and
References carry their Message-IDs byte for byte, however long (a phone mailer's long
local part) or odd (legal but unusual characters), never as RFC 2047 encoded words and
never folded inside an identifier; an identifier that is not a well-formed ``<...>`` is
left out rather than written broken. Also through the real pipeline and aiosmtpd, and
the resident's Message-ID never reaches a log above DEBUG."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from intake.businessdays import BusinessCalendar
from intake.compose import Sender, ack_bytes, render_ack, template_environment
from intake.localservers import LocalDovecot, LocalSMTP
from intake.parse import parse
from intake.partners import load_directory
from tests.helpers import write_config

ROOT = Path(__file__).resolve().parent.parent
NOON = datetime(2026, 11, 26, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo"))

# Synthetic identifiers of the shapes real mailers send.
PHONE = "<very-long-local-part-" + "0123456789abcdef" * 4 + ".k3x9@mail.example.ne.jp>"
ODD = '<2026.11.27!#$%&\'*+/=_^`{|}~-x."q"@[192.0.2.7]>'  # legal, unusual characters
EDGE = "<" + "e" * 53 + "@example.jp>"  # 66: "In-Reply-To: " + it is 79, one over 78
HUGE = "<" + "h" * 280 + "@mail.example.ne.jp>"
SHORT = "<r0@example.jp>"
SHAPES = [PHONE, ODD, EDGE, HUGE]

# Not a well-formed msg-id: what ``intake.parse`` may still hand on.
NO_BRACKETS = "no-brackets.123@example.jp"
SPACE = "<with space@example.jp>"
NON_ASCII = "<相談.1@example.jp>"
TOO_LONG = "<" + "t" * 1000 + "@example.jp>"
BROKEN = [NO_BRACKETS, SPACE, NON_ASCII, TOO_LONG]

ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[QqBb]\?")


def _values(in_reply_to: str | None, references: list[str]) -> dict[str, Any]:
    return {
        "sender": Sender("sasaean@city.kasaoka.okayama.jp", "笠岡市 ささえ愛相談窓口"),
        "to": "resident@example.jp",
        "case_number": "C000042",
        "in_reply_to": in_reply_to,
        "references": references,
        "received": NOON,
        "calendar": BusinessCalendar(),
        "directory": load_directory(ROOT / "rules" / "partners.toml"),
        "now": NOON,
    }


def _ack(path: str, in_reply_to: str | None, references: list[str]) -> bytes:
    """The acknowledgement's wire bytes, built the slow way (``render_ack``, a reply or a
    follow-up) or the batch's way (``ack_bytes``, a new case)."""
    env = template_environment(ROOT / "templates")
    if path == "render_ack":
        return bytes(render_ack(env, **_values(in_reply_to, references)))
    return ack_bytes(env, **_values(in_reply_to, references))[1]


def raw_field(data: bytes, name: str) -> list[str] | None:
    """The physical lines of header ``name`` (with its continuation lines), as sent."""
    head = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0].decode("ascii")
    lines = re.split(r"\r?\n", head)
    for i, line in enumerate(lines):
        if line.lower().startswith(name.lower() + ":"):
            return [line, *_takewhile_folded(lines[i + 1 :])]
    return None


def _takewhile_folded(lines: list[str]) -> list[str]:
    """The continuation lines at the start of ``lines`` (those that start with whitespace)."""
    out: list[str] = []
    for line in lines:
        if not line[:1].isspace():
            break
        out.append(line)
    return out


def assert_threaded(data: bytes, in_reply_to: str | None, references: list[str]) -> None:
    """In-Reply-To is exactly ``in_reply_to`` on one line; References lists ``references``
    in order, each identifier whole on its line (folds only between them); no encoded word."""
    irt = raw_field(data, "In-Reply-To")
    if in_reply_to is None:
        assert irt is None
    else:
        assert irt == [f"In-Reply-To: {in_reply_to}"]
    refs = raw_field(data, "References")
    if not references:
        assert refs is None
        return
    assert refs is not None and refs[0].startswith("References: ")
    tokens = [line.split() for line in [refs[0][len("References:") :], *refs[1:]]]
    for line_tokens in tokens:
        assert line_tokens, f"a fold with no identifier on its line: {refs}"
    assert [t for line in tokens for t in line] == references
    for line in refs:
        assert not ENCODED_WORD.search(line), line


@pytest.mark.parametrize("path", ["render_ack", "ack_bytes"])
@pytest.mark.parametrize("message_id", SHAPES, ids=["phone", "odd", "edge78", "huge"])
def test_a_long_or_odd_message_id_is_written_whole_in_the_thread_headers(
    path: str, message_id: str
) -> None:
    data = _ack(path, message_id, [])
    assert_threaded(data, message_id, [message_id])
    letter = parse(data)  # what a mailer reads back: the same identifiers
    assert (letter.in_reply_to, letter.references) == (message_id, [message_id])


@pytest.mark.parametrize("path", ["render_ack", "ack_bytes"])
def test_several_long_references_are_folded_only_between_identifiers(path: str) -> None:
    references = [SHORT, PHONE, ODD, EDGE, HUGE]
    in_reply_to = "<reply." + "9" * 70 + "@mail.example.ne.jp>"
    data = _ack(path, in_reply_to, references)
    assert_threaded(data, in_reply_to, [*references, in_reply_to])
    assert len(raw_field(data, "References") or []) > 1  # it was folded, between ids


@pytest.mark.parametrize("path", ["render_ack", "ack_bytes"])
@pytest.mark.parametrize("broken", BROKEN, ids=["no-brackets", "space", "non-ascii", "too-long"])
def test_a_message_id_that_is_not_a_msg_id_is_left_out_not_written_broken(
    path: str, broken: str
) -> None:
    data = _ack(path, broken, [SHORT, broken, PHONE])
    assert_threaded(data, None, [SHORT, PHONE])
    assert broken.encode("utf-8") not in data


@pytest.mark.parametrize("path", ["render_ack", "ack_bytes"])
def test_more_than_ten_references_keep_the_thread_root_and_the_last_ones(path: str) -> None:
    chain = [f"<m{i}.{'x' * 60}@example.jp>" for i in range(15)]
    data = _ack(path, chain[-1], chain[:-1])
    assert_threaded(data, chain[-1], [chain[0], *chain[-9:]])


@pytest.mark.parametrize(
    ("in_reply_to", "references"),
    [(PHONE, []), (HUGE, [SHORT, ODD]), (SPACE, [PHONE]), (EDGE, [NON_ASCII, EDGE])],
)
def test_the_batch_bytes_equal_the_email_packages_with_long_identifiers(
    in_reply_to: str, references: list[str]
) -> None:
    env = template_environment(ROOT / "templates")
    values = _values(in_reply_to, references)
    slow = render_ack(env, **values)
    message_id = str(slow["Message-ID"])
    assert ack_bytes(env, message_id=message_id, **values) == (message_id, bytes(slow))


# --- through the pipeline: a real Dovecot, `service.py once`, a real aiosmtpd -------------

RESIDENT_LONG = "<resident-phone-" + "a1b2c3d4" * 10 + "@mail.example.ne.jp>"
RESIDENT_REPLY = "<resident-reply-" + "e5f6a7b8" * 9 + "@mail.example.ne.jp>"
EARLIER = "<earlier-" + "c9d0" * 20 + "@ezweb.example.ne.jp>"


def _raw_mail(sender: str, message_id: str, references: list[str]) -> bytes:
    """A synthetic resident mail whose headers are written raw, as a phone mailer writes
    them (the email package would encode the long identifiers itself)."""
    head = [
        f"From: {sender}",
        "To: sasaean@city.kasaoka.okayama.jp",
        "Subject: =?utf-8?b?" + base64.b64encode("相談".encode()).decode("ascii") + "?=",
        f"Date: {format_datetime(datetime(2026, 11, 20, 9, 0, tzinfo=ZoneInfo('Asia/Tokyo')))}",
        f"Message-ID: {message_id}",
    ]
    if references:
        head += [f"In-Reply-To: {references[-1]}", "References: " + "\r\n ".join(references)]
    head += [
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
    ]
    body = "アルバイト先のことで相談したいです。\r\n"
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body.encode("utf-8")


@pytest.mark.integration
def test_once_delivers_the_thread_headers_byte_exact_and_logs_no_message_id(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import service

    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    config = write_config(tmp_path, dovecot, smtp_server)
    dovecot.append_many(
        [
            # a new case: the batch's bulk path (``ack_bytes``)
            _raw_mail("new.resident@example.jp", RESIDENT_LONG, []),
            # a mail in an earlier thread: the one-by-one path (``render_ack``)
            _raw_mail("reply.resident@example.jp", RESIDENT_REPLY, [EARLIER]),
        ]
    )
    # -v: DEBUG and up, one JSON line per record on stderr (``intake.logs``)
    argv = ["-v", "--json-logs", "once", "--config", str(config), "--accept-existing"]
    assert service.main(argv) == 0
    acks = {m.rcpt_tos[0]: m.data for m in smtp_server.wait_for(2, timeout=20)}
    assert_threaded(acks["new.resident@example.jp"], RESIDENT_LONG, [RESIDENT_LONG])
    assert_threaded(acks["reply.resident@example.jp"], RESIDENT_REPLY, [EARLIER, RESIDENT_REPLY])
    levels: list[str] = []
    for line in capsys.readouterr().err.splitlines():
        try:
            level = str(json.loads(line)["level"])
        except (ValueError, KeyError, TypeError):
            level = "?"  # not a record of ours (a traceback line): held to the same rule
        levels.append(level)
        if level != "DEBUG":
            for mid in (RESIDENT_LONG, RESIDENT_REPLY, EARLIER):
                assert mid[1:-1] not in line, line
    assert "INFO" in levels  # the run did log above DEBUG: the check above read something


@pytest.mark.parametrize("eight_bit", [False, True])
def test_a_relay_without_8bitmime_or_a_long_line_keeps_the_thread_headers_whole(
    eight_bit: bool,
) -> None:
    """``send.wire_content`` re-encodes a body for a relay without 8BITMIME (or with a line
    over 998 bytes); it re-parsed the mail with ``policy.default``, which wrote the long
    In-Reply-To as an encoded word again, so the thread was lost on exactly those relays."""
    from intake.send import wire_content

    data = _ack("render_ack", PHONE, [SHORT])
    if eight_bit:  # a line over 998 bytes forces the re-encoding on any relay
        data = data.replace(b"\n\n", b"\n\n" + "長".encode() * 400 + b"\n", 1)
    wire = wire_content(data, eight_bit=eight_bit)
    assert wire != data  # it was re-encoded
    assert_threaded(wire, PHONE, [SHORT, PHONE])
