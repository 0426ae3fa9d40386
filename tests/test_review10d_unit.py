"""Review rv10d of the last fixes: quoted blocks by their own writer, automatic answers,
advice sentences (parse + decide with the shipped rules; each test failed on 06418a5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from intake import samples
from intake.parse import parse
from intake.pipeline import AUTO_REPLY_TEXT, decide, without_advice
from intake.rules import load_rules

ROOT = Path(__file__).resolve().parent.parent
OWN = "sasaean@city.kasaoka.okayama.jp"
RESIDENT = "hikari.test@example.jp"


@pytest.fixture(scope="module")
def rules():
    return load_rules(ROOT / "rules")


def _decide(rules, body):
    letter = parse(samples.consultation(RESIDENT, "相談", body))
    triage, _block = decide(letter, rules, OWN)
    return letter, triage


def test_person_reply_opening_with_auto_reply_words_is_taken_as_automatic():
    for text in (
        "【自動返信】の設定を切りました。対応します",
        "［自動返信］設定を解除しました。今から電話します。",
    ):
        assert not AUTO_REPLY_TEXT.match(text), f"a person's real reply read as automatic: {text}"


def test_common_auto_reply_openings_not_recognised():
    for text in (
        "≪自動返信≫ただいま運転中です。",
        "■自動返信■ただいま運転中です。",
        "※自動返信※ ただいま運転中です。",
        "《自動応答》ただいま運転中です。",
        "〔自動返信〕ただいま運転中です。",
        "自動返信：ただいま運転中です。",
        "このメールは自動返信です。ただいま運転中です。",
    ):
        assert AUTO_REPLY_TEXT.match(text), f"not taken as automatic: {text}"


def test_friend_on_city_domain_quoted_crisis_dropped(rules):
    body = (
        "友達からこんなメールが来ました。どうしたらいいですか。\n\n"
        "2027年1月6日(水) 9:50 山田 <yamada.k@city.kasaoka.okayama.jp>:\n"
        "> もう死にたい。今夜、家にある薬を全部飲むつもり。\n"
        "> 今までありがとう。\n"
    )
    _letter, triage = _decide(rules, body)
    assert triage.urgent, "a friend's crisis quoted from a city-domain address raised no alert"


def test_own_domain_named_in_friends_words_below_reply_header_drops_crisis(rules):
    body = (
        "友達からこんなメールが来ました。どうしたらいいですか。\n\n"
        "-----Original Message-----\n"
        "From: ともだち <friend.k@example.ne.jp>\n"
        "Sent: Wednesday, January 6, 2027 9:50 AM\n"
        "To: hikari.test@example.jp\n"
        "Subject: ごめんね\n\n"
        "市の相談窓口（sasaean@city.kasaoka.okayama.jp）にも送ったけど返事がない。\n"
        "もう死にたい。今夜、家にある薬を全部飲むつもり。\n"
        "今までありがとう。\n"
    )
    _letter, triage = _decide(rules, body)
    assert triage.urgent, "our address in the friend's first lines hid the whole quoted mail"


def test_reply_header_cc_to_our_mailbox_drops_crisis(rules):
    body = (
        "友達からこんなメールが来ました。どうしたらいいですか。\n\n"
        "-----Original Message-----\n"
        "From: ともだち <friend.k@example.ne.jp>\n"
        "Sent: Wednesday, January 6, 2027 9:50 AM\n"
        "To: hikari.test@example.jp; 笠岡市 <soudan@city.kasaoka.okayama.jp>\n"
        "Subject: ごめんね\n\n"
        "もう死にたい。今夜、家にある薬を全部飲むつもり。\n"
        "今までありがとう。\n"
    )
    _letter, triage = _decide(rules, body)
    assert triage.urgent, "a header line naming our domain hid the whole quoted mail"


def test_unattributed_block_after_our_quoted_block_is_skipped(rules):
    body = (
        "2027年1月6日(水) 9:50 笠岡市 相談窓口 <sasaean@city.kasaoka.okayama.jp>:\n"
        "> 死にたいと思うことはありますか？\n\n"
        "私はないです。でも友達からLINEでこう来ました\n\n"
        "> もう死にたい。今夜、家にある薬を全部飲むつもり。\n"
        "> 今までありがとう。\n"
    )
    _letter, triage = _decide(rules, body)
    assert triage.urgent, "a friend's block after our quoted block is read as ours"


def test_without_advice_keeps_crisis_sentence():
    for words in ("もう死にたい　いのちの電話へ", "死にたい。相談窓口へ、電話しても無駄だった。"):
        out = without_advice(words)
        assert "死にたい" in out


def test_auto_reply_variants_each():
    missed = [
        t
        for t in (
            "≪自動返信≫ただいま運転中です。",
            "■自動返信■ただいま運転中です。",
            "※自動返信※ ただいま運転中です。",
            "《自動応答》ただいま運転中です。",
            "〔自動返信〕ただいま運転中です。",
            "自動返信：ただいま運転中です。",
            "このメールは自動返信です。ただいま運転中です。",
            "Auto Reply: I am driving.",
        )
        if not AUTO_REPLY_TEXT.match(t)
    ]
    assert not missed


def test_own_domain_in_friends_first_lines_under_japanese_header(rules):
    body = (
        "友達からこんなメールが来ました。どうしたらいいですか。\n\n"
        "-------- 元のメッセージ --------\n"
        "差出人: ともだち <friend.k@example.ne.jp>\n"
        "件名: ごめんね\n\n"
        "市の相談窓口（sasaean@city.kasaoka.okayama.jp）にも送ったけど返事がない。\n"
        "もう死にたい。今夜、家にある薬を全部飲むつもり。\n"
        "今までありがとう。\n"
    )
    _letter, triage = _decide(rules, body)
    assert triage.urgent, "our address in the friend's first lines hid the whole quoted mail"
