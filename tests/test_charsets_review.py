"""Review rv9a F5, F6 and F9: words a resident wrote must reach triage as written.

F5: ``format=flowed`` (RFC 3676; Apple Mail and Thunderbird) soft line breaks are undone
before the quote split, so ``死に␠/たい`` is read as ``死にたい``. F6: UTF-8 under a
Shift_JIS, GB2312 or other legacy multi-byte label is read as UTF-8 with the fallback
recorded, and real legacy text that happens to be valid UTF-8 keeps its label. F9: EUC-JP
髙 from Windows encoders, and unlabelled bytes that are as well half-width katakana as
EUC-JP kanji. All mails are synthetic. Pure decoding and parsing: no servers needed.
"""

from __future__ import annotations

import base64

import pytest

from intake.charsets import AMBIGUOUS_KANA, decode_text
from intake.parse import parse
from intake.pipeline import decide
from intake.rules import RuleSet

OWN = "sasaean@city.kasaoka.okayama.jp"


def mail(body: bytes, ctype: str, subject: bytes = b"=?UTF-8?B?55u46KuH?=") -> bytes:
    """A synthetic resident mail with an 8-bit body of the given bytes and Content-Type."""
    head = (
        b"From: Sora <sora.test@docomo.ne.jp>\r\nTo: " + OWN.encode() + b"\r\n"
        b"Subject: " + subject + b"\r\n"
        b"Date: Thu, 26 Nov 2026 22:00:00 +0900\r\nMessage-ID: <charsets-1@docomo.ne.jp>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: " + ctype.encode() + b"\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return head + body


def flowed(text: str, params: str = "; delsp=yes") -> bytes:
    """A UTF-8 ``format=flowed`` mail whose body lines are ``text`` as given."""
    body = text.replace("\n", "\r\n").encode("utf-8")
    return mail(body, "text/plain; charset=utf-8; format=flowed" + params)


# --- F5: format=flowed ---------------------------------------------------------------------


def test_flowed_delsp_soft_break_inside_a_word_is_joined_and_alerts(rules: RuleSet) -> None:
    raw = flowed(
        "もう本当に無理で、毎日学校に行くのがつらくて、家にも居場所がなくて、死に \nたいです。\n"
    )
    letter = parse(raw)
    assert "居場所がなくて、死にたいです。" in letter.text
    triage, _block = decide(letter, rules, OWN)
    assert triage.urgent


def test_flowed_without_delsp_keeps_the_space_of_a_soft_break() -> None:
    letter = parse(flowed("I do not want to \ngo on living.\n", params=""))
    assert "I do not want to go on living." in letter.text


def test_flowed_quoted_lines_join_only_with_lines_of_the_same_depth() -> None:
    lines_sent = [
        "返信です。",
        "",
        "> 受付番号は ",
        "> C000001です。 ",
        ">> 前の ",
        ">> 引用",
        "> 最後",
    ]
    raw = flowed("\n".join(lines_sent) + "\n")
    body = parse(raw).body
    lines = body.split("\n")
    assert "> 受付番号はC000001です。" in lines
    assert ">> 前の引用" in lines
    assert "> 最後" in lines


def test_flowed_signature_separator_is_never_joined() -> None:
    body = parse(flowed("よろしくお願いします \n-- \nSora\n")).body
    assert body.split("\n")[:3] == ["よろしくお願いします", "-- ", "Sora"]


def test_flowed_space_stuffed_line_loses_its_stuffing_space() -> None:
    body = parse(flowed("こんばんは。\n From the station I walked home.\n")).body
    assert "\nFrom the station I walked home." in body


def test_flowed_break_in_an_attached_forwarded_mail_is_joined_too() -> None:
    inner = (
        b"From: friend@example.jp\r\nSubject: =?UTF-8?B?44GU44KB44KT44Gt?=\r\n"
        b"Content-Type: text/plain; charset=utf-8; format=flowed; delsp=yes\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
        + "今までありがとう。もう死ぬことにし \r\nた。\r\n".encode()
    )
    outer = (
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "友達からこんなメールが来ました。\r\n".encode()
        + b"--b1\r\nContent-Type: message/rfc822\r\n\r\n"
        + inner
        + b"\r\n--b1--\r\n"
    )
    letter = parse(mail(outer, 'multipart/mixed; boundary="b1"'))
    assert "もう死ぬことにした。" in letter.forwarded


def test_trailing_space_without_format_flowed_is_not_a_soft_break() -> None:
    """Guard: only a part that declares format=flowed is unwrapped."""
    raw = mail("一行目 \r\n二行目\r\n".encode(), "text/plain; charset=utf-8")
    assert parse(raw).body.startswith("一行目 \n二行目")


# --- F6: UTF-8 under a legacy multi-byte label ------------------------------------------------

MISLABELLED = [
    ("死にたい", "Shift_JIS"),
    ("消えたい", "Shift_JIS"),
    ("助けて", "Windows-31J"),
    ("リスカした", "shift_jis"),
    ("しにたい", "Shift_JIS"),
    ("死にたい", "GB2312"),
    ("消えたい", "gb2312"),
    ("もう限界😭", "Shift_JIS"),
    ("Não quero mais viver.", "Shift_JIS"),
]


@pytest.mark.parametrize(("words", "label"), MISLABELLED)
def test_utf8_under_a_legacy_multibyte_label_is_read_as_utf8(words: str, label: str) -> None:
    decoded = decode_text(words.encode("utf-8"), label)
    assert decoded.text == words
    assert decoded.charset == "utf-8"
    assert decoded.problems == [f"charset-fallback:{label.lower()}->utf-8-sniffed"]


def test_utf8_body_labelled_shift_jis_alerts_and_records_the_fallback(rules: RuleSet) -> None:
    raw = mail("もう死にたい\r\n".encode(), "text/plain; charset=Shift_JIS")
    letter = parse(raw)
    assert "もう死にたい" in letter.text
    assert "charset-fallback:shift_jis->utf-8-sniffed" in letter.problems
    triage, _block = decide(letter, rules, OWN)
    assert triage.urgent


def test_utf8_subject_in_a_shift_jis_encoded_word_is_read_as_utf8() -> None:
    word = base64.b64encode("死にたい".encode()).decode()
    raw = mail(b"...\r\n", "text/plain; charset=utf-8", f"=?Shift_JIS?B?{word}?=".encode())
    letter = parse(raw)
    assert letter.subject == "死にたい"
    assert "subject:charset-fallback:shift_jis->utf-8-sniffed" in letter.problems


@pytest.mark.parametrize(
    ("text", "codec", "label"),
    [
        ("ﾃｨ", "cp932", "Shift_JIS"),  # UTF-8 "è"
        ("ﾄ吸", "cp932", "Shift_JIS"),  # UTF-8 "ċz"
        ("盒，", "cp932", "Shift_JIS"),  # UTF-8 "ᴁC"
        ("ﾃ､SN", "cp932", "Shift_JIS"),  # UTF-8 "äSN"
        ("毛P", "gbk", "GB2312"),  # UTF-8 "ëP"
        ("c疲", "gbk", "GB2312"),  # UTF-8 "cƣ"
        ("冒sc", "gbk", "GBK"),  # UTF-8 "ðsc"
        ("a체z", "cp949", "EUC-KR"),  # UTF-8 "aüz"
    ],
)
def test_legacy_text_that_is_also_valid_utf8_keeps_its_label(
    text: str, codec: str, label: str
) -> None:
    """Guard against taking any valid UTF-8: these real legacy strings are valid UTF-8 too
    (a naive "valid UTF-8 wins" reads them as the stray Latin letters in the comments)."""
    data = text.encode(codec)
    data.decode("utf-8")  # the premise: the bytes are valid UTF-8
    decoded = decode_text(data, label)
    assert decoded.text == text
    assert decoded.problems == []


# --- F9: EUC-JP 髙 and half-width katakana ---------------------------------------------------


def test_windows_euc_jp_takahashi_is_read_as_the_ibm_kanji() -> None:
    """CP51932 writes 髙 (NEC-selected IBM row, JIS 0x7C62) as EUC 0xFC 0xE2."""
    data = bytes((0x7C | 0x80, 0x62 | 0x80)) + "橋です。〜よろしく".encode("euc_jp")
    decoded = decode_text(data, "EUC-JP")
    assert decoded.text == "髙橋です。〜よろしく"
    assert decoded.problems == []


def test_euc_jp_takahashi_in_a_mail_body_is_read_as_written() -> None:
    body = bytes((0xFC, 0xE2)) + "橋です。相談があります。\r\n".encode("euc_jp")
    assert parse(mail(body, "text/plain; charset=EUC-JP")).text.startswith("髙橋です。")


def test_unlabelled_bytes_that_are_kanji_or_half_width_kana_record_the_doubt() -> None:
    kana = decode_text("ｼﾆﾀｲ ﾀｽｹﾃ".encode("cp932"), None)
    assert AMBIGUOUS_KANA in kana.problems
    kanji = decode_text("自殺".encode("euc_jp"), None)
    assert (kanji.text, AMBIGUOUS_KANA in kanji.problems) == ("自殺", True)


def test_raw_8bit_subject_of_half_width_kana_records_the_doubt() -> None:
    letter = parse(mail(b"...\r\n", "text/plain; charset=utf-8", "ﾀｽｹﾃ".encode("cp932")))
    assert f"subject:{AMBIGUOUS_KANA}" in letter.problems


def test_unlabelled_euc_jp_sentence_is_not_in_doubt() -> None:
    """Guard: kana in the EUC-JP reading settle it (the doubt is for kanji alone)."""
    decoded = decode_text("学校へ行きたくない".encode("euc_jp"), None)
    assert decoded.text == "学校へ行きたくない"
    assert AMBIGUOUS_KANA not in decoded.problems
