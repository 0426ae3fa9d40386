"""Crisis words outside the resident's new text proper: quoted, or one piece a line.

Review rv9c R7 and R10 (left open in the ninth session): a friend's mail a resident passes
on by *replying* to it (an attribution over ">" lines), lines a resident marks with ＞ for
emphasis, and a phrase written one piece a line (もう / 死に / たい) raised no alert. The
quoted words are read for a crisis in a resident's mail only, never our own mail quoted
back, never a staff member's quote of a resident, never an organisation's advice; and a
resident quoting their own earlier mail of the thread is not alerted twice. All mail
synthetic; the integration tests use real Dovecot and SMTP servers.
"""

from __future__ import annotations

from datetime import datetime
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from intake import samples
from intake.config import load_settings
from intake.fetch import Mailbox
from intake.localservers import LocalDovecot, LocalSMTP
from intake.parse import parse
from intake.pipeline import (
    QUOTED_BEFORE_EVENT,
    QUOTED_LABEL,
    Service,
    decide,
    process_new_mail,
    short_lines_joined,
)
from intake.quotes import split_body
from intake.rules import RuleSet
from intake.store import Event, session_scope
from tests.helpers import ONCALL, settled, write_config
from tests.test_ack_text import ack_text
from tests.test_staff_quotes import rewrap

OWN = "sasaean@city.kasaoka.okayama.jp"
RESIDENT = "hikari.test@example.jp"
FRIEND_WORDS = "もう死にたい。今夜、家にある薬を全部飲むつもり。\n今までありがとう。"


def _decide(rules: RuleSet, body: str, *, subject: str = "Re: 相談", staff: str = "") -> object:
    letter = parse(samples.consultation(RESIDENT, subject, body))
    triage, _block = decide(letter, rules, OWN, frozenset({RESIDENT} if staff else ()))
    return triage


def _quoted_reasons(triage: object) -> list[str]:
    return [
        m.rule
        for m in triage.urgent_reasons  # type: ignore[attr-defined]
        if m.rule.startswith(QUOTED_LABEL + ":")
    ]


def _passed_on(words: str) -> str:
    quoted = "\n".join("> " + line for line in words.splitlines())
    return (
        "友達からこんなメールが来ました。どうしたらいいかわかりません。\n\n"
        "2026年11月20日(金) 23:15 友達 <friend.test@example.jp>:\n" + quoted + "\n"
    )


# -- decide: what is read --------------------------------------------------------------


def test_a_friends_mail_passed_on_by_replying_to_it_is_urgent(rules: RuleSet) -> None:
    body = _passed_on(FRIEND_WORDS)
    assert split_body(body).new.startswith("友達から")  # the friend's lines are quoted
    triage = _decide(rules, body)
    assert triage.urgent  # type: ignore[attr-defined]
    assert _quoted_reasons(triage)  # and the reasons say where the words were


def test_lines_a_resident_marks_with_zenkaku_gt_for_emphasis_are_read(rules: RuleSet) -> None:
    body = "聞いてほしいことがあります。\n＞もう限界\n＞死にたい\nどうすればいいですか。"
    triage = _decide(rules, body, subject="相談")
    assert _quoted_reasons(triage)


def test_a_friends_mail_below_an_original_message_header_is_read(rules: RuleSet) -> None:
    body = (
        "友達から来たメールです。心配です。\n\n-----Original Message-----\n"
        "From: friend.test@example.jp\nSent: Friday, November 20, 2026 11:15 PM\n"
        "Subject: ごめんね\n\n" + FRIEND_WORDS
    )
    assert _quoted_reasons(_decide(rules, body))


def test_a_friends_quoted_mail_without_crisis_words_adds_nothing(rules: RuleSet) -> None:
    triage = _decide(rules, _passed_on("明日の部活、何時からだっけ？\n体育館集合だよね。"))
    assert not triage.urgent  # type: ignore[attr-defined]


@pytest.mark.parametrize("language", ["ja", "en"])
def test_a_reply_quoting_our_acknowledgement_reads_no_crisis_in_it(
    rules: RuleSet, language: str
) -> None:
    """Our acknowledgement names help lines and emergencies; quoted back whole, cut short
    above its first line, or re-wrapped by a phone (42 columns and up), it is not read."""
    lines = ack_text("2026-11-25 22:00", language=language).splitlines()
    found: list[tuple[int, int, list[str]]] = []
    for width in (0, 42, 50, 60, 72, 76):
        for cut in range(0, len(lines), 3):
            part = "\n".join(lines[cut:])
            if not part.strip():
                continue
            if width:
                quote = rewrap(part, width)
            else:
                quote = "\n".join("> " + line for line in part.splitlines())
            for body in (
                "お返事ありがとうございます。待っています。\n\n" + quote,
                quote + "\n\nわかりました。よろしくお願いします。",
            ):
                reasons = _quoted_reasons(_decide(rules, body))
                if reasons:
                    found.append((width, cut, reasons))
    assert found == []


def test_our_acknowledgement_quoted_from_below_its_first_line_is_left_out() -> None:
    lines = ack_text("2026-11-25 10:00").splitlines()
    start = next(i for i, line in enumerate(lines) if "いま命や体に危険" in line)
    quote = "\n".join("> " + line for line in lines[start - 2 :])
    parts = split_body("はい、わかりました。\n\n" + quote)
    assert parts.quoted_words == ""


