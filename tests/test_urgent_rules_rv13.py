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


# Technical interns and foreign residents: nowhere to sleep said as "no place", a passport
# held by the employer, a pregnant worker told to go home, Nepali for being beaten.
FOREIGN = [
    ("Please, there is no place to sleep for me tonight", "urgent.foreign.rv13.latin"),
    ("The company kept my passport and I cannot leave", "urgent.foreign.rv13.latin"),
    ("Boss won't give back my passport", "urgent.foreign.rv13.latin"),
    ("I'm pregnant, the kumiai told me I must go back to Vietnam", "urgent.foreign.rv13.latin"),
    ("Em mang thai, giám đốc nói phải về nước ngay", "urgent.foreign.rv13.latin"),
    ("Em bị giữ hộ chiếu", "urgent.foreign.rv13.latin"),
    ("Ang amo ko kinuha ang passport ko", "urgent.foreign.rv13.latin"),
    ("O patrão ficou com meu passaporte", "urgent.foreign.rv13.latin"),
    ("我懷孕了，公司要求我回國", "urgent.foreign.rv13.zh"),
    ("老板没收了我的护照", "urgent.foreign.rv13.zh"),
    ("कम्पनीमा मलाई हाकिमले पिट्छ", "urgent.foreign.rv13.ne"),
    ("बस्ने ठाउँ छैन", "urgent.foreign.rv13.ne"),
    ("社長 わたしの パスポート かえして くれない", "urgent.acute_need.trainee"),
    ("にんしんしたら 監理団体の人が 帰国って いった", "urgent.acute_need.trainee"),
    ("にんしん しました。しゃちょう くにへ かえれって", "reading.acute_need.trainee"),
]

FOREIGN_QUIET = [
    "Should I take my passport when I register my address?",
    "We have no place to stay for our holiday in Okayama, which hotel is good?",
    "I'm pregnant and I want to go back home to have the baby with my mother",
    "Tôi đang mang thai, muốn hỏi về sổ tay mẹ con",
    "Ngày mai tôi đi lấy hộ chiếu mới",
    "Meu filho tirou o passaporte novo",
    "我怀孕了，打算回国生孩子",
    "パスポートの更新に必要なものを教えてください",
    "妊娠したので会社の帰りに産婦人科へ行きます",
    "子どもができたので会社に産休の相談をしました",
]


@pytest.mark.parametrize(("text", "rule"), FOREIGN)
def test_a_trainees_plain_words_for_danger_are_urgent(
    rules_without_learned: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules_without_learned, text)


@pytest.mark.parametrize("text", FOREIGN_QUIET)
def test_passport_pregnancy_and_travel_questions_are_not_urgent(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text)


# Control and stalking told as what was done; a foreign resident's active voice; an adult
# met online whose words a phone's HTML mail split over two lines.
CONTROL = [
    ("旦那にケータイを折られて誰にも連絡できない", "urgent.violence.control"),
    ("交際相手にスマホ取り上げられとる", "urgent.violence.control"),
    ("バイト帰りに同じ人がつけてくる。家の周りにいた", "urgent.violence.control"),
    ("ブロックしたら職場に押しかけるってメッセージが来た", "urgent.violence.threat.rv13"),
    ("返信しないと家に来るって言われた", "urgent.violence.threat.rv13"),
    ("ネットの人に住所教えると家に来るって、本当に来たらどうしよう", "urgent.violence.threat.rv13"),
    ("りょうの ひと ぼくを ける。こわい", "urgent.violence.threat.rv13"),
    ("ネットで知り合ったおじさんに\n泊まりにおいでって言われた", "urgent.violence.sexual.grooming"),
]

CONTROL_QUIET = [
    "旦那の携帯が壊れたので修理に出しました",
    "彼女が自分のスマホを落として割ってた",
    "弟がついてくるから家の近くで待ってた",
    "子どもがどこにでもついてくる時期です",
    "会わないと家族が心配するので帰省します",
    "私は太鼓をたたくのが趣味です",
]


