"""Unit tests for the parse stage on small synthetic mails built in each test.

Every mail here is synthetic: invented names, example domains, no real person.
ISO-2022-JP bytes with NEC characters are written out by hand (JIS code points),
because no Python codec can encode them -- that is the point of the tests.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intake.charsets import decode_iso2022jp, decode_text, normalise_label
from intake.parse import MAX_DEPTH, decode_header, html_to_text, letter_report, parse
from intake.quotes import OWN_TEXT_MARKERS, split_quoted

HEAD = (
    b"From: Taro Yamada <taro@example.jp>\r\n"
    b"To: soudan@city.example.jp\r\n"
    b"Message-ID: <unit-1@example.jp>\r\n"
    b"Date: Thu, 26 Nov 2026 10:00:00 +0900\r\n"
    b"MIME-Version: 1.0\r\n"
)


def mail(body: bytes, *, headers: bytes = b"", ctype: bytes = b"text/plain; charset=utf-8",
         cte: bytes = b"8bit") -> bytes:  # fmt: skip
    """A one-part mail with our standard headers."""
    return (
        HEAD
        + headers
        + b"Content-Type: "
        + ctype
        + b"\r\nContent-Transfer-Encoding: "
        + cte
        + b"\r\n\r\n"
        + body
    )


def b64(text: str, charset: str = "utf-8") -> bytes:
    return base64.b64encode(text.encode(charset))


# JIS X 0208 code points written by hand (ISO-2022-JP is 7-bit: ESC $ B ... ESC ( B).
JIS_MARU1 = b"-!"  # ① (NEC row 13)
JIS_KABU = b"-j"  # ㈱
JIS_NUMERO = b"-b"  # №
JIS_ROMAN3 = b"-7"  # Ⅲ (CP932 0x8756)
JIS_TEST = b"%F%9%H"  # テスト
JIS_TILDE = b"!A"  # JIS 0x2141: FULLWIDTH TILDE under CP50221


def jis(inner: bytes) -> bytes:
    return b"\x1b$B" + inner + b"\x1b(B"


# --- charsets -----------------------------------------------------------------------


def test_iso2022jp_nec_special_characters_decode():
    text, ok = decode_iso2022jp(jis(JIS_TEST + JIS_MARU1 + JIS_KABU + JIS_NUMERO + JIS_ROMAN3))
    assert ok
    assert text == "テスト①㈱№Ⅲ"


def test_iso2022jp_wave_dash_comes_out_as_fullwidth_tilde_like_windows():
    text, ok = decode_iso2022jp(jis(JIS_TILDE))
    assert ok
    assert text == "～"


def test_iso2022jp_halfwidth_kana_via_esc_paren_i_and_shift_out():
    esc_i, _ = decode_iso2022jp(b"\x1b(I6E\x1b(B!")
    so_si, _ = decode_iso2022jp(b"\x0e6E\x0fok")
    assert esc_i == "ｶﾅ!"
    assert so_si == "ｶﾅok"


def test_iso2022jp_nec_selected_ibm_row_decodes_to_kanji():
    # JIS 0x7921 is the first NEC-selected IBM extension character (CP932 0xED40).
    text, ok = decode_iso2022jp(jis(b"y!"))
    assert ok
    assert text == b"\xed\x40".decode("cp932")


def test_iso2022jp_jis_x_0212_via_esc_dollar_paren_d():
    text, ok = decode_iso2022jp(b"\x1b$(D" + b"0!" + b"\x1b(B")
    assert ok
    assert text == b"\x8f\xb0\xa1".decode("euc_jp")


def test_iso2022jp_with_8bit_bytes_is_not_strict():
    _text, ok = decode_iso2022jp("日本".encode("euc_jp"))
    assert not ok


def test_shift_jis_label_decodes_cp932_extensions():
    decoded = decode_text("丸数字①と～".encode("cp932"), "Shift_JIS")
    assert decoded.text == "丸数字①と～"
    assert decoded.problems == []


def test_euc_jp_under_iso2022jp_label_is_sniffed_and_recorded():
    decoded = decode_text("メールアドレスが見つかりません".encode("euc_jp"), "iso-2022-jp")
    assert decoded.text == "メールアドレスが見つかりません"
    assert "charset-fallback:iso-2022-jp->euc-jp-sniffed" in decoded.problems


def test_cp932_under_iso2022jp_label_is_sniffed():
    decoded = decode_text("相談したいことがあります①".encode("cp932"), "ISO-2022-JP")
    assert decoded.text == "相談したいことがあります①"
    assert decoded.charset == "cp932"


def test_utf8_under_latin1_label_is_utf8():
    decoded = decode_text("こんにちは".encode(), "iso-8859-1")
    assert decoded.text == "こんにちは"
    assert decoded.problems == ["charset-fallback:iso-8859-1->utf-8-sniffed"]


def test_gb2312_label_decodes_gbk_only_characters():
    # 「鍩」 is in GBK but not in GB2312: Exchange labels GBK text as gb2312.
    decoded = decode_text("无法送达鍩".encode("gbk"), "gb2312")
    assert decoded.text == "无法送达鍩"


def test_unknown_label_is_recorded_and_bytes_sniffed():
    decoded = decode_text("テスト".encode(), "x-unknown")
    assert decoded.text == "テスト"
    assert "charset-unknown:x-unknown" in decoded.problems


def test_a_stray_bad_byte_in_utf8_keeps_the_label():
    decoded = decode_text("Здравствуйте, это тест".encode() + b"\xaa", "utf-8")
    assert decoded.text.startswith("Здравствуйте, это тест")
    assert "undecodable-bytes" in decoded.problems


def test_label_never_selects_a_non_text_codec():
    assert normalise_label("base64") is None
    assert normalise_label('"Shift_JIS"') == "cp932"


# --- headers ------------------------------------------------------------------------


def test_iso2022jp_subject_with_nec_characters_is_decoded():
    word = base64.b64encode(jis(JIS_TEST + JIS_MARU1)).decode()
    subject = decode_header(f"=?ISO-2022-JP?B?{word}?=")
    assert subject == "テスト①"


def test_encoded_words_split_inside_a_character_are_joined_before_decoding():
    raw = "相談です".encode()
    first, second = raw[:4], raw[4:]  # the split falls inside 談
    header = (
        f"=?UTF-8?B?{base64.b64encode(first).decode()}?=\r\n"
        f" =?UTF-8?B?{base64.b64encode(second).decode()}?="
    )
    assert decode_header(header) == "相談です"


def test_jis_pair_split_across_two_encoded_words_is_joined():
    raw = jis(JIS_TEST)
    header = (
        f"=?iso-2022-jp?B?{base64.b64encode(raw[:5]).decode()}?= "
        f"=?iso-2022-jp?B?{base64.b64encode(raw[5:]).decode()}?="
    )
    assert decode_header(header) == "テスト"


def test_q_encoded_word_and_literal_text_keep_their_spaces():
    assert decode_header("Re: =?utf-8?Q?=E7=9B=B8=E8=AB=87_test?= again") == "Re: 相談 test again"


def test_raw_utf8_subject_without_encoding_is_decoded_and_recorded():
    letter = parse(mail(b"body", headers="Subject: 生の件名\r\n".encode()))
    assert letter.subject == "生の件名"
    assert "subject:raw-8bit-header" in letter.problems


def test_raw_shift_jis_subject_is_decoded():
    letter = parse(mail(b"body", headers=b"Subject: " + "件名テスト".encode("cp932") + b"\r\n"))
    assert letter.subject == "件名テスト"


def test_japanese_display_name_is_decoded():
    name = base64.b64encode(jis(b";3ED" + b"B@O:")).decode()  # 山田太郎
    raw = mail(b"x").replace(
        b"From: Taro Yamada <taro@example.jp>",
        f"From: =?ISO-2022-JP?B?{name}?= <taro@example.jp>".encode(),
    )
    letter = parse(raw)
    assert letter.from_name == "山田太郎"
    assert letter.from_addr == "taro@example.jp"


def test_carrier_address_with_consecutive_and_trailing_dots_is_kept():
    raw = mail(b"x").replace(
        b"From: Taro Yamada <taro@example.jp>", b'From: "taro" <taro..yamada.@DoCoMo.ne.jp>'
    )
    letter = parse(raw)
    assert letter.from_addr == "taro..yamada.@docomo.ne.jp"


def test_bare_carrier_address_without_angle_brackets_is_kept():
    raw = mail(b"x").replace(b"From: Taro Yamada <taro@example.jp>", b"From: .taro..@ezweb.ne.jp")
    assert parse(raw).from_addr == ".taro..@ezweb.ne.jp"


def test_null_sender_gives_empty_from_addr_without_no_from_problem():
    raw = mail(b"x").replace(b"From: Taro Yamada <taro@example.jp>", b"From: <>")
    letter = parse(raw)
    assert letter.from_addr == ""
    assert "no-from" not in letter.problems


def test_missing_from_message_id_and_bad_date_are_recorded():
    raw = b"Subject: hi\r\nDate: someday soon\r\n\r\nhello\r\n"
    letter = parse(raw)
    assert {"no-from", "no-message-id", "bad-date"} <= set(letter.problems)
    assert letter.text == "hello"


def test_date_is_timezone_aware_and_ids_are_collected():
    raw = mail(
        b"x",
        headers=b"In-Reply-To: <ack-1@city.example.jp>\r\n"
        b"References: <a@x.jp>\r\n <ack-1@city.example.jp>\r\n",
    )
    letter = parse(raw)
    assert letter.date is not None
    assert letter.date.utcoffset() == timedelta(hours=9)
    assert letter.message_id == "<unit-1@example.jp>"
    assert letter.in_reply_to == "<ack-1@city.example.jp>"
    assert letter.references == ["<a@x.jp>", "<ack-1@city.example.jp>"]
    assert letter.to == ["soudan@city.example.jp"]


def test_headers_are_lower_cased_and_decoded():
    letter = parse(mail(b"x", headers=b"X-Custom: =?utf-8?B?" + b64("値") + b"?=\r\n"))
    assert letter.headers["x-custom"] == ["値"]
    assert letter.header("X-CUSTOM") == "値"


# --- bodies -------------------------------------------------------------------------


def test_iso2022jp_body_with_nec_characters_is_decoded():
    body = jis(JIS_TEST + JIS_MARU1 + JIS_KABU) + b"\r\n"
    letter = parse(mail(body, ctype=b"text/plain; charset=ISO-2022-JP", cte=b"7bit"))
    assert letter.body == "テスト①㈱"
    assert letter.text == "テスト①㈱"
    assert letter.problems == []


def test_halfwidth_kana_body_via_esc_paren_i():
    body = b"\x1b(I1]:\x1b(B\r\n"  # ｱﾝｺ
    letter = parse(mail(body, ctype=b"text/plain; charset=iso-2022-jp", cte=b"7bit"))
    assert letter.text == "ｱﾝｺ"


def test_utf8_base64_and_quoted_printable_bodies():
    b = parse(mail(b64("ひとりぼっちです"), cte=b"base64"))
    qp = b"=E3=81=8A=E3=81=AF=E3=82=88=E3=81=86=\r\n=E3=81=94=E3=81=96"  # soft line break
    q = parse(mail(qp, cte=b"quoted-printable"))
    assert b.text == "ひとりぼっちです"
    assert q.text == "おはようござ"


def test_utf8_bom_before_first_header_is_stripped():
    letter = parse(b"\xef\xbb\xbf" + mail("本文".encode(), headers=b"Subject: bom\r\n"))
    assert letter.subject == "bom"
    assert letter.from_addr == "taro@example.jp"
    assert "bom-before-headers" in letter.problems


def test_part_without_charset_containing_jis_escapes_is_decoded():
    letter = parse(mail(jis(JIS_TEST) + b"\r\n", ctype=b"text/plain", cte=b"7bit"))
    assert letter.text == "テスト"
    assert "\x1b" not in letter.body


def test_8bit_body_without_charset_is_sniffed():
    letter = parse(mail("居場所がない".encode("cp932"), ctype=b"text/plain"))
    assert letter.text == "居場所がない"
    assert "charset-missing:cp932-sniffed" in letter.problems


def test_wrong_label_falls_back_and_is_recorded():
    letter = parse(mail("学校に行けない".encode(), ctype=b"text/plain; charset=euc-kr"))
    assert letter.text == "学校に行けない"
    assert "charset-fallback:euc-kr->utf-8-sniffed" in letter.problems


def test_undecodable_bytes_are_replaced_and_recorded():
    letter = parse(mail(b"\x81\x81\xff\xfe\x80\xa0\x81", ctype=b"text/plain; charset=utf-8"))
    assert isinstance(letter.body, str)
    assert any(p.startswith(("undecodable", "charset-")) for p in letter.problems)


def test_html_only_mail_is_converted_with_line_breaks():
    html = "<html><head><style>p{}</style></head><body><p>一行目</p>二行目<br>三行目</body></html>"
    letter = parse(mail(html.encode(), ctype=b"text/html; charset=utf-8"))
    assert letter.html_only
    assert letter.text.split("\n") == ["一行目", "二行目", "三行目"]


def test_html_charset_from_meta_tag_when_header_has_none():
    html = '<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">'
    html += "<p>デコメ本文</p>"
    letter = parse(mail(html.encode("cp932"), ctype=b"text/html"))
    assert "デコメ本文" in letter.text


ALT = (
    b"Content-Type: multipart/alternative; boundary=ALT\r\n\r\n"
    b"--ALT\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n"
    b"--ALT\r\nContent-Type: text/html; charset=utf-8\r\n\r\n%s\r\n"
    b"--ALT--\r\n"
)


def test_alternative_prefers_plain_text():
    raw = HEAD + ALT % ("プレーン本文".encode(), "<p>HTML本文</p>".encode())
    letter = parse(raw)
    assert letter.text == "プレーン本文"
    assert not letter.html_only


def test_alternative_with_empty_plain_stub_uses_html():
    raw = HEAD + ALT % (b"  \r\n", "<div>HTMLだけに書いた</div>".encode())
    letter = parse(raw)
    assert letter.text == "HTMLだけに書いた"
    assert letter.html_only


def test_alternative_with_html_notice_stub_uses_html():
    raw = HEAD + ALT % ("このメールはHTML形式です。".encode(), "<p>本当の相談</p>".encode())
    assert parse(raw).text == "本当の相談"


def test_forwarded_rfc822_part_is_an_attachment_not_the_body():
    raw = HEAD + (
        b"Content-Type: multipart/mixed; boundary=MIX\r\n\r\n"
        b"--MIX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "転送します。".encode()
        + b"\r\n--MIX\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: other@example.jp\r\nSubject: =?utf-8?B?"
        + b64("元の件名")
        + b"?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "中の本文".encode()
        + b"\r\n--MIX--\r\n"
    )
    letter = parse(raw)
    assert letter.text == "転送します。"
    assert "中の本文" not in letter.body
    assert [(a.name, a.content_type) for a in letter.attachments] == [
        ("元の件名", "message/rfc822")
    ]


def test_attachment_names_rfc2231_rfc2047_and_raw_bytes():
    raw = HEAD + (
        b"Content-Type: multipart/mixed; boundary=MIX\r\n\r\n"
        b"--MIX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfiles\r\n"
        b"--MIX\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment;\r\n filename*0*=UTF-8''%E5%AD%A6%E6%A0%A1;\r\n"
        b" filename*1*=%E3%81%AE.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n"
        b'--MIX\r\nContent-Type: image/jpeg; name="=?ISO-2022-JP?B?'
        + base64.b64encode(jis(JIS_TEST))
        + b'?=.jpg"\r\nContent-Disposition: attachment\r\n\r\nxyz\r\n'
        b'--MIX\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename="'
        + jis(JIS_TEST)
        + b'.txt"\r\n\r\nhello\r\n'
        b"--MIX--\r\n"
    )
    letter = parse(raw)
    assert letter.text == "files"
    assert [(a.name, a.content_type, a.size) for a in letter.attachments] == [
        ("学校の.pdf", "application/pdf", 3),
        ("テスト.jpg", "image/jpeg", 3),
        ("テスト.txt", "text/plain", 5),
    ]


def test_multipart_report_delivery_status_is_a_bounce():
    raw = (
        b"From: MAILER-DAEMON@mx.example.jp\r\nSubject: Undelivered Mail\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=R\r\n\r\n"
        b"--R\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        b"--R\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.jp\r\n\r\nFinal-Recipient: rfc822; x@example.jp\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n"
        b"--R--\r\n"
    )
    letter = parse(raw)
    assert letter.bounce
    assert "could not be delivered" in letter.text


def test_plain_person_mail_is_not_a_bounce():
    assert not parse(mail("つらいです".encode())).bounce


def test_oversized_mail_is_stored_with_headers_only():
    raw = mail(b"a" * 5000, headers=b"Subject: big\r\n")
    letter = parse(raw, max_size=1000)
    assert "oversized" in letter.problems
    assert letter.subject == "big"
    assert letter.from_addr == "taro@example.jp"
    assert letter.body == ""


def nested(depth: int) -> bytes:
    body = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + "深い".encode() + b"\r\n"
    for i in range(depth):
        body = (
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
            + body
            + b"\r\n--b%d--\r\n" % i
        )
    return HEAD + body


def test_moderate_nesting_is_walked():
    assert parse(nested(10)).text == "深い"


def test_deep_nesting_is_capped_and_recorded():
    letter = parse(nested(MAX_DEPTH + 5))
    assert "mime-too-deep" in letter.problems


def test_pathological_nesting_beyond_the_parser_stack_does_not_raise():
    letter = parse(nested(1500))
    assert "mime-too-deep" in letter.problems
    assert letter.from_addr == "taro@example.jp"


def test_multipart_without_boundary_keeps_its_text():
    raw = HEAD + b"Content-Type: multipart/mixed\r\n\r\nplain words here\r\n"
    letter = parse(raw)
    assert "plain words here" in letter.body
    assert "multipart-without-parts" in letter.problems


def test_garbage_input_does_not_raise():
    for raw in (
        b"",
        b"\x00\xff" * 50,
        b"::::\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=",
    ):
        letter = parse(raw)
        assert isinstance(letter.problems, list)


def test_body_and_text_split_quotes_from_our_acknowledgement():
    body = (
        "返信ありがとうございます。まだ眠れません。\r\n"
        "\r\n"
        "2026年11月26日(木) 10:00 笠岡市 相談窓口 <soudan@city.example.jp>:\r\n"
        "> ご相談を受け付けました。担当者からご連絡します。\r\n"
    )
    letter = parse(mail(body.encode()))
    assert letter.text == "返信ありがとうございます。まだ眠れません。"
    assert "ご相談を受け付けました" in letter.quoted
    assert "ご相談を受け付けました" in letter.body


# --- quotes -------------------------------------------------------------------------


def test_split_quoted_english_attribution_over_two_lines():
    text = (
        "I still need help.\n\nOn Thu, Nov 26, 2026 at 10:00 AM City Desk\n"
        "<desk@example.jp> wrote:\n> Thank you"
    )
    new, quoted = split_quoted(text)
    assert new == "I still need help."
    assert quoted.startswith("On Thu")


def test_split_quoted_original_message_and_forward_separators():
    separators = ("-----Original Message-----", "-----元のメッセージ-----")
    for sep in (*separators, "--- Forwarded message ---", "Begin forwarded message:"):
        new, quoted = split_quoted(f"新しい文\n{sep}\n古い文")
        assert new == "新しい文"
        assert quoted == f"{sep}\n古い文"


def test_split_quoted_fullwidth_quote_marks_and_interleaved_reply():
    text = "＞ 前のメール\nそれに答えます\n> もう一つ\n答え二"
    new, quoted = split_quoted(text)
    assert new == "それに答えます\n答え二"
    assert quoted == "＞ 前のメール\n> もう一つ"


def test_split_quoted_signature_separator():
    new, quoted = split_quoted("助けてください\n-- \n山田\n090-0000-0000")
    assert new == "助けてください"
    assert quoted.startswith("-- ")


def test_split_quoted_keeps_a_residents_line_that_merely_has_a_colon():
    text = "理由は次の通りです:\n家に帰りたくない。\n時間: 10:00 ごろ"
    new, quoted = split_quoted(text)
    assert new == text
    assert quoted == ""


def test_split_quoted_outlook_header_block():
    text = "続きです\n\nFrom: 相談窓口\nSent: Thursday, November 26, 2026 10:00\nSubject: 受付"
    new, quoted = split_quoted(text)
    assert new == "続きです"
    assert quoted.startswith("From: 相談窓口")


# The pre-scan (``quotes._may_matter``) only decides which lines are tested; the split must
# be the one testing every line gives. Lines are drawn from pieces of every rule's trigger,
# in both cases and full width, so the generator reaches the rules' edges.
_QUOTE_PIECES = [
    "> ", "＞", "--", "-- ", "-----Original Message-----", "-----元のメッセージ-----",
    "__________", "Begin forwarded message:", "BEGIN FORWARDED MESSAGE：", "--- 転送 ---",
    "On Thu, 26 Nov 2026 at 10:00, ", "2026年11月26日(木) 10:00 ", "2026/11/26", "2026-11-26",
    "2026.11.26", "２０２６年１１月２６日", "10:00", "１０：００", "Thu,", "MON,", "wrote:",
    "WROTE：", "a écrit :", "schrieb:", "escribió:", "書きました", "書きました:",
    "からのメッセージ。", "taro@example.jp", "<taro@example.jp>", "<", ">:", ":", "：",
    "From: 山田", "差出人: 山田", "Sent: 2026", "送信日時: 2026", "件名: 相談", "Date: x",
    OWN_TEXT_MARKERS[0], "相談したいです", "理由は次の通りです:", "090-1234-5678", " ", "\t",
    "\u3000", "\r", "on ", "Le ", "1.5", "ſchrieb:", "\x0b",
]  # fmt: skip
_QUOTE_LINES = st.lists(st.sampled_from(_QUOTE_PIECES), max_size=4).map("".join)


@settings(max_examples=600, deadline=None)
@given(st.lists(_QUOTE_LINES, max_size=12))
def test_split_quoted_prescan_gives_the_split_of_testing_every_line(lines: list[str]) -> None:
    from intake.quotes import _split

    text = "\n".join(lines)
    assert split_quoted(text) == ((_split(text.split("\n"), None)) if text else ("", ""))


def test_a_changed_acknowledgement_marker_is_still_split_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new opening line for our acknowledgement (a marker without a colon, quote mark or
    date) must still cut our text off the reply: the pre-scan follows the markers in use.
    Otherwise the acknowledgement's help-line wording is triaged as the resident's words."""
    from intake import quotes

    marker = "ご相談ありがとうございます。"
    monkeypatch.setattr(quotes, "OWN_TEXT_MARKERS", (*quotes.OWN_TEXT_MARKERS, marker))
    text = f"助けてください\n{marker}\nつらい時は電話してください"
    assert quotes.split_quoted(text) == ("助けてください", f"{marker}\nつらい時は電話してください")


