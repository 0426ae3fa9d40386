from __future__ import annotations

import pytest

from intake.phones import find_phones


def test_full_width_mobile_number_is_found() -> None:
    assert find_phones("電話は０９０−１２３４−５６７８です") == ["090-1234-5678"]


def test_fixed_line_and_bare_digits() -> None:
    assert find_phones("家 0865-63-8515 携帯 08012345678") == ["0865-63-8515", "08012345678"]


def test_postcode_and_dates_are_not_phones() -> None:
    assert find_phones("〒714-8601 2026年11月26日 10:00") == []


@pytest.mark.parametrize("text", ["受付番号 C000001 2020-1-1 の件", "0:00 1000-5000円くらい"])
def test_case_numbers_and_times_before_numbers_are_not_phones(text: str) -> None:
    assert find_phones(text) == []
