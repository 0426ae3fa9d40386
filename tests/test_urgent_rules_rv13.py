"""Urgent wording of 15-29-year-olds that no rule caught (review rv13, session 13).

The reviewer probed what is done TO young people, told in their own words: pushed into
selling sex, groomed by an adult met online, sextortion with the threat as a condition,
abuse told as こと. Each urgent case names the rule that must catch it with the learned
tier switched off (the safety net may not know the next wording); each look-alike from
the same register must stay quiet. The sentences here differ from the reviewer's probe
on purpose, and every mail is synthetic.
"""

from __future__ import annotations

import pytest

from intake.rules import RuleSet
from tests.helpers import urgent_reasons as reasons

# (text, the rule that must flag it)
EXPLOITATION = [
    ("先輩の彼氏に売春させられとる", "urgent.violence.sexual.exploitation"),
    ("家出した先で援助交際させられてます", "urgent.violence.sexual.exploitation"),
    ("同じクラスの子からママ活やれって脅された", "urgent.violence.sexual.exploitation"),
    ("ツイッターで知り合ったおじさんにホテル来いって言われる", "urgent.violence.sexual.grooming"),
    ("ゲームで知り合った大人が車で迎えに来るって", "urgent.violence.sexual.grooming"),
    ("おっさんに部屋行こうって誘われて断れなかった", "urgent.violence.sexual.grooming"),
    ("自撮り晒されたくなかったらもっと送れって", "urgent.violence.sexual.rv13"),
    ("画像拡散されたくなければ金払えってメッセージ", "urgent.violence.sexual.rv13"),
    ("たぶんセクストーションだと思う、どうしよう", "urgent.violence.sexual.rv13"),
    ("おじいちゃんにいやらしいことをされる", "urgent.violence.sexual.rv13"),
    ("担任にキスされて気持ち悪い", "urgent.violence.sexual.kiss"),
]

EXPLOITATION_QUIET = [
    "クラスでパパ活が流行ってるらしくて怖い",
    "援助交際という言葉の意味を辞書で調べた",
    "ネットで知り合った友達とカラオケに行く約束した",
    "アプリで知り合った同い年の子と通話してる",
    "彼女にキスされて照れた",
    "映画で先生にキスされる場面があってドキドキした",
    "推しの画像を拡散したいけど著作権が心配",
    "性的なことの相談窓口のポスターを作る係になった",
]


@pytest.mark.parametrize(("text", "rule"), EXPLOITATION)
def test_sexual_exploitation_in_a_young_persons_words_is_urgent(
    rules_without_learned: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules_without_learned, text)


@pytest.mark.parametrize("text", EXPLOITATION_QUIET)
def test_talk_about_dating_apps_and_kisses_is_not_urgent(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text)