def test_split_quoted_prescan_skips_only_lines_without_any_trigger() -> None:
    from intake.quotes import _lines_that_may_matter

    text = "相談です\n2026年11月26日 10:00 山田 <a@b.jp>:\n\n> 引用\n本文\n-- \n署名"
    assert _lines_that_may_matter(text) == [1, 3, 5]
    # An English attribution whose first line has nothing but the weekday's comma.
    text = "Thanks\nOn Thu, Nov 26 Taro Yamada\n<taro@example.jp> wrote:\n> old"
    assert _lines_that_may_matter(text) == [1, 2, 3]
    assert split_quoted(text) == (
        "Thanks",
        "On Thu, Nov 26 Taro Yamada\n<taro@example.jp> wrote:\n> old",
    )


# --- html and report ----------------------------------------------------------------


def test_html_to_text_skips_scripts_and_keeps_inline_runs_together():
    assert html_to_text("<script>x()</script><p>丸<b>数字</b>テスト</p>") == "丸数字テスト"


def test_letter_report_has_the_cli_keys():
    letter = parse(mail("相談です".encode(), headers=b"Subject: test\r\n"))
    report = letter_report("a.eml", letter)
    assert report["path"] == "a.eml"
    assert report["from"] == "taro@example.jp"
    assert report["subject"] == "test"
    assert report["text"] == "相談です"
    assert report["auto_reply"] is False
    assert report["bounce"] is False
    assert set(report) >= {"quoted", "attachments", "problems"}


