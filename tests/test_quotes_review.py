"""Review rv9a F1-F4 and F9 (``intake.quotes``): words the resident wrote must reach triage.

Triage and the partner digest read only ``letter.text``; whatever ``split_quoted`` puts in
``quoted`` is never triaged nor shown. Each test names a shape of mail whose crisis words
were taken for a quote, a signature or a reply header, and asserts they are read (and that
the real shapes mailers write are still split off, so our own acknowledgement's help-line
wording is not read as the resident's). Unit tests go through ``parse`` and
``pipeline.decide`` with the shipped rules; the end-to-end tests run the real pipeline
against Dovecot and aiosmtpd.
"""

from __future__ import annotations

import base64
from datetime import datetime
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from intake import samples
from intake.letter import Letter
from intake.localservers import LocalDovecot, LocalSMTP
from intake.parse import parse
from intake.pipeline import decide
from intake.quotes import OWN_TEXT_MARKERS, split_quoted
from intake.rules import RuleSet

OWN_ADDR = "sasaean@city.kasaoka.okayama.jp"
ACK_FIRST = OWN_TEXT_MARKERS[0]
JST = ZoneInfo("Asia/Tokyo")
WEDNESDAY_10 = datetime(2027, 1, 6, 10, 0, tzinfo=JST)
CRISIS = "今までありがとう。もう死ぬことにした。薬はもう用意してある。"


