"""Review rv10b of the quoted-words check: no lost alert and no second alert in a thread.

The tests proved each defect against 92c8d39; real Dovecot and SMTP servers, synthetic mail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from intake import samples
from intake.config import load_settings
from intake.localservers import LocalDovecot, LocalSMTP
from intake.pipeline import QUOTED_BEFORE_EVENT, Service
from intake.staff import close_case
from intake.store import Case, Event, session_scope
from tests.helpers import write_config
from tests.test_quoted_urgency import RESIDENT, WEDNESDAY_10, _alerts, _read

pytestmark = pytest.mark.integration


def _svc(tmp_path: Path, dovecot: LocalDovecot, smtp: LocalSMTP, monkeypatch) -> Service:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    return Service.from_settings(load_settings(write_config(tmp_path, dovecot, smtp)))


def _events(svc: Service) -> list[str]:
    with session_scope(svc.engine) as s:
        return [e.kind for e in s.exec(select(Event))]


def q(text: str, prefix: str = "> ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


ATTR_ME = "2027年1月6日(水) 9:50 <hikari.test@example.jp>:\n"


def test_a_friends_crisis_in_a_thread_whose_first_mail_was_not_urgent_alerts(
    tmp_path, dovecot, smtp_server, monkeypatch
) -> None:
    """Mail 1 says the resident does NOT want to die (not urgent, no alert). Mail 2, in the
    same thread, passes on a friend's "> 死にたい". The quoted line is a substring of mail
    1's words, so _quoted_before drops it: nobody is ever alerted."""
    svc = _svc(tmp_path, dovecot, smtp_server, monkeypatch)
    try:
        first = "友達のことで相談です。私自身は死にたいとは思っていません。でも友達が心配です。"
        dovecot.append(
            samples.consultation(RESIDENT, "相談", first, message_id="<neg-1@example.jp>")
        )
        _read(svc)
        assert _alerts(smtp_server) == []  # mail 1: no crisis, no alert (right)
        second = (
            "さっき、その友達からこんなメールが来ました。どうしたらいいですか。\n\n"
            "2027年1月6日(水) 9:40 友達 <friend.test@example.jp>:\n> 死にたい\n"
        )
        dovecot.append(
            samples.consultation(RESIDENT, "Re: 相談", second, in_reply_to="<neg-1@example.jp>")
        )
        _read(svc)
        kinds = _events(svc)
        assert QUOTED_BEFORE_EVENT not in kinds, "new crisis swallowed as 'read before'"
        assert len(_alerts(smtp_server)) == 1, "a friend's crisis raised no alert at all"
    finally:
        svc.close()


def test_a_second_friends_crisis_in_an_alerted_thread_alerts_again(
    tmp_path, dovecot, smtp_server, monkeypatch
) -> None:
    """Mail 1: friend A said 「もう死にたい」 (alerted). Mail 2, same thread: friend B's own
    mail quoted, "> もう死にたい". A new person in crisis; no alert."""
    svc = _svc(tmp_path, dovecot, smtp_server, monkeypatch)
    try:
        first = "友達のことで相談です。友達のAさんが「もう死にたい」と言っています。心配です。"
        dovecot.append(
            samples.consultation(RESIDENT, "相談", first, message_id="<fa-1@example.jp>")
        )
        _read(svc)
        assert len(_alerts(smtp_server)) == 1
        second = (
            "別の友達のBさんからも、いまこんなメールが来ました。\n\n"
            "2027年1月6日(水) 9:55 Bさん <friend.b@example.jp>:\n> もう死にたい\n"
        )
        dovecot.append(
            samples.consultation(RESIDENT, "Re: 相談", second, in_reply_to="<fa-1@example.jp>")
        )
        _read(svc)
        assert len(_alerts(smtp_server)) == 2, "friend B's crisis raised no alert"
    finally:
        svc.close()


