"""Synthetic sample consultations, encoded the way real mailers send them.

Used by ``service.py demo`` and by the integration tests. Every name and address is
invented (example.jp and carrier domains with made-up local parts); no real person.
"""

from __future__ import annotations

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from zoneinfo import ZoneInfo

TO = "sasaean@city.kasaoka.okayama.jp"
WHEN = datetime(2026, 11, 26, 10, 0, tzinfo=ZoneInfo("Asia/Tokyo"))


def consultation(
    sender: str,
    subject: str,
    body: str,
    *,
    charset: str = "utf-8",
    name: str = "",
    headers: dict[str, str] | None = None,
    in_reply_to: str | None = None,
    message_id: str | None = None,
) -> bytes:
    """One text/plain mail in ``charset`` (iso-2022-jp, shift_jis, utf-8, euc-jp)."""
    msg = EmailMessage()
    msg["From"] = Address(display_name=name, addr_spec=sender) if name else sender
    msg["To"] = TO
    msg["Subject"] = subject
    msg["Date"] = format_datetime(WHEN)
    msg["Message-ID"] = message_id or make_msgid(domain=sender.rpartition("@")[2] or "example.jp")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for key, value in (headers or {}).items():
        msg[key] = value
    cte = "7bit" if charset == "iso-2022-jp" else ("8bit" if charset != "utf-8" else "base64")
    msg.set_content(body, charset=charset, cte=cte)
    return msg.as_bytes()


def carrier_mail(sender: str, subject: str, body: str) -> bytes:
    """A carrier-style ISO-2022-JP mail, hand-built so non-RFC local parts survive."""
    import base64

    enc_subject = base64.b64encode(subject.encode("iso-2022-jp")).decode("ascii")
    head = (
        f"From: {sender}\r\nTo: {TO}\r\nSubject: =?ISO-2022-JP?B?{enc_subject}?=\r\n"
        f"Date: {format_datetime(WHEN)}\r\nMessage-ID: {make_msgid(domain='docomo.ne.jp')}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=ISO-2022-JP\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\n"
    )
    return head.encode("ascii") + body.encode("iso-2022-jp").replace(b"\n", b"\r\n") + b"\r\n"


def bounce(to_sender: str, original_message_id: str = "<lost@example.jp>") -> bytes:
    """A multipart/report delivery-status notification (RFC 3464) from MAILER-DAEMON."""
    boundary = "bounce-boundary-1"
    return (
        "From: MAILER-DAEMON@mx.example.jp (Mail Delivery System)\r\n"
        f"To: {TO}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {format_datetime(WHEN)}\r\nMessage-ID: {make_msgid(domain='mx.example.jp')}\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f' boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"This is the mail system. Your message could not be delivered to {to_sender}.\r\n\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.jp\r\n\r\n"
        f"Final-Recipient: rfc822; {to_sender}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {original_message_id}\r\nTo: {to_sender}\r\n\r\n"
        f"--{boundary}--\r\n"
    ).encode("ascii")


def demo_mails() -> list[bytes]:
    """A small, varied morning in the mailbox: what ``make demo`` puts in Dovecot."""
    return [
        consultation(
            "hanako.demo@example.jp",
            "相談です",
            "学校でいじめられています。クラスのみんなに無視されて、つらいです。\n"
            "誰にも言えなくて、メールしました。",
            charset="iso-2022-jp",
            name="山田花子",
        ),
        consultation(
            "taro.demo@example.jp",
            "お金のこと",
            "バイトを切られて家賃が払えんようになりました。\n来月からどうしたらええんか分からんです。",
            charset="shift_jis",
        ),
        consultation(
            "sora.demo@example.jp",
            "話を聞いてほしい",
            "最近ずっと眠れなくて、もう消えたいと思ってしまいます。\n電話は 090-1234-5678 です。",
        ),
        consultation(
            "kaigo.demo@example.jp",
            "祖母の介護",
            "高校に通いながら祖母の介護をしています。疲れて勉強が手につきません。",
            charset="euc-jp",
        ),
        consultation(
            "vacation.demo@example.jp",
            "自動応答: 不在のお知らせ",
            "ただいま不在にしております。12月1日以降に返信いたします。",
            headers={"Auto-Submitted": "auto-replied"},
        ),
        bounce("nobody.demo@example.jp"),
    ]