def test_gmail_attribution_wrapped_over_two_lines_starts_the_quote():
    text = (
        "ありがとう\n\n2026年11月26日(木) 10:00 笠岡市 相談窓口 <\nsoudan@city.example.jp>:\n本文"
    )
    new, quoted = split_quoted(text)
    assert new == "ありがとう"
    assert quoted.endswith("本文")


def test_our_acknowledgement_quoted_without_any_marker_is_quoted():
    text = (
        "まだつらいです\n\n"
        f"{OWN_TEXT_MARKERS[0]}\n"
        "いま命や体に危険があるときは、すぐに電話してください。"
    )
    new, quoted = split_quoted(text)
    assert new == "まだつらいです"
    assert "命や体に危険" in quoted


def test_own_text_marker_matches_the_acknowledgement_template():
    template = Path(__file__).resolve().parents[1] / "templates" / "resident" / "ack.txt.j2"
    if not template.is_file():
        pytest.skip("templates/resident/ack.txt.j2 not present")
    first_line = template.read_text("utf-8").lstrip().splitlines()[0].strip()
    assert first_line in OWN_TEXT_MARKERS


def test_bottom_posted_reply_below_an_attribution_is_new_text():
    text = "2026年11月26日(木) 10:00 山田 <yamada@example.jp>:\n> 来週は?\n\n水曜日なら大丈夫です。"
    new, quoted = split_quoted(text)
    assert new == "水曜日なら大丈夫です。"
    assert quoted.startswith("2026年11月26日")


