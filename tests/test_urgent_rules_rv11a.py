"""Urgent wording a reviewer (rv11a) found no rule for: what the shipped rules must flag now.

Each test names the rule or signal that must carry the mail, so a learned-tier guess cannot
hide a rule that stopped matching. Every mail is synthetic and written for these tests.
"""

from __future__ import annotations

import pytest

from intake.rules import RuleSet
from tests.helpers import urgent_reasons as reasons

SEXUAL = {
    "urgent.violence.sexual",
    "urgent.violence.sexual.forced",
    "urgent.violence.sexual.images",
    "signals.violence.sexual_fear",
    "signals.violence.sexual_secrecy",
}


# -- finding 1: sexual abuse and sexual violence ---------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "部活のコーチに胸をさわられる。親には言えてない",
        "バイト先の社長がお尻触ってくる。辞めたいけど辞められん",
        "レイプされたかもしれん。記憶がない",
        "性被害におうた。警察に行くべきなんかな",
        "いとこに服を脱がされた",
        "ホテルに連れ込まれそうになって逃げてきた",
        "継父が毎晩ベッドに潜り込んでくる",
        "夜中になると義父がうちの布団に入ってくる",
        "寝てる間に叔父に触られてた気がする",
    ],
)
def test_touching_rape_and_a_relative_in_the_bed_at_night_are_urgent(
    rules: RuleSet, text: str
) -> None:
    assert reasons(rules, text) & {"urgent.violence.sexual"}


@pytest.mark.parametrize(
    "text",
    [
        "先月、サークルの先輩に無理矢理された。誰にも言えてない",
        "元カレに無理やりやられた",
        "塾の帰りに知らん人に襲われた",
        "酔わされて無理やりキスされた",
    ],
)
def test_forced_sex_said_without_the_word_is_urgent(rules: RuleSet, text: str) -> None:
    assert "urgent.violence.sexual.forced" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "ネットで知り合った人に自撮り送ったら、学校にばらまくって言われとる",
        "元カレが動画流すぞって脅してくる",
        "下着の写真送れって言われて送ってしまった。もう一回送らんと晒すって",
        "会わんと画像拡散するって言われた",
    ],
)
def test_private_images_held_over_the_writer_are_urgent(rules: RuleSet, text: str) -> None:
    assert "urgent.violence.sexual.images" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "夜中に兄が部屋に入ってくる。ほんまに怖い",
        "店長にむりに抱きつかれた。親にも友達にも内緒にしとる",
    ],
)
def test_vague_sexual_harm_with_fear_or_secrecy_is_a_signal(rules: RuleSet, text: str) -> None:
    assert reasons(rules, text) & {
        "signals.violence.sexual_fear",
        "signals.violence.sexual_secrecy",
    }


@pytest.mark.parametrize(
    "text",
    [
        # a feeling or sleep that "attacks" the writer is not an assault
        "テスト前になると急に不安に襲われる",
        "授業中に睡魔に襲われて寝てしまった",
        # a baby touching, a trait, ordinary family life, a class video, school photos
        "赤ちゃんが授乳中に胸を触ってくるのがかわいい",
        "人に体を触られるのが苦手で、美容院もしんどい",
        "父が夜に部屋に来て、進学の話をしてくれた",
        "うちの猫が毎晩布団に入ってくる",
        "先生が授業で動画を流すって言ってた",
        "体育祭の写真をクラスのグループに流すって友達が言ってた",
        # forced to study or join a club is not forced sex
        "親に無理やり塾に入らされた",
        # a lesson about sexual violence is discounted (reportable)
        "性被害について授業で習ったので、レポートを書いています",
    ],
)
def test_everyday_touching_attacks_and_photos_are_not_sexual_violence(
    rules: RuleSet, text: str
) -> None:
    assert not reasons(rules, text) & SEXUAL


# -- finding 4: cutting with no body part named ----------------------------------------


@pytest.mark.parametrize(
    "text",
    ["切りたい。", "またきってしもた", "今日も切っちゃった", "夜中になると切りたくなるんよ"],
)
def test_a_few_words_about_cutting_are_urgent(rules: RuleSet, text: str) -> None:
    assert "urgent.short.self_harm" in reasons(rules, text)


def test_the_urge_to_cut_in_a_longer_mail_is_urgent(rules: RuleSet) -> None:
    text = "最近また切りたい衝動が強くて、夜も寝られん。道具はまだ机にしまってある。"
    assert "urgent.self_harm" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    ["前髪切りたい", "もう親と縁切りたい", "電話切っちゃった", "爪また切った", "ケーキ切りたい"],
)
def test_cutting_hair_ties_or_a_call_is_not_self_harm(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text) & {"urgent.short.self_harm", "urgent.self_harm"}


# -- finding 7: short cries ----------------------------------------------------------


@pytest.mark.parametrize("text", ["ほんま限界", "耐えられない…", "もう耐えれんわ", "無理、無理"])
def test_a_few_words_saying_the_writer_cannot_go_on_are_urgent(rules: RuleSet, text: str) -> None:
    assert "urgent.short.help" in reasons(rules, text)


def test_a_drawn_out_tasukete_is_a_cry_not_a_wish_to_help(rules: RuleSet) -> None:
    assert "reading.help.cry" in reasons(rules, "もうあかん。たすけてぇ")