@pytest.mark.parametrize(("text", "rule"), CONTROL)
def test_control_stalking_and_plain_threats_are_urgent(
    rules_without_learned: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules_without_learned, text)


@pytest.mark.parametrize("text", CONTROL_QUIET)
def test_a_broken_phone_or_a_little_brother_tagging_along_is_not_urgent(
    rules: RuleSet, text: str
) -> None:
    assert not reasons(rules, text)


# Words the analyser splits unlike the rules: まとめ飲み (the noun 纏め), Okayama 首つろうか
# (つろう read as 辛い), cutting in secret with nothing named.
SPLIT = [
    ("咳止めをまとめ飲みしちゃった", "urgent.self_harm.rv13"),
    ("市販の頭痛薬まとめ飲みした", "urgent.self_harm.rv13"),
    ("もうおえんけぇ首つろうって決めた", "reading.suicidal.rv13"),
    ("家族にばれんように隠れて切っとる", "urgent.self_harm.rv13.secret"),
]

SPLIT_QUIET = [
    "咳止めのまとめ記事を読んだ",
    "新歓の一気飲みは禁止です",
    "こっそり爪を切ってたら深爪した",
    "バレーで首つったみたいに痛い",
]


@pytest.mark.parametrize(("text", "rule"), SPLIT)
def test_overdose_hanging_and_secret_cutting_split_by_the_analyser_are_urgent(
    rules_without_learned: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules_without_learned, text)


@pytest.mark.parametrize("text", SPLIT_QUIET)
def test_summaries_drinking_games_and_nail_cutting_are_not_urgent(
    rules: RuleSet, text: str
) -> None:
    assert not reasons(rules, text)


# A wish typed over and over without a break: MeCab reads しにたいしにたいしにたい as
# し|に|たいし|に|たいし|に|たい, so no single しにたい starts and ends on a word boundary.
REPEATED = [
    ("しにたいしにたいしにたい", "reading.suicidal.rv13.repeated"),
    ("部活やめたい。じにたいじにたいじにたい", "reading.suicidal.rv13.repeated"),
    ("はよおらんようになりたいわ", "reading.suicidal.rv13.repeated"),
    ("しんどすぎてもう生きとれん", "reading.suicidal.rv13.repeated"),
]

REPEATED_QUIET = [
    "バイトせんと生きとれんけぇシフト増やしたい",
    "担当がおらんようになったら代わりの人を教えてください",
]


@pytest.mark.parametrize(("text", "rule"), REPEATED)
def test_a_wish_typed_over_and_over_or_in_okayama_words_is_urgent(
    rules_without_learned: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules_without_learned, text)


@pytest.mark.parametrize("text", REPEATED_QUIET)
def test_needing_a_job_to_live_or_a_staff_member_away_is_not_urgent(
    rules: RuleSet, text: str
) -> None:
    assert not reasons(rules, text)


# Round two: a minor who says they sell sex, explicit photos named in slang, a stepfather
# at night, held in a stranger's room, a runaway now.
ROUND_TWO = [
    ("高2です。お金なくて援交してしまってます", "urgent.violence.sexual.minor"),
    ("JKリフレで働いてるけど客にキスされた", "urgent.violence.sexual.minor"),
    ("元彼がエロい動画持ってて、流すって言ってくる", "urgent.violence.sexual.minor"),
    ("ハメ撮りをばらまかれた", "urgent.violence.sexual.minor"),
    ("母の彼氏が深夜に布団に入ってくる", "urgent.violence.sexual.minor.night"),
    ("SNSの人の部屋にいる。帰してくれない", "urgent.violence.sexual.minor.night"),
    ("オフパコしろって先輩に脅された", "urgent.violence.sexual.exploitation"),
    ("家出中で今夜泊まるとこ探してる", "urgent.acute_need.runaway"),
    ("くみあいの ひとが パスポートを とった", "reading.acute_need.trainee"),
]

