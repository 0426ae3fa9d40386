"""decide(): the triage + acknowledgement decision shared by the pipeline and classify."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from intake.parse import parse
from intake.pipeline import decide
from intake.rules import RuleSet

OWN = "sasaean@city.kasaoka.okayama.jp"


def forwarding(own_words: str, friends_words: str, **headers: str) -> bytes:
    friend = EmailMessage()
    friend["From"] = "friend@example.jp"
    friend["Subject"] = "ごめんね"
    friend.set_content(friends_words)
    outer = EmailMessage()
    outer["From"] = "worried@example.jp"
    outer["To"] = OWN
    outer["Subject"] = "Fwd: 友達から"
    for key, value in headers.items():
        outer[key.replace("_", "-")] = value
    outer.set_content(own_words)
    outer.add_attachment(friend)
    return outer.as_bytes()


def test_crisis_in_a_forwarded_friends_mail_is_urgent(rules: RuleSet) -> None:
    raw = forwarding(
        "友達からこんなメールが来ました。どうしたらいいですか。", "もう死にたい。今までありがとう。"
    )
    triage, block = decide(parse(raw), rules, OWN)
    assert block is None
    assert triage.urgent
    assert all(m.rule.startswith("forwarded:") for m in triage.urgent_reasons)


def test_forwarded_text_without_crisis_is_not_urgent(rules: RuleSet) -> None:
    raw = forwarding("友達のメールです。", "明日の部活、休むね。")
    triage, _ = decide(parse(raw), rules, OWN)
    assert not triage.urgent


def test_our_own_returning_mail_gets_no_acknowledgement(rules: RuleSet) -> None:
    msg = EmailMessage()
    msg["From"] = OWN
    msg["To"] = OWN
    msg["Subject"] = "【笠岡市】メールを受け付けました"
    msg["X-Loop"] = OWN
    msg.set_content("メールを受け取りました。")
    _triage, block = decide(parse(msg.as_bytes()), rules, OWN)
    assert block is not None


def test_undecodable_mail_needs_a_human(rules: RuleSet) -> None:
    raw = (
        b"From: a@example.jp\r\nSubject: x\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + bytes(range(0x80, 0x100)) * 3
    )
    triage, block = decide(parse(raw), rules, OWN)
    assert triage.needs_human and block is None


def test_automatic_mail_carrying_a_forwarded_crisis_is_still_urgent(rules: RuleSet) -> None:
    """An Exchange rule forwarding a resident's mail as an attachment (a school's footer
    outside it) is automatic: no acknowledgement, but the crisis it carries is still
    checked (review rv9a F8; only a bounce's attachment is not)."""
    raw = forwarding(
        "このメールは自動転送されました。",
        "今までありがとう。もう死ぬことにした。薬はもう用意してある。",
        **{"X-MS-Exchange-Inbox-Rules-Loop": "teacher@school.example.jp"},
    )
    triage, block = decide(parse(raw), rules, OWN)
    assert block == "exchange-generated"
    assert triage.urgent
    assert all(m.rule.startswith("forwarded:") for m in triage.urgent_reasons)


@pytest.mark.parametrize("by_rule", [True, False], ids=["mailbox-rule", "by-hand"])
def test_our_own_alert_forwarded_back_raises_no_new_alert(rules: RuleSet, by_rule: bool) -> None:
    """The on-call alert lists the resident's crisis words as its reasons; forwarded back
    as an attachment (by a mailbox rule: a loop; by hand, to ask about it) it raised
    another alert."""
    alert = (
        "緊急の可能性がある相談を受け付けました。\n"
        "理由: 「死にたい」「飛び降りる」\n受付番号: C000001\n"
    )
    headers = {"X-MS-Exchange-Inbox-Rules-Loop": "oncall@example.jp"} if by_rule else {}
    triage, _block = decide(parse(forwarding("これは何ですか", alert, **headers)), rules, OWN)
    assert not triage.urgent


def test_a_partner_digest_forwarded_back_raises_no_alert(rules: RuleSet) -> None:
    """The digest quotes residents' words (消えたい); forwarded back as an attachment (a
    partner asking about a case) it is our own text, not a new crisis."""
    digest = (
        "笠岡市ささえ愛ほっとライン ご担当者様\n\n"
        "前回のお知らせ以降に届いた相談 1 件をお知らせします。\n"
        "受付番号: C000003\n緊急: はい — 「消えたい」\n"
        "最近ずっと眠れなくて、もう消えたいと思ってしまいます。\n"
    )
    triage, _block = decide(parse(forwarding("この件はどうなりましたか", digest)), rules, OWN)
    assert not triage.urgent


def test_a_hard_wrapped_crisis_is_read_whole(rules: RuleSet) -> None:
    """A mailer's fixed-width wrap cut 死に|たい; the words reach triage whole again."""
    from tests.test_reflow import PARAGRAPH, cutting_width, wrap

    body = wrap(PARAGRAPH, cutting_width())
    assert "死にたい" not in body
    msg = EmailMessage()
    msg["From"] = "resident@example.jp"
    msg["Subject"] = "相談"
    msg.set_content(body)
    letter = parse(msg.as_bytes())
    assert "死にたい" in letter.text
    triage, _ = decide(letter, rules, OWN)
    assert triage.urgent


def test_bytes_that_read_as_two_different_texts_go_to_a_person(rules: RuleSet) -> None:
    """Unlabelled ｼﾆﾀｲ in Shift_JIS reads as EUC-JP kanji too; the parser cannot tell,
    so the mail is read by a person today whatever triage found (rv9a F9)."""
    raw = (
        b"From: resident@example.jp\r\nSubject: soudan\r\n\r\n"
        + "ｼﾆﾀｲ ﾀｽｹﾃ".encode("cp932")
        + b"\r\n"
    )
    letter = parse(raw)
    assert any("charset-ambiguous" in p for p in letter.problems), letter.problems
    triage, _ = decide(letter, rules, OWN)
    assert triage.needs_human


def test_a_pupils_answer_below_our_quoted_ack_forwarded_by_a_teacher_is_checked(
    rules: RuleSet,
) -> None:
    """Cutting a forward at its first line of our text lost the pupil's words written
    below our quoted acknowledgement (review rv9c R2); only our quoted lines go."""
    from intake.quotes import OWN_TEXT_MARKERS

    pupil = "今までありがとう。もう死ぬことにした。薬はもう用意してある。"
    answer = f"> {OWN_TEXT_MARKERS[0]}\n> 受付番号: C000001\n\n{pupil}"
    first = forwarding("生徒から届いたメールを転送します。", answer)
    letter = parse(first)
    assert pupil in letter.forwarded and OWN_TEXT_MARKERS[0] not in letter.forwarded
    triage, _ = decide(letter, rules, OWN)
    assert triage.urgent


def test_an_x_loop_naming_us_stops_only_automatic_mail(rules: RuleSet) -> None:
    """An alias forwarding the public address adds X-Loop to residents' mail: a person's
    mail is answered; an auto-reply with it is our mail come back (review rv9d F3)."""
    msg = EmailMessage()
    msg["From"] = "resident@example.jp"
    msg["Subject"] = "相談"
    msg["X-Loop"] = OWN
    msg.set_content("子どもが学校に行けなくなりました。")
    _triage, block = decide(parse(msg.as_bytes()), rules, OWN)
    assert block is None
    msg["Auto-Submitted"] = "auto-replied"
    _triage, block = decide(parse(msg.as_bytes()), rules, OWN)
    assert block == "own-mail-loop"
    del msg["X-Loop"]
    msg["X-Loop"] = "not-" + OWN  # a longer address that contains ours is not ours
    _triage, block = decide(parse(msg.as_bytes()), rules, OWN)
    assert block == "auto-submitted:auto-replied"