def mail(
    body: str | bytes, *, subject: str = "相談", ctype: str = "text/plain; charset=utf-8"
) -> bytes:
    """A synthetic resident mail with ``body`` (str: UTF-8, LF turned into CRLF)."""
    subj = "=?UTF-8?B?" + base64.b64encode(subject.encode()).decode() + "?="
    head = (
        "From: Sora <sora.test@docomo.ne.jp>\r\n"
        f"To: {OWN_ADDR}\r\nSubject: {subj}\r\n"
        "Date: Thu, 26 Nov 2026 22:00:00 +0900\r\nMessage-ID: <qr-1@docomo.ne.jp>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode()
    if isinstance(body, str):
        body = body.replace("\n", "\r\n").encode("utf-8")
    return head + body


def urgent(letter: Letter, rules: RuleSet) -> bool:
    triage, _block = decide(letter, rules, OWN_ADDR)
    return triage.urgent


# --- F1: the resident's answer below or between quoted lines of our acknowledgement ------


def test_an_answer_below_our_quoted_acknowledgement_is_read_and_alerts(rules: RuleSet) -> None:
    body = (
        f"2026年11月26日(木) 10:00 笠岡市 ささえ愛相談窓口 <{OWN_ADDR}>:\n\n"
        f"> {ACK_FIRST}\n> \n> 受付番号: C000001\n\n"
        "返信ありがとうございます。でも今夜、死のうと思います。\n"
    )
    letter = parse(mail(body, subject="Re: 相談"))
    assert letter.text == "返信ありがとうございます。でも今夜、死のうと思います。"
    assert ACK_FIRST in letter.quoted
    assert urgent(letter, rules)


def test_an_answer_between_quoted_acknowledgement_lines_is_read() -> None:
    body = f"> {ACK_FIRST}\n> 受付番号: C000001\nもう限界です。消えたい。\n> いま命や体に危険が\n"
    new, quoted = split_quoted(body)
    assert new == "もう限界です。消えたい。"
    assert quoted == f"> {ACK_FIRST}\n> 受付番号: C000001\n> いま命や体に危険が"


def test_our_acknowledgement_quoted_without_any_mark_still_cuts_the_rest() -> None:
    text = f"まだつらいです\n\n{ACK_FIRST}\nいま命や体に危険があるときは、すぐに電話してください。"
    assert split_quoted(text) == (
        "まだつらいです",
        f"{ACK_FIRST}\nいま命や体に危険があるときは、すぐに電話してください。",
    )


@pytest.mark.parametrize(
    "attribution",
    [
        f"2026年11月26日(木) 10:00 笠岡市 ささえ愛相談窓口 <\n{OWN_ADDR}>:",  # Gmail, wrapped
        f"On Thu, Nov 26, 2026 at 10:00 AM 笠岡市\n<{OWN_ADDR}> wrote:",
    ],
)
def test_an_answer_below_a_wrapped_attribution_and_our_quoted_acknowledgement_is_read(
    attribution: str,
) -> None:
    body = f"{attribution}\n\n> {ACK_FIRST}\n> 受付番号: C000001\n\nもう限界です。消えたい。"
    new, quoted = split_quoted(body)
    assert new == "もう限界です。消えたい。"
    assert quoted == f"{attribution}\n> {ACK_FIRST}\n> 受付番号: C000001"


@pytest.mark.integration
def test_a_reply_below_the_quoted_acknowledgement_alerts_on_call_end_to_end(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The resident's reply quotes the real acknowledgement with "> " and types the crisis
    below it, as many phone users do (引用返信): on-call is alerted."""
    from intake.config import load_settings
    from intake.fetch import Mailbox
    from intake.pipeline import Service, process_new_mail
    from tests.helpers import ONCALL, settled, write_config

    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    cfg = write_config(tmp_path, dovecot, smtp_server)
    resident = "sora.test@docomo.ne.jp"
    dovecot.append(samples.consultation(resident, "相談", "部活のことで相談があります。"))
    svc = Service.from_settings(load_settings(cfg))
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, WEDNESDAY_10, accept_existing=True)
    svc.deliver(WEDNESDAY_10)
    (ack,) = smtp_server.wait_for(1, timeout=20)
    ack_msg = message_from_bytes(ack.data, policy=policy.default)
    part = ack_msg.get_body(preferencelist=("plain",))
    assert part is not None
    ack_text = str(part.get_content())  # type: ignore[attr-defined]
    assert ack_text.startswith(ACK_FIRST)
    quoted = "\n".join("> " + line for line in ack_text.splitlines())
    reply_body = (
        f"2027年1月6日(水) 10:00 笠岡市 ささえ愛相談窓口 <{OWN_ADDR}>:\n\n"
        f"{quoted}\n\n返信ありがとうございます。でも今夜、死のうと思います。\n"
    )
    dovecot.append(
        samples.consultation(
            resident,
            "Re: " + str(ack_msg["Subject"]),
            reply_body,
            in_reply_to=str(ack_msg["Message-ID"]),
        )
    )
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, WEDNESDAY_10, accept_existing=True)
    svc.deliver(WEDNESDAY_10)
    mails = settled(smtp_server, 2.0)
    assert [m for m in mails if ONCALL in m.rcpt_tos], [m.rcpt_tos for m in mails]


# --- F2: an ordinary sentence taken for a reply attribution ------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "昨日の夜23:00に遺書を書きました。\nもう終わりにします。",
        "毎晩2:00まで眠れず、日記を書いています。\n誰にも言えません。消えたい。",
        "先生(sensei@school.example.jp)に手紙を書きました。\nでもやっぱり死にたいです。",
        "相談です。\n昨日23:00に先生に手紙を書きました:\nもう死にたいって。",
    ],
)
def test_a_sentence_with_a_time_or_address_and_kakimashita_is_not_a_reply_header(
    body: str, rules: RuleSet
) -> None:
    letter = parse(mail(body))
    assert letter.text == body, letter.quoted
    assert urgent(letter, rules)


@pytest.mark.parametrize(
    "attribution",
    [
        "2026/11/26 10:00、笠岡市 <sasaean@city.kasaoka.okayama.jp> が書きました:",  # iPhone
        "2026/11/26 10:00 に 笠岡市 さんは書きました:",  # Thunderbird, Japanese
        "2026年11月26日 10:00 笠岡市 <sasaean@city.kasaoka.okayama.jp>:",  # Gmail
    ],
)
def test_the_attributions_mailers_write_still_start_the_quote(attribution: str) -> None:
    new, quoted = split_quoted(f"了解です\n\n{attribution}\n前のメールの本文")
    assert new == "了解です"
    assert quoted == f"{attribution}\n前のメールの本文"


# --- F3: words after a signature separator or a divider ----------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "相談です。\n-- \nそら\n追伸 本当はもう死にたいです。",  # a P.S. after the signature
        "相談です。\n-- \nそら\n死にたい",  # a short line with no full stop
        "学校のこと\n--\nいじめられてて死にたい",  # "--" typed as a divider
        "相談です\n_____\n本当は死にたい",  # an underscore divider
    ],
)
def test_words_after_a_signature_separator_or_a_divider_reach_triage(
    body: str, rules: RuleSet
) -> None:
    letter = parse(mail(body))
    assert "死にたい" in letter.text, letter.quoted
    assert urgent(letter, rules)


def test_a_short_signature_after_the_separator_is_still_cut() -> None:
    new, quoted = split_quoted("助けてください\n-- \n山田 太郎\n090-0000-0000\niPhoneから送信")
    assert new == "助けてください"
    assert quoted == "-- \n山田 太郎\n090-0000-0000\niPhoneから送信"


def test_underscores_over_an_outlook_header_block_still_start_the_quote() -> None:
    text = "続きです\n________________\n差出人: 笠岡市\n送信日時: 2026年11月26日 10:00\n本文"
    new, quoted = split_quoted(text)
    assert new == "続きです"
    assert quoted.startswith("________________\n差出人: 笠岡市")


# --- F4: a friend's crisis forwarded inline ---------------------------------------------

GMAIL_FORWARD = (
    "友達からこんなメールが来ました。どうしたらいいですか。\n\n"
    "---------- Forwarded message ---------\n"
    "From: ゆき <yuki@ezweb.ne.jp>\nDate: 2026年11月26日(木) 1:12\nSubject: ごめんね\n"
    f"To: <sora@gmail.com>\n\n{CRISIS}\n"
)
IPHONE_FORWARD = (
    "友達からこんなメールが来ました。どうしたらいいですか。\n\niPhoneから送信\n\n"
    "Begin forwarded message:\n\n"
    "> From: ゆき <yuki@ezweb.ne.jp>\n> Date: 2026年11月26日 1:12:00 JST\n"
    f"> To: sora@icloud.com\n> Subject: ごめんね\n> \n> {CRISIS}\n"
)
IPHONE_JA_FORWARD = IPHONE_FORWARD.replace("Begin forwarded message:", "転送されたメッセージ:")


@pytest.mark.parametrize(
    "body", [GMAIL_FORWARD, IPHONE_FORWARD, IPHONE_JA_FORWARD], ids=["gmail", "iphone", "iphone-ja"]
)
def test_a_friends_crisis_forwarded_inline_is_urgent_as_an_attached_one_is(
    body: str, rules: RuleSet
) -> None:
    letter = parse(mail(body, subject="Fwd: ごめんね"))
    assert letter.text.startswith("友達からこんなメールが来ました。")
    assert CRISIS not in letter.text
    assert CRISIS in letter.forwarded.splitlines()
    triage, _block = decide(letter, rules, OWN_ADDR)
    assert triage.urgent
    assert all(m.rule.startswith("forwarded:") for m in triage.urgent_reasons)


def test_an_inline_forward_is_added_to_an_attached_one() -> None:
    inner = (
        "From: mio@ezweb.ne.jp\r\nSubject: x\r\nContent-Type: text/plain; charset=utf-8"
        "\r\n\r\n学校に行けない。\r\n"
    )
    outer = GMAIL_FORWARD.replace("\n", "\r\n")
    body = (
        f"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{outer}"
        f"--B\r\nContent-Type: message/rfc822\r\n\r\n{inner}--B--\r\n"
    ).encode()
    letter = parse(mail(body, ctype='multipart/mixed; boundary="B"'))
    assert letter.forwarded.startswith("学校に行けない。")
    assert CRISIS in letter.forwarded


def test_our_own_text_in_an_inline_forward_is_left_out_of_the_forwarded_part() -> None:
    body = (
        "これが来ました\n\nBegin forwarded message:\n\n> From: 笠岡市 <sasaean@x.jp>\n> \n"
        f"> {ACK_FIRST}\n> いま命や体に危険があるときは、すぐに電話してください。\n"
    )
    from intake.quotes import split_body

    parts = split_body(body)
    assert parts.new == "これが来ました"
    assert parts.forwarded == "From: 笠岡市 <sasaean@x.jp>"


OUTLOOK_BODY = (
    "友達からです。見てください。\n\n________________________________\n"
    "差出人: ゆき <yuki@ezweb.ne.jp>\n送信日時: 2026年11月26日 1:12\n宛先: sora@outlook.jp\n"
    f"件名: ごめんね\n\n{CRISIS}\n"
)


def test_an_outlook_forward_under_its_reply_header_is_checked_for_urgency(
    rules: RuleSet,
) -> None:
    """Outlook forwards ("FW:") under the same header block as it replies: the subject
    tells them apart, and the forwarded part is checked as an attached one is."""
    letter = parse(mail(OUTLOOK_BODY, subject="FW: ごめんね"))
    assert letter.text == "友達からです。見てください。"
    assert CRISIS in letter.forwarded.splitlines()
    assert urgent(letter, rules)


def test_the_part_under_a_reply_header_is_not_forwarded_when_the_mail_is_a_reply() -> None:
    letter = parse(mail(OUTLOOK_BODY, subject="RE: ごめんね"))
    assert letter.text == "友達からです。見てください。"
    assert letter.forwarded == ""


def test_our_digest_forwarded_inline_is_left_out_of_the_forwarded_part() -> None:
    """A partner forwarding our digest (which lists residents' crisis words) to the
    mailbox must not raise an alert of its own from those words."""
    body = (
        "転送します\n\n---------- Forwarded message ---------\nFrom: 笠岡市 <x@y.jp>\n\n"
        "NPOあかり ご担当者様\n\n前回のお知らせ以降に届いた相談 1 件をお知らせします。\n"
        "受付番号: C000001\nもう死にたい\n"
    )
    letter = parse(mail(body, subject="Fwd: 相談ダイジェスト"))
    assert letter.forwarded == "From: 笠岡市 <x@y.jp>\n\nNPOあかり ご担当者様"


# --- F9: an emoticon is not a quote mark ------------------------------------------------


@pytest.mark.parametrize(
    "line", ["＞＜ もうむり しにたい", ">_< もうむり しにたい", "＞ω＜もうむり しにたい"]
)
def test_a_line_opening_with_an_emoticon_is_the_residents(line: str) -> None:
    new, quoted = split_quoted(f"{line}\nたすけて")
    assert new == f"{line}\nたすけて"
    assert quoted == ""


# --- safety net: a split that leaves nothing is not trusted -----------------------------


def test_a_mail_split_entirely_away_without_our_text_is_read_whole(rules: RuleSet) -> None:
    """An attribution-shaped first line over unmarked text: every line would be cut, and
    none of it is ours, so the whole body is triaged and shown (recorded as a problem)."""
    body = (
        "2026年11月26日(木) 1:12 ゆき <yuki@ezweb.ne.jp>:\n今までありがとう。もう死ぬことにした。"
    )
    letter = parse(mail(body))
    assert letter.text == body
    assert "quote-split-kept-whole-body" in letter.problems
    assert urgent(letter, rules)


def test_a_reply_holding_only_our_quoted_acknowledgement_stays_empty() -> None:
    body = f"> {ACK_FIRST}\n> \n> いま命や体に危険があるときは、すぐに電話してください。\n"
    letter = parse(mail(body))
    assert letter.text == ""
    assert "quote-split-kept-whole-body" not in letter.problems


@pytest.mark.integration
def test_a_time_and_kakimashita_mail_alerts_and_its_words_reach_the_digest_end_to_end(
    tmp_path: Path,
    dovecot: LocalDovecot,
    smtp_server: LocalSMTP,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first mail whose first line has a time and ends in 書きました。 was taken whole for a
    quote: no alert, and the digest showed （本文なし）."""
    from intake.config import load_settings
    from intake.digest import queue_digests
    from intake.fetch import Mailbox
    from intake.pipeline import Service, process_new_mail
    from tests.helpers import ONCALL, settled, write_config

    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    cfg = write_config(tmp_path, dovecot, smtp_server)
    resident = "sora.test@docomo.ne.jp"
    words = "昨日の夜23:00に遺書を書きました。\nもう終わりにします。今までありがとうございました。"
    dovecot.append(samples.consultation(resident, "ごめんなさい", words, charset="iso-2022-jp"))
    svc = Service.from_settings(load_settings(cfg))
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, WEDNESDAY_10, accept_existing=True)
    queue_digests(svc, WEDNESDAY_10)
    svc.deliver(WEDNESDAY_10)
    mails = settled(smtp_server, 2.0)
    digests: list[str] = []
    for m in mails:
        if ONCALL in m.rcpt_tos or resident in m.rcpt_tos:
            continue
        part = message_from_bytes(m.data, policy=policy.default).get_body(("plain",))
        digests.append(str(part.get_content()) if part is not None else "")  # type: ignore[attr-defined]
    assert [m for m in mails if ONCALL in m.rcpt_tos], [m.rcpt_tos for m in mails]
    assert any("遺書を書きました" in t for t in digests), digests
    assert not any("（本文なし）" in t for t in digests)