ROUND_TWO_QUIET = [
    "高校生のパパ活についての記事を授業で読んだ",
    "義父が夜ご飯を作ってくれた",
    "エロい漫画を親に見つかって気まずい",
    "友達の部屋にいるけど話が長くて帰してくれない笑",
    "家出の歌が好き",
    # 取った is also "got one issued", 取りに行く a pick-up (the company must take it)
    "パスポートとった！夏休みに韓国行く",
    "会社の帰りにパスポートを取りに行きます",
]


@pytest.mark.parametrize(("text", "rule"), ROUND_TWO)
def test_a_minor_selling_sex_or_held_in_a_room_is_urgent(
    rules_without_learned: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules_without_learned, text)


@pytest.mark.parametrize("text", ROUND_TWO_QUIET)
def test_school_reading_dinner_and_a_long_chat_are_not_urgent(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text)


# Beaten, with the one who hits between the words the older rules expect; a knife brought
# out in anger; things smashed.
BEATEN = [
    ("Em bị quản lý đánh vì làm chậm", "urgent.foreign.rv13.vi.beaten"),
    ("Tôi bị người yêu tát", "urgent.foreign.rv13.vi.beaten"),
    ("昨天被组长踢了", "urgent.foreign.rv13.zh.beaten"),
    ("彼氏が怒ると刃物を持ち出す", "urgent.violence.rv13.blade"),
    ("母親が酔ったら包丁取り出してきて怖い", "urgent.violence.rv13.blade"),
    ("言うこと聞かないと物を壊される", "urgent.violence.rv13"),
]

BEATEN_QUIET = [
    "我被这首歌打动了",
    "我被老板表扬了，很开心",
    "Em bị sếp nhắc nhở vì đi muộn",
    "野菜がよく切れるように包丁を出しておいた",
    "大雨で物が壊されないように片付けた",
]


@pytest.mark.parametrize(("text", "rule"), BEATEN)
def test_beaten_by_a_named_person_or_a_knife_brought_out_in_anger_is_urgent(
    rules_without_learned: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules_without_learned, text)


@pytest.mark.parametrize("text", BEATEN_QUIET)
def test_being_moved_praised_or_cooking_is_not_urgent(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text)


# Round three: one plain word no rule named (監禁, stabbed by a person), waking in a hotel
# after blacking out at a party, bathing forced by a father, shut out in the snow, cold by
# the morning "I think", baby-talk ちにたい.
ROUND_THREE = [
    ("元カレの家に監禁されとる", "urgent.violence.rv13.round3"),
    ("旦那に刺されて血が出てる", "urgent.violence.rv13.round3"),
    ("合コンで記憶なくして、気づいたら知らない部屋にいた", "urgent.violence.rv13.round3.wide"),
    ("義父に毎晩風呂に一緒に入らされる", "urgent.violence.rv13.round3.wide"),
    ("罰として裸足で外に出された。寒い", "urgent.violence.rv13.round3.wide"),
    ("たぶん朝には冷たくなってると思う", "urgent.suicidal.rv13.cold"),
    ("ちにたいよお", "reading.suicidal.rv13.baby_talk"),
]

ROUND_THREE_QUIET = [
    "ハチに刺されたところが腫れてる",
    "監禁ものの映画を見た",
    "明日の朝は冷え込むと思うので暖かくしてください",
    "旅行で飲みすぎて記憶がない、起きたら旅館だった",
    "猫を外に出したら寒そうにしてた",
    "血に対しての恐怖がある",
]


@pytest.mark.parametrize(("text", "rule"), ROUND_THREE)
def test_confinement_stabbing_and_a_night_shut_out_are_urgent(
    rules_without_learned: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules_without_learned, text)


@pytest.mark.parametrize("text", ROUND_THREE_QUIET)
def test_insect_stings_films_and_a_cold_morning_are_not_urgent(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text)


