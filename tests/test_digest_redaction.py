"""Partners without show_sender never see the resident's phone number or address."""

from __future__ import annotations

from intake.digest import redact_contact
from intake.phones import find_phones


def test_phone_numbers_and_addresses_are_masked_however_written() -> None:
    text = (
        "山田です。090-1234-5678 か ０９０−１２３４−５６７８、家は0865(63)8515。"
        "メールは hanako.y@example.jp です。"
    )
    masked = redact_contact(text)
    assert find_phones(masked) == []
    assert "example.jp" not in masked
    assert masked.count("［電話番号］") == 3 and "［メールアドレス］" in masked


def test_ordinary_text_is_left_alone() -> None:
    text = "11月26日に学校で無視されました。3人くらいに。"
    assert redact_contact(text) == text


def test_a_date_with_a_time_is_kept_but_a_number_after_it_is_masked() -> None:
    assert redact_contact("2026-11-26 10時に電話します") == "2026-11-26 10時に電話します"
    masked = redact_contact("2026-11-26 090-1234-5678 に電話ください")
    assert masked.startswith("2026-11-26 ") and find_phones(masked) == []
