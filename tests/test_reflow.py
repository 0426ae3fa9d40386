"""Fixed-width wrapping undone before triage (intake.reflow); all text synthetic."""

from __future__ import annotations

from intake.reflow import columns, unwrap_fixed_width

PARAGRAPH = (
    "いつもお世話になっております。高校二年の者です。最近、部活の先輩からの嫌がらせが"
    "続いていて、毎日学校に行くのがつらくなってきました。親には心配をかけたくないので"
    "何も言えていません。夜になると色々考えてしまって眠れず、もう死にたいと思うことが"
    "増えました。誰かに話を聞いてほしいです。よろしくお願いします。"
)


def wrap(text: str, width: int) -> str:
    """What a fixed-width mailer sends: a hard break before the column ``width``."""
    lines, line = [], ""
    for ch in text:
        if columns(line + ch) > width:
            lines.append(line)
            line = ""
        line += ch
    return "\n".join([*lines, line])


def cutting_width() -> int:
    """A wrap width (columns) whose break falls inside 死にたい in ``PARAGRAPH``."""
    return next(w for w in range(60, 90, 2) if "死にたい" not in wrap(PARAGRAPH, w))


def test_a_word_cut_by_fixed_width_wrapping_is_joined_again() -> None:
    wrapped = wrap(PARAGRAPH, cutting_width())
    assert "死にたい" not in wrapped
    unwrapped = unwrap_fixed_width(wrapped)
    assert "死にたい" in unwrapped
    # only breaks were removed, and a line that ended a sentence (。) kept its break
    assert unwrapped.replace("\n", "") == PARAGRAPH
    assert all(line.endswith("。") for line in unwrapped.split("\n")[:-1])


def test_paragraphs_stay_apart_and_each_is_joined() -> None:
    second = "先生に相談したほうがいいのか迷っています。返事を待っています。"
    text = wrap(PARAGRAPH, cutting_width()) + "\n\n" + second
    first, rest = unwrap_fixed_width(text).split("\n\n")
    assert "死にたい" in first and first.replace("\n", "") == PARAGRAPH
    assert rest == second


def test_a_phone_mail_with_lines_broken_by_hand_is_left_alone() -> None:
    text = (
        "もう無理かも\n学校に行けない\n親にも言えない\n"
        "死にたいなんて思わない\nでも消えたい気持ちはある\n助けて"
    )
    assert unwrap_fixed_width(text) == text


def test_long_sentences_one_a_line_are_not_taken_for_wrapping() -> None:
    """Lines a person ended: widths vary, so few are near the widest one."""
    text = "\n".join(
        [
            "先週から部活の先輩に無視されるようになりました。理由は分かりません。",
            "親には言えていません。",
            "クラスでも話せる人が少なくて、昼休みはずっと一人でいます。",
            "もう死にたいとは思わないけど、毎日がつらいです。",
            "どうしたらいいですか。",
        ]
    )
    assert unwrap_fixed_width(text) == text


def test_quoted_lines_are_never_joined() -> None:
    quoted = "\n".join("> " + line for line in wrap(PARAGRAPH, 70).split("\n"))
    assert unwrap_fixed_width(quoted) == quoted


def test_a_wider_quoted_line_url_or_reply_header_does_not_hide_the_wrap() -> None:
    """The wrap width was the widest line of the mail: one wider line stopped all joining
    (review rv9c R6)."""
    wrapped = wrap(PARAGRAPH, cutting_width())
    for tail in (
        "\n\n2026年11月26日(木) 10:00 笠岡市 ささえ愛相談窓口 <sasaean@city.kasaoka.okayama.jp>:\n"
        "> 受付番号: C000001",
        "\n\n> " + "前のメールで書いたことの続きです。" * 5,
        "\n\nhttps://example.jp/" + "a" * 100,
    ):
        assert "死にたい" in unwrap_fixed_width(wrapped + tail)


def test_a_short_mail_wrapped_over_three_lines_is_joined() -> None:
    """Three wrapped lines (two full, one short) were never joined: three full lines were
    needed (review rv9c R6)."""
    start = PARAGRAPH.index("死にたい") - 35  # 死 ends the first 36-character line
    short = PARAGRAPH[start : start + 80]
    body = "\n".join(short[i : i + 36] for i in range(0, len(short), 36))
    lines = body.split("\n")
    assert len(lines) == 3 and lines[0].endswith("死") and not lines[1].endswith("。")
    assert "死にたい" in unwrap_fixed_width(body)


def test_two_lines_a_person_broke_are_not_joined_unless_a_third_shows_the_wrap() -> None:
    text = "最近学校に行くのがつらくて毎日泣いています誰にも言えない\nどうしたらいいですか"
    assert unwrap_fixed_width(text) == text
