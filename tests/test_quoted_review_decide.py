"""Review rv10b of the quoted-words and joined-lines checks: ``decide`` only, no servers.

Each test proved a defect against 92c8d39; all mail synthetic.
"""

from __future__ import annotations

import pytest

from intake import samples
from intake.parse import parse
from intake.pipeline import decide, short_lines_joined
from intake.rules import RuleSet
from tests.test_ack_text import ack_text
from tests.test_staff_quotes import rewrap

OWN = "sasaean@city.kasaoka.okayama.jp"
RESIDENT = "hikari.test@example.jp"
INTRO = "友達からこんなメールが来ました。どうしたらいいかわかりません。\n\n"
ATTR = "2026年11月20日(金) 23:15 友達 <friend.test@example.jp>:\n"
FRIEND = "もう死にたい。今夜、家にある薬を全部飲むつもり。"


def _reasons(rules: RuleSet, body: str, subject: str = "Re: 相談") -> list[str]:
    letter = parse(samples.consultation(RESIDENT, subject, body))
    triage, _ = decide(letter, rules, OWN, frozenset())
    return [m.rule for m in triage.urgent_reasons]


def q(text: str, prefix: str = "> ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


# -- 1. lost alerts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "friend",
    [
        "家の方はもう無理。今夜死ぬつもり。",  # [るいの]方は
        "相談窓口とか意味ない。もう死にたい。",  # 相談窓口
        "ホットラインにも電話したけどつながらない。もう死にたい。",  # ホットライン
        "今まで本当にありがとう。死んだら家族にご連絡ください。",  # ご連絡ください
        "私の方は大丈夫じゃない。薬をたくさん飲んだ。",  # の方は
        # a phone's one-paragraph mail: one advice-like word drops all of it
        "最近ずっと眠れなくて、学校の相談窓口にも行ったけどだめだった。もう死にたい。今夜決めた。",
    ],
)
def test_a_friends_crisis_line_with_advice_like_words_is_read(rules: RuleSet, friend: str) -> None:
    """without_advice drops every quoted LINE holding an advice-like word; a friend's
    crisis mentioning a help line (or just 「家の方は」) is dropped whole."""
    assert _reasons(rules, INTRO + ATTR + q(friend)), "friend's crisis dropped as 'advice'"


@pytest.mark.parametrize("between", ["\n>\n", "\n\n"])
def test_a_friends_mail_quoted_next_to_our_ack_in_one_block_is_read(
    rules: RuleSet, between: str
) -> None:
    """Replying to our acknowledgement (a carrier mailer, no attribution line), the resident
    pastes the friend's mail, itself '>'-quoted (copied from their reply to the friend),
    above the quote: blank lines keep it in the block of our ack, which is dropped whole."""
    ack = ack_text("2026-11-25 22:00")
    body = (
        "友達から来たメールをはりつけます。どうしたらいいですか。\n\n"
        + q(FRIEND)
        + between
        + q(ack)
    )
    assert _reasons(rules, body), "friend's crisis dropped with our ack's block"


def test_a_friends_mail_quoted_with_bars_below_our_ack_quoted_with_bars_is_read(
    rules: RuleSet,
) -> None:
    """A mailer quoting with '| ': our ack block is found by its marker (right), but every
    later '| ' block is quoted and never reaches quoted_words."""
    ack = ack_text("2026-11-25 22:00")
    body = (
        "友達のメールも下にあります。\n\n" + q(ack, "| ") + "\n\n"
        "友達から来たメール:\n" + q(FRIEND, "| ")
    )
    assert _reasons(rules, body), "bar-quoted friend's crisis never read"


@pytest.mark.parametrize(
    "text",
    [
        "もう\n\nしに\n\nたい",  # one piece a line, blank lines between (phone poem style)
        "今日も\n\nひとりで\n\nしに\n\nたいと\n\nおもった",
        "夜がくると\nいつも思う\n消えて\nしまいたい",  # join compares the grown line, not the piece
    ],
)
def test_one_piece_a_line_with_blank_lines_or_longer_pieces_is_read(
    rules: RuleSet, text: str
) -> None:
    assert _reasons(rules, text, subject="相談"), repr(short_lines_joined(text))


# -- 2. false alerts --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "週末のやることリスト\nカット\n買い物\n宿題",
        "図工の持ち物リスト\nカッター\nのり\nはさみ",
    ],
)
def test_a_list_under_a_heading_is_no_crisis(rules: RuleSet, text: str) -> None:
    """A heading ending in リスト with short items below: joined, リストカット."""
    assert _reasons(rules, text, subject="相談") == []


@pytest.mark.parametrize("width", [32])
def test_our_ack_quoted_by_a_narrow_phone_rewrap_raises_no_quoted_reason(
    rules: RuleSet, width: int
) -> None:
    """Our own acknowledgement quoted back, re-wrapped at 28-32 columns (14-16 full-width
    characters: feature-phone / small-screen widths). Unrecognised rests split the quote
    into small blocks; "> ・119  救急・消防（けが・急病" alone carries no trace: quoted: alert."""
    quote = rewrap(ack_text("2026-11-25 22:00"), width)
    body = "お返事ありがとうございます。待っています。\n\n" + quote
    assert [r for r in _reasons(rules, body) if r.startswith("quoted:")] == []


@pytest.mark.parametrize(
    "friend", ["もう\n死に\nたい", "ごめんね\nもう\n生きて\nいたくない\nばいばい"]
)
def test_a_friends_mail_written_one_piece_a_line_passed_on_by_reply_is_read(
    rules: RuleSet, friend: str
) -> None:
    """The join reads letter.text only; the same words in the friend's quoted mail are read
    unjoined (and the resident's own new text is not urgent)."""
    body = INTRO + ATTR + q(friend)
    assert _reasons(rules, body), "friend's one-piece-a-line crisis not read"
