"""Review rv10c R5: a friend's line without 。 that names a help line is still read."""

from __future__ import annotations

import pytest

from tests.test_quoted_urgency import _decide, _passed_on, _quoted_reasons


@pytest.mark.parametrize(
    "friend",
    [
        "いのちの電話へ かけたけどつながらなかった もう死にたい",
        "窓口まで 行ったけど門前払い もう死にたい",
    ],
)
def test_a_friends_line_without_punctuation_naming_a_help_line_is_read(rules, friend) -> None:
    triage = _decide(rules, _passed_on(friend))
    assert _quoted_reasons(triage), "the friend's crisis was cut out as 'advice'"