def test_quoting_ones_own_crisis_after_the_case_was_closed_alerts(
    tmp_path, dovecot, smtp_server, monkeypatch
) -> None:
    """The case was closed by staff. The resident replies to their own old mail: 「また同じ
    気持ちです」 over the quoted crisis. handle_message's own rule says urgent words after
    a close must alert whatever the headers say; _quoted_before ignores the case status."""
    svc = _svc(tmp_path, dovecot, smtp_server, monkeypatch)
    try:
        first = "部活のことでずっと悩んでいます。もう死にたいです。"
        dovecot.append(
            samples.consultation(RESIDENT, "相談", first, message_id="<cl-1@example.jp>")
        )
        _read(svc)
        assert len(_alerts(smtp_server)) == 1
        with session_scope(svc.engine) as s:
            number = s.exec(select(Case)).one().number
        close_case(svc, number, "電話で話した。落ち着いた。", "staff", WEDNESDAY_10)
        second = "また同じ気持ちになっています。\n\n" + ATTR_ME + q(first) + "\n"
        dovecot.append(
            samples.consultation(RESIDENT, "Re: 相談", second, in_reply_to="<cl-1@example.jp>")
        )
        _read(svc)
        assert len(_alerts(smtp_server)) == 2, "closed case: the renewed crisis was not alerted"
    finally:
        svc.close()


def test_a_friends_crisis_quoted_again_in_a_follow_up_alerts_once(
    tmp_path, dovecot, smtp_server, monkeypatch
) -> None:
    """Mail 1 passes a friend's mail on by replying to it (quoted: alert, right). Mail 2 is
    the resident replying to their own mail 1 to add a line: the friend's words come
    nested (>>). _quoted_before compares with mail 1's new_text only, which never held the
    friend's words (they were quoted): a second alert for words already alerted on."""
    svc = _svc(tmp_path, dovecot, smtp_server, monkeypatch)
    try:
        friend = "もう死にたい。今夜、家にある薬を全部飲むつもり。\n今までありがとう。"
        first = (
            "友達からこんなメールが来ました。どうしたらいいかわかりません。\n\n"
            "2027年1月6日(水) 9:15 友達 <friend.test@example.jp>:\n" + q(friend) + "\n"
        )
        dovecot.append(
            samples.consultation(RESIDENT, "相談", first, message_id="<pf-1@example.jp>")
        )
        _read(svc)
        assert len(_alerts(smtp_server)) == 1
        second = "追伸: 友達の名前はサキです。同じクラスです。\n\n" + ATTR_ME + q(first) + "\n"
        dovecot.append(
            samples.consultation(RESIDENT, "Re: 相談", second, in_reply_to="<pf-1@example.jp>")
        )
        _read(svc)
        assert len(_alerts(smtp_server)) == 1, "second alert for the same friend's words"
    finally:
        svc.close()


def test_a_new_crisis_below_quoted_advice_alerts(
    tmp_path, dovecot, smtp_server, monkeypatch
) -> None:
    """decide reads without_advice(quoted_words), but _quoted_before maps the match offsets
    into quoted_words WITH the advice lines: the friend's 「もう死にたい」 is mapped onto the
    quoted advice line of mail 1, which mail 1's words hold, so the new crisis is
    'read before'. The friend's words were never in any stored mail."""
    svc = _svc(tmp_path, dovecot, smtp_server, monkeypatch)
    try:
        first = (
            "学校から「悩んでいる方は相談窓口に電話してください」というお知らせが来たので、"
            "メールしました。"
        )
        dovecot.append(
            samples.consultation(RESIDENT, "相談", first, message_id="<adv-1@example.jp>")
        )
        _read(svc)
        assert _alerts(smtp_server) == []
        second = (
            "友達から今こんなメールが来ました。\n\n" + ATTR_ME + q(first) + "\n\n"
            "2027年1月6日(水) 9:55 友達 <friend.test@example.jp>:\n> もう死にたい\n"
        )
        dovecot.append(
            samples.consultation(RESIDENT, "Re: 相談", second, in_reply_to="<adv-1@example.jp>")
        )
        _read(svc)
        kinds = _events(svc)
        assert QUOTED_BEFORE_EVENT not in kinds, "friend's new crisis swallowed as 'read before'"
        assert len(_alerts(smtp_server)) == 1
    finally:
        svc.close()


