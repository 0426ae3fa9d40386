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