def test_utf8_body_under_shift_jis_label_is_utf8():
    body = "家族の介護で学校に行けなくなりました。".encode()
    letter = parse(mail(body, ctype=b"text/plain; charset=shift_jis"))
    assert letter.text == "家族の介護で学校に行けなくなりました。"
    assert "charset-fallback:shift_jis->utf-8-sniffed" in letter.problems


def test_multipart_whose_boundary_never_occurs_is_resplit_on_the_real_one():
    raw = HEAD + (
        b'Content-Type: multipart/mixed; boundary="declared"\r\n\r\n'
        b"--real\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "本当の本文".encode()
        + b"\r\n--real--\r\n"
    )
    letter = parse(raw)
    assert letter.text == "本当の本文"
    assert "mime-boundary-recovered" in letter.problems


def test_header_line_without_colon_does_not_end_the_header_block():
    raw = (
        b"From: a@example.jp\r\nTo: x@example.jp,\r\ny@example.jp\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + "本文です".encode()
    )
    letter = parse(raw)
    assert letter.text == "本文です"
    assert letter.to == ["x@example.jp", "y@example.jp"]
    assert "header-line-without-colon" in letter.problems


# --- ISO-2022-JP through the euc_jp codec (charsets._jis0208_by_codec) ---------------

_JIS_PIECES = [
    b"\x1b$B", b"\x1b(B", b"\x1b(J", b"\x1b$@", b"\x1b(I", b"\x1b$(D", b"\r\n", b" ", b"\t",
    b"\x01", b"\x7f", b"\x1b", b"A", b"!A", b"!B", b"!]", b"\"L", b"-!", b"-(", b"y!", b"u!",
    b"|~", b"~~", b"0!", b"$\"", b"F|", b"K\\",
]  # fmt: skip


