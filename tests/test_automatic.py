"""Tests for automatic-mail detection (RFC 3834) and upstream spam verdicts.

Each test builds a small synthetic mail and runs it through ``parse`` first, so the
header decoding the detector relies on is exercised too.
"""

from __future__ import annotations

import pytest

from intake.automatic import automatic_reason, spam_reason
from intake.letter import Letter
from intake.parse import parse

PERSON = (
    "From: 学生 <student@example.jp>\r\n"
    "To: soudan@city.example.jp\r\n"
    "Subject: 相談です\r\n"
    "Message-ID: <p-1@example.jp>\r\n"
    "Date: Thu, 26 Nov 2026 10:00:00 +0900\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
)


def letter_with(extra: str = "", *, replace: tuple[str, str] | None = None, body: str = "本文"):
    head = PERSON
    if replace:
        head = head.replace(*replace)
    return parse((head + extra + "\r\n" + body + "\r\n").encode())


def test_person_mail_is_not_automatic():
    letter = letter_with()
    assert automatic_reason(letter) is None
    assert spam_reason(letter) is None


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Auto-Submitted: auto-replied\r\n", "auto-submitted:auto-replied"),
        ("Auto-Submitted: auto-generated; type=vacation\r\n", "auto-submitted:auto-generated"),
        ("Precedence: bulk\r\n", "precedence:bulk"),
        ("Precedence: junk\r\n", "precedence:junk"),
        ("Precedence: list\r\n", "precedence:list"),
        ("Precedence: auto_reply\r\n", "precedence:auto_reply"),
        ("List-Id: <news.example.jp>\r\n", "list-id"),
        ("List-Unsubscribe: <mailto:leave@example.jp>\r\n", "list-unsubscribe"),
        ("List-Post: <mailto:ml@example.jp>\r\n", "list-post"),
        ("X-ML-Name: neko\r\n", "x-ml-name"),
        ("X-Autoreply: yes\r\n", "x-autoreply"),
        ("X-Autorespond: vacation\r\n", "x-autorespond"),
        ("Return-Path: <>\r\n", "null-sender"),
        ("Delivered-To: mailing list ml@example.jp\r\n", "delivered-to:mailing-list"),
    ],
)
def test_automatic_header_signals(header: str, reason: str):
    assert automatic_reason(letter_with(header)) == reason


def test_auto_submitted_no_is_a_person():
    assert automatic_reason(letter_with("Auto-Submitted: no\r\n")) is None


@pytest.mark.parametrize(
    ("sender", "reason"),
    [
        ("MAILER-DAEMON@mx.example.jp", "daemon-sender:mailer-daemon"),
        ("postmaster@example.jp", "daemon-sender:postmaster"),
        ("noreply@service.example.jp", "noreply-sender"),
        ("no-reply@service.example.jp", "noreply-sender"),
        ("do-not-reply@service.example.jp", "noreply-sender"),
        ("ml-request@lists.example.jp", "list-robot-sender"),
    ],
)
def test_robot_senders(sender: str, reason: str):
    letter = letter_with(replace=("学生 <student@example.jp>", f"<{sender}>"))
    assert automatic_reason(letter) == reason


def test_null_from_is_automatic():
    letter = letter_with(replace=("学生 <student@example.jp>", "<>"))
    assert automatic_reason(letter) == "null-sender"


def test_a_resident_whose_name_contains_reply_is_a_person():
    letter = letter_with(replace=("学生 <student@example.jp>", "<replyman.taro@docomo.ne.jp>"))
    assert automatic_reason(letter) is None


@pytest.mark.parametrize(
    "subject",
    ["Automatic reply: 相談です", "自動返信: 相談です", "Out of Office: 相談", "不在通知：相談"],
)
def test_auto_responder_subject_prefix(subject: str):
    letter = letter_with(replace=("Subject: 相談です", f"Subject: {subject}"))
    assert automatic_reason(letter) == "auto-reply-subject"


def test_a_resident_subject_mentioning_auto_reply_without_prefix_is_a_person():
    letter = letter_with(replace=("Subject: 相談です", "Subject: 自動返信が来ないのですが"))
    assert automatic_reason(letter) is None


def test_delivery_status_report_is_a_bounce():
    raw = (
        b"From: MAILER-DAEMON@mx.example.jp\r\nSubject: failure\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=R\r\n\r\n"
        b"--R\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        b"--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        b"Final-Recipient: rfc822; a@example.jp\r\nAction: failed\r\n--R--\r\n"
    )
    assert automatic_reason(parse(raw)) == "bounce"