@pytest.mark.parametrize("text", ["眠たすぎて限界", "暑さに耐えられん", "課題多すぎて限界"])
def test_everyday_limits_in_a_few_words_are_not_a_cry(rules: RuleSet, text: str) -> None:
    assert "urgent.short.help" not in reasons(rules, text)


# -- finding 8: youth wording of the wish ---------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "もう永眠したいわ",
        "人生からログアウトしたい",
        "人生リタイアしたいです",
        "生きるの、もう飽きた",
        "生きるのがむり",
        "自分は生きるのに向いてない気がする",
    ],
)
def test_youth_words_for_wanting_to_stop_living_are_urgent(rules: RuleSet, text: str) -> None:
    assert "urgent.suicidal.soft" in reasons(rules, text)


@pytest.mark.parametrize("text", ["まじで死にたすぎる", "きえたすぎて泣いとる"])
def test_too_much_wanting_to_die_is_urgent(rules: RuleSet, text: str) -> None:
    assert "reading.suicidal.wish" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    ["ゲームのアカウントからログアウトしたい", "部活をリタイアしたい", "このアニメ飽きた"],
)
def test_logging_out_of_an_app_or_quitting_a_club_is_not_suicidal(
    rules: RuleSet, text: str
) -> None:
    assert "urgent.suicidal.soft" not in reasons(rules, text)


# -- finding 9: acute need in youth words ---------------------------------------------


@pytest.mark.parametrize("text", ["家がないんよ", "いま家ない"])
def test_no_home_as_all_the_mail_says_is_urgent(rules: RuleSet, text: str) -> None:
    assert "urgent.short.no_home" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    ["昨日から野宿しとる", "今夜も野宿", "家出して神待ちしとる", "誰か泊めてくれる人おらん？"],
)
def test_sleeping_rough_and_looking_for_a_bed_are_urgent(rules: RuleSet, text: str) -> None:
    assert "urgent.acute_need.housing" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    [
        "実家を出てから、自分の家がないような気持ちになることがあります。仕事は続いていて、"
        "生活には困っていません。気持ちの整理の仕方を相談したいです",
        "家のあてがない",
    ],
)
def test_no_home_as_a_feeling_in_a_long_mail_is_not_the_few_words_rule(
    rules: RuleSet, text: str
) -> None:
    assert "urgent.short.no_home" not in reasons(rules, text)


def test_a_past_camping_night_outside_is_not_acute(rules: RuleSet) -> None:
    text = "夏休みにキャンプで野宿したのが楽しかった"
    assert "urgent.acute_need.housing" not in reasons(rules, text)


# -- finding 11: Okayama おらん (= いない) --------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "うちがおらんくなっても誰も気づかんと思う",
        "おれがおらんようになったら家族も楽じゃろ",
        "わたしなんかおらん方がええんよ",
        "僕がいなくなっても誰も悲しまない",
    ],
)
def test_the_writer_gone_and_nobody_minding_is_urgent(rules: RuleSet, text: str) -> None:
    assert "urgent.suicidal.soft" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    ["先生がおらんようになったら授業が自習になる", "母がいなくても誰も困らないように作り置きした"],
)
def test_someone_else_being_away_is_not_the_writers_wish(rules: RuleSet, text: str) -> None:
    assert "urgent.suicidal.soft" not in reasons(rules, text)


# -- finding 13: violence told at the edge --------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "駅の階段で後ろから突き落とされた",
        "別れた元カレが毎日ついてくる",
        "知らん男に家までつけられた",
        "父が怖くて家に帰れん",
        "家に帰るのがこわい",
    ],
)
def test_pushed_followed_or_afraid_to_go_home_is_violence(rules: RuleSet, text: str) -> None:
    assert "urgent.violence.concrete" in reasons(rules, text)


@pytest.mark.parametrize(
    "text", ["このままじゃあいつを刺してしまいそう", "何するかわからん自分がこわい"]
)
def test_about_to_harm_someone_is_urgent(rules: RuleSet, text: str) -> None:
    assert "urgent.violence.caregiver" in reasons(rules, text)


@pytest.mark.parametrize(
    "text",
    ["子犬がどこでもついてくる", "夜の山は蚊に刺されそうで嫌", "お化け屋敷が怖くて入れなかった"],
)
def test_a_puppy_following_or_a_mosquito_is_not_violence(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text) & {"urgent.violence.concrete", "urgent.violence.caregiver"}


# -- finding 2: the reading-tier pattern, and since the dialect rewrite in lemmas.py the
# phrase tier too (it reads 死にたく); either is the wish to die ------------------------

WISH = {"reading.suicidal.wish", "urgent.suicidal.wish"}


@pytest.mark.parametrize(
    "text",
    [
        "学校のこと考えよったら、だんだん死にとうなってきた。誰かに聞いてほしい",
        "死にとうてしゃあない",
        "毎晩しにとうなるんよ。親には言えん",
    ],
)
def test_okayama_shinitou_is_the_wish_to_die(rules: RuleSet, text: str) -> None:
    assert reasons(rules, text) & WISH


@pytest.mark.parametrize("text", ["死にとうないけぇ大丈夫よ", "兄を探しにとうとう大阪まで行った"])
def test_okayama_not_wanting_to_die_or_totou_is_not_the_wish(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text) & WISH