def test_every_jis_x0208_pair_reads_as_the_bytewise_decoder_reads_it() -> None:
    from intake.charsets import _decode_iso2022jp_bytewise

    for j1 in range(0x21, 0x7F):
        for j2 in range(0x21, 0x7F):
            data = b"\x1b$B" + bytes((j1, j2)) + b"\x1b(B"
            assert decode_iso2022jp(data) == _decode_iso2022jp_bytewise(data), (j1, j2)


def test_a_plain_jis_run_takes_the_codec_and_keeps_cp50221_readings() -> None:
    from intake.charsets import _jis0208_by_codec

    # 相談 ～ − ∥ (0x2141, 0x215D, 0x2142: WAVE DASH, MINUS, DOUBLE VERTICAL LINE in euc_jp)
    assert _jis0208_by_codec(b"\x41\x6a\x43\x4c !A!]!B\r\n") == "相談 ～－∥\r\n"
    assert _jis0208_by_codec(b"-!") is None  # NEC row 13 (①): not in euc_jp
    assert _jis0208_by_codec(b"0!0") is None  # odd: the pair table reports it
    assert decode_iso2022jp(b"\x1b$B-!\x1b(B") == ("①", True)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(_JIS_PIECES),
            st.tuples(st.integers(0x21, 0x7E), st.integers(0x21, 0x7E)).map(bytes),
        ),
        max_size=14,
    ).map(b"".join)
)
def test_iso2022jp_reads_as_the_bytewise_decoder_reads_it(data: bytes) -> None:
    from intake.charsets import _decode_iso2022jp_bytewise

    assert decode_iso2022jp(data) == _decode_iso2022jp_bytewise(data)