# Ordinary look-alikes the probe found flagged: a pest killed, homework about suicide, a
# lesson on what 神待ち means. Each exclusion is narrow: the crisis next to it stays urgent.
LOOKALIKE_QUIET = [
    "ベランダに出たハエを殺虫剤で殺した",
    "宿題で自殺について調べてる",
    "神待ちという言葉の意味をニュースで知った",
]

LOOKALIKE_STILL_URGENT = [
    "ハエみたいに殺すぞって毎日言われる",
    "宿題が多すぎて死にたい",
    "家出して神待ちしてる",
    "神待ちって言葉知ってる？今それしてる",
]


@pytest.mark.parametrize("text", LOOKALIKE_QUIET)
def test_a_pest_homework_or_a_words_meaning_is_not_urgent(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text)


@pytest.mark.parametrize("text", LOOKALIKE_STILL_URGENT)
def test_the_crisis_next_to_those_look_alikes_stays_urgent(
    rules_without_learned: RuleSet, text: str
) -> None:
    assert reasons(rules_without_learned, text)


# Round four: threats and strangling in the residents' languages worded unlike the older
# lists, and Kansai/yankee words for a beating.
ROUND_FOUR = [
    ("this guy is blackmailing me with my pics", "urgent.foreign.rv13.latin.threat"),
    ("send more or they will leak everything", "urgent.foreign.rv13.latin.threat"),
    ("Meu padrasto me esganou ontem", "urgent.foreign.rv13.latin.threat"),
    ("Ayoko na mamuhay pa", "urgent.foreign.rv13.latin.threat"),
    ("Chồng em dọa chém em", "urgent.foreign.rv13.latin.threat"),
    ("老公掐住我的脖子", "urgent.foreign.rv13.zh.threat"),
    ("前男友威胁要杀了我", "urgent.foreign.rv13.zh.threat"),
    ("クラスの男子にシメられる", "urgent.violence.rv13.kansai"),
    ("兄貴の連れにいてこまされてる", "reading.violence.rv13.kansai"),
]

ROUND_FOUR_QUIET = [
    "Ele me sufocou de tanto abraço haha",
    "这个游戏的boss要杀我好多次",
    "成人式で父にネクタイを締められた",
    "I will never post my photos online, they are private",
]


@pytest.mark.parametrize(("text", "rule"), ROUND_FOUR)
def test_threats_strangling_and_beatings_in_other_words_are_urgent(
    rules_without_learned: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules_without_learned, text)


@pytest.mark.parametrize("text", ROUND_FOUR_QUIET)
def test_a_tight_hug_a_game_boss_or_a_tie_is_not_urgent(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text)


# Round five: 消えたさ, a place to jump looked for with the noun 飛び降り, come and rescue me
# now, fled from a partner or home with nothing.
ROUND_FIVE = [
    ("最近消えたさが強い", "reading.suicidal.rv13.round5"),
    ("飛び降りのやり方ばっかり見てる", "reading.suicidal.rv13.round5"),
    ("誰か今すぐ助けに来てください", "urgent.violence.rv13.fled"),
    ("旦那から逃げてきました。お金がありません", "urgent.violence.rv13.fled"),
]

ROUND_FIVE_QUIET = [
    "消えたさっきの写真、復元できますか",
    "水泳の飛び込みの方法を教えてほしい",
    "文化祭の準備で友達が助けに来てくれた",
    "部活から逃げてきた笑",
]


@pytest.mark.parametrize(("text", "rule"), ROUND_FIVE)
def test_wanting_to_vanish_a_place_to_jump_or_a_flight_with_nothing_is_urgent(
    rules_without_learned: RuleSet, text: str, rule: str
) -> None:
    assert rule in reasons(rules_without_learned, text)


@pytest.mark.parametrize("text", ROUND_FIVE_QUIET)
def test_a_lost_photo_a_dive_or_a_friends_help_is_not_urgent(rules: RuleSet, text: str) -> None:
    assert not reasons(rules, text)