def test_read_receipt_is_automatic():
    raw = (
        b"From: student@example.jp\r\nSubject: Read: test\r\n"
        b"Content-Type: multipart/report; report-type=disposition-notification; boundary=R\r\n"
        b"\r\n--R\r\nContent-Type: text/plain\r\n\r\nwas displayed\r\n"
        b"--R\r\nContent-Type: message/disposition-notification\r\n\r\n"
        b"Final-Recipient: rfc822; student@example.jp\r\n"
        b"Disposition: manual-action/MDN-sent-manually; displayed\r\n--R--\r\n"
    )
    assert automatic_reason(parse(raw)) == "mdn"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("X-Spam-Flag: YES\r\n", "x-spam-flag:yes"),
        ("X-Spam-Status: Yes, score=9.1 required=5.0\r\n", "x-spam-status:yes"),
        ("X-Spam: yes\r\n", "x-spam:yes"),
        ("X-ASF-Spam-Status: Yes\r\n", "x-asf-spam-status:yes"),
    ],
)
def test_spam_verdicts(header: str, reason: str):
    assert spam_reason(letter_with(header)) == reason


@pytest.mark.parametrize(
    "header",
    [
        "X-Spam-Status: No, score=1.2 required=5.0\r\n",
        "X-Spam-Flag: NO\r\n",
        "X-Spam-Score: 4.9\r\n",
        "X-Spam-Level: ****\r\n",
    ],
)
def test_unclear_or_negative_spam_headers_do_not_count(header: str):
    assert spam_reason(letter_with(header)) is None


def _letter(subject: str, body: str) -> Letter:
    return Letter(from_addr="x@example.jp", subject=subject, body=body, text=body)


def test_phishing_with_a_link_gets_no_acknowledgement() -> None:
    letter = _letter(
        "【重要】アカウントが一時停止されました",
        "本人確認をお願いします。 https://example.invalid/login",
    )
    assert spam_reason(letter) == "content:phishing"


def test_advertising_newsletter_gets_no_acknowledgement() -> None:
    letter = _letter("冬のセール", "今だけ30%OFF！ https://shop.example.jp\n配信停止はこちら")
    assert spam_reason(letter) == "content:advertising"


def test_a_resident_mentioning_a_locked_account_without_a_link_is_acknowledged() -> None:
    letter = _letter("相談", "LINEのアカウントがロックされて友達と連絡がとれません。さみしいです。")
    assert spam_reason(letter) is None


def test_a_resident_sharing_a_link_is_acknowledged() -> None:
    letter = _letter(
        "相談", "このページを見て連絡しました https://www.city.kasaoka.okayama.jp/soudan/"
    )
    assert spam_reason(letter) is None


@pytest.mark.parametrize("value", ["All", "DR, RN, NRN, OOF, AutoReply"])
def test_school_outlook_mail_asking_not_to_be_auto_answered_is_a_person(value: str) -> None:
    """X-Auto-Response-Suppress asks the recipient not to auto-reply; Exchange sets it on
    people's mail (to or through a group), so it marked a pupil's mail as automatic and
    the pupil got no acknowledgement (review rv9a F7)."""
    letter = letter_with(f"X-Auto-Response-Suppress: {value}\r\n")
    assert automatic_reason(letter) is None


def test_outlook_out_of_office_reply_is_still_automatic() -> None:
    letter = letter_with(
        "X-Auto-Response-Suppress: All\r\nAuto-Submitted: auto-generated\r\n",
        replace=("Subject: 相談です", "Subject: 自動応答: 相談です"),
    )
    assert automatic_reason(letter) == "auto-submitted:auto-generated"


@pytest.mark.parametrize("sender", ["neko-owner@docomo.ne.jp", "owner-of-cats@example.jp"])
def test_a_resident_address_with_owner_in_it_is_a_person(sender: str) -> None:
    """Carrier addresses are chosen freely: "-owner" made a resident a list robot (rv9a)."""
    letter = letter_with(replace=("学生 <student@example.jp>", f"<{sender}>"))
    assert automatic_reason(letter) is None


def test_every_reason_given_is_known_to_the_digest() -> None:
    """The digest reads reasons back from the database to leave bounces and auto-replies
    out of a resident's 続報 (``AUTOMATIC_REASONS``); a reason added here without it
    would be listed as the resident's words."""
    import re
    from pathlib import Path

    from intake import automatic

    source = Path(automatic.__file__).read_text(encoding="utf-8")
    body = source[source.index("def automatic_reason") : source.index("def spam_reason")]
    given = set(re.findall(r'return "([^"{]+)"', body))
    given |= {p + ":" for p in re.findall(r'return f"([a-z-]+):\{', body)}
    assert given, "no reasons found: the test no longer reads automatic_reason"
    for reason in given:
        assert automatic.is_automatic_reason(reason) or automatic.is_automatic_reason(
            reason + "x"
        ), reason
    for name in (*automatic._LIST_HEADERS, *automatic._AUTORESPONDER_HEADERS):
        assert automatic.is_automatic_reason(name)