def test_lines_marked_like_our_quoted_acknowledgement_are_read(rules: RuleSet) -> None:
    """A mailer quoted our acknowledgement with 》; the resident's own lines below, marked
    alike, are quoted too (rv9d F7), but read for a crisis; the acknowledgement is not."""
    ack = "\n".join("》" + line for line in ack_text("2026-11-25 10:00").splitlines())
    body = (
        "ありがとうございます。\n\n"
        + ack
        + "\n\n今の気持ちです。\n》もう死にたい\n》今夜終わりにする\n"
    )
    parts = split_body(body)
    assert parts.quoted_words == "》もう死にたい\n》今夜終わりにする"
    assert _quoted_reasons(_decide(rules, body))


def test_a_schools_advice_quoted_back_is_no_crisis(rules: RuleSet) -> None:
    advice = (
        "保護者の皆さま、生徒の皆さんへ\n"
        "死にたいと思うほどつらいときは、いのちの電話にご相談ください。\n"
        "自殺を考えている方へ：よりそいホットライン（24時間）\n"
        "リストカットなど自分を傷つけてしまう方は、相談窓口に電話してください。"
    )
    body = (
        "学校からこのメールが来たので、こちらにも相談してみます。部活のことで悩んでいます。\n\n"
        "2026年11月20日(金) 9:00 笠岡第一中学校 <school.test@example.jp>:\n"
        + "\n".join("> " + line for line in advice.splitlines())
    )
    assert not _quoted_reasons(_decide(rules, body))


def test_a_staff_members_quote_of_a_residents_crisis_is_not_read(rules: RuleSet) -> None:
    """Staff quote residents all the time; their own words are read, not the quote."""
    body = "確認しました。こちらで対応します。\n\n" + "\n".join(
        "> " + line for line in FRIEND_WORDS.splitlines()
    )
    assert not _decide(rules, body, staff="yes").urgent  # type: ignore[attr-defined]
    assert _quoted_reasons(_decide(rules, body))  # the same mail from a resident is read


# Pieces no rule reads on the plain text: only the joined reading can flag them. (死に / たい
# on two lines is now read on the plain text too, by urgent.suicidal.round3.two's 死 に たい.)
@pytest.mark.parametrize(
    "text",
    ["もう\nしに\nたい", "しに\nたい", "生きて\nいたくない", "リスト\nカット\nした"],
)
def test_a_phrase_written_one_piece_a_line_is_read_joined(rules: RuleSet, text: str) -> None:
    triage = _decide(rules, text, subject="相談")
    assert triage.urgent  # type: ignore[attr-defined]
    assert all(m.rule.startswith("lines-joined:") for m in triage.urgent_reasons)  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ["もう\n死に\nたい", "死に\nたい"])
def test_a_wish_to_die_split_over_lines_is_urgent(rules: RuleSet, text: str) -> None:
    assert _decide(rules, text, subject="相談").urgent  # type: ignore[attr-defined]


def test_only_breaks_between_short_pieces_and_not_after_a_sentence_are_joined() -> None:
    assert short_lines_joined("今日は学校に行きました。\n友達と話しました。") == ""
    assert short_lines_joined("はい。\n死に\nたい") == "はい。\n死にたい"
    assert short_lines_joined("部活の先輩が\nこわい\nです") == "部活の先輩が\nこわいです"
    assert short_lines_joined("もう\n\nしに\n\nたい") == "もうしにたい"  # a poem's blank lines


# -- the pipeline: one alert, not two --------------------------------------------------

WEDNESDAY_10 = datetime(2027, 1, 6, 10, 0, tzinfo=ZoneInfo("Asia/Tokyo"))


def _alerts(smtp_server: LocalSMTP) -> list[str]:
    return [
        str(message_from_bytes(m.data, policy=policy.default)["Subject"])
        for m in settled(smtp_server, 2.0)
        if ONCALL in m.rcpt_tos
    ]


def _read(svc: Service) -> None:
    with Mailbox(svc.settings.mailbox) as mailbox:
        process_new_mail(svc, mailbox, WEDNESDAY_10, accept_existing=True)
    svc.deliver(WEDNESDAY_10)


@pytest.mark.integration
def test_a_friends_crisis_passed_on_by_reply_alerts_the_on_call_person(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    svc = Service.from_settings(load_settings(write_config(tmp_path, dovecot, smtp_server)))
    try:
        dovecot.append(
            samples.consultation(
                RESIDENT,
                "Re: ごめんね",
                _passed_on(FRIEND_WORDS),
                in_reply_to="<friend-1@example.jp>",  # the friend's mail, never seen here
            )
        )
        _read(svc)
        assert len(_alerts(smtp_server)) == 1
    finally:
        svc.close()


@pytest.mark.integration
def test_a_resident_quoting_their_own_urgent_mail_is_not_alerted_twice(
    tmp_path: Path, dovecot: LocalDovecot, smtp_server: LocalSMTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    svc = Service.from_settings(load_settings(write_config(tmp_path, dovecot, smtp_server)))
    try:
        first = "部活のことでずっと悩んでいます。もう死にたいです。"
        dovecot.append(
            samples.consultation(RESIDENT, "相談", first, message_id="<first-1@example.jp>")
        )
        _read(svc)
        assert len(_alerts(smtp_server)) == 1
        reply = (
            "追伸です。明日、担任の先生にも話してみようと思います。\n\n"
            "2027年1月6日(水) 9:50 <hikari.test@example.jp>:\n> " + first + "\n"
        )
        dovecot.append(
            samples.consultation(RESIDENT, "Re: 相談", reply, in_reply_to="<first-1@example.jp>")
        )
        _read(svc)
        assert len(_alerts(smtp_server)) == 1
        with session_scope(svc.engine) as s:
            kinds = [e.kind for e in s.exec(select(Event))]
        assert QUOTED_BEFORE_EVENT in kinds  # said why
    finally:
        svc.close()