def test_a_newsletters_short_line_list_pages_nobody(
    tmp_path, dovecot, smtp_server, monkeypatch
) -> None:
    """The join runs on every mail but our own: a list newsletter's 「12月の教室リスト」 over
    「カット」 reads リストカット (lines-joined:urgent.self_harm) and pages on-call."""
    svc = _svc(tmp_path, dovecot, smtp_server, monkeypatch)
    try:
        body = (
            "笠岡市子ども会だより 12月号\n\n12月の教室リスト\nカット\n料理\n工作\n\n"
            "配信停止はこちら"
        )
        dovecot.append(
            samples.consultation(
                "news@kodomo.example.jp",
                "子ども会だより",
                body,
                headers={"List-Id": "<kodomo.example.jp>", "Precedence": "list"},
            )
        )
        _read(svc)
        with session_scope(svc.engine) as s:
            print([(c.urgent, c.urgent_reasons) for c in s.exec(select(Case))])
        assert _alerts(smtp_server) == [], "a newsletter paged the on-call person"
    finally:
        svc.close()


def test_an_outlook_reply_quoting_ones_own_crisis_subject_alerts_once(
    tmp_path, dovecot, smtp_server, monkeypatch
) -> None:
    """Mail 1 (subject 「もう死にたい」) alerted. The resident adds a line by replying to it
    in Outlook with a subject of their own (「追加です」; a kept 「RE: もう死にたい」 re-alerts
    from the subject alone, before this commit too), top-posting, header block without
    '>': the block's 件名: line is in
    quoted_words, and no stored new_text holds it, so _quoted_before vouches for nothing:
    a second alert for the words alerted on an hour ago."""
    svc = _svc(tmp_path, dovecot, smtp_server, monkeypatch)
    try:
        first = "部活のことでずっと悩んでいます。誰にも言えません。"
        dovecot.append(
            samples.consultation(RESIDENT, "もう死にたい", first, message_id="<ol-1@example.jp>")
        )
        _read(svc)
        assert len(_alerts(smtp_server)) == 1
        second = (
            "追加です。明日は学校を休むつもりです。\n\n"
            "________________________________\n"
            "差出人: ひかり <hikari.test@example.jp>\n"
            "送信日時: 2027年1月6日 9:50\n"
            "宛先: sasaean@city.kasaoka.okayama.jp\n"
            "件名: もう死にたい\n\n" + first + "\n"
        )
        dovecot.append(
            samples.consultation(RESIDENT, "追加です", second, in_reply_to="<ol-1@example.jp>")
        )
        _read(svc)
        assert len(_alerts(smtp_server)) == 1, "second alert from the quoted 件名: line"
    finally:
        svc.close()


def test_a_partner_colleagues_reply_between_digest_lines_alerts_once(
    tmp_path, dovecot, smtp_server, monkeypatch
) -> None:
    """A partner's colleague (an address not in digest_to) answers the digest from a phone
    that drops the thread headers, quoting the digest and writing between its lines. The
    block holding the entry's fields is left out; the block below the comment, the
    resident's words, has no field or marker: quoted: -> a second alert for words alerted
    on already."""
    from tests.test_staff_quotes import WORDS, _digest_to_partner

    svc = _svc(tmp_path, dovecot, smtp_server, monkeypatch)
    try:
        dovecot.append(samples.consultation(RESIDENT, "相談", WORDS))
        _read(svc)
        assert len(_alerts(smtp_server)) == 1
        _partner, subject, text = _digest_to_partner(svc, smtp_server)
        lines = text.splitlines()
        at = next(i for i, line in enumerate(lines) if WORDS.splitlines()[0] in line)
        body = (
            "山本さん\n\n"
            + q("\n".join(lines[:at]))
            + "\n\n承知しました。担当します。\n\n"
            + q("\n".join(lines[at:]))
        )
        dovecot.append(
            samples.consultation("tanaka.colleague@npo.example.jp", "Re: " + subject, body)
        )
        _read(svc)
        with session_scope(svc.engine) as s:
            print([c.urgent_reasons[:120] for c in s.exec(select(Case))])
        assert len(_alerts(smtp_server)) == 1, "the quoted digest entry alerted again"
    finally:
        svc.close()
