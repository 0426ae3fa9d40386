"""The dev corpus meets the targets; the metrics are computed correctly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intake.errors import RulesError
from intake.evaluate import evaluate, format_eval
from intake.rules import RuleSet

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / "tests" / "data" / "triage_dev.jsonl"
# Extra mails written for the categories the first rules missed (issue 4: soft wishes,
# heights, instruments, means, farewells, carers, deprivation, foreign, one-signal topics).
EXTRA = ROOT / "tests" / "data" / "triage_dev_extra.jsonl"


@pytest.fixture(scope="module")
def dev_report(rules: RuleSet):  # type: ignore[no-untyped-def]
    if not DEV.exists():
        pytest.skip("tests/data/triage_dev.jsonl not present yet")
    return evaluate(DEV, rules)


def test_dev_corpus_urgent_recall_is_total(dev_report) -> None:  # type: ignore[no-untyped-def]
    assert dev_report.urgent_recall == 1.0, format_eval(dev_report)


def test_dev_corpus_urgent_precision_at_least_090(dev_report) -> None:  # type: ignore[no-untyped-def]
    assert dev_report.urgent_precision >= 0.9, format_eval(dev_report)


def test_dev_corpus_topic_accuracy_at_least_090(dev_report) -> None:  # type: ignore[no-untyped-def]
    assert dev_report.topic_accuracy >= 0.9, format_eval(dev_report)


@pytest.fixture(scope="module")
def extra_report(rules: RuleSet):  # type: ignore[no-untyped-def]
    if not EXTRA.exists():
        pytest.skip("tests/data/triage_dev_extra.jsonl not present")
    return evaluate(EXTRA, rules)


def test_extra_corpus_urgent_recall_is_total(extra_report) -> None:  # type: ignore[no-untyped-def]
    assert extra_report.urgent_recall == 1.0, format_eval(extra_report)


def test_extra_corpus_urgent_precision_at_least_090(extra_report) -> None:  # type: ignore[no-untyped-def]
    assert extra_report.urgent_precision >= 0.9, format_eval(extra_report)


def test_extra_corpus_topic_accuracy_at_least_090(extra_report) -> None:  # type: ignore[no-untyped-def]
    assert extra_report.topic_accuracy >= 0.9, format_eval(extra_report)


def write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return path


def test_metrics_count_hits_misses_and_false_alarms(tmp_path: Path, rules: RuleSet) -> None:
    rows: list[dict[str, object]] = [
        {"id": "a", "subject": "", "text": "もう死にたい", "topic": "other", "urgent": True},
        {
            "id": "b",
            "subject": "",
            "text": "介護がしんどい。認知症の祖母の世話。",
            "topic": "caregiving",
            "urgent": False,
        },
        # labelled urgent but says nothing alarming: a miss the report must show
        {
            "id": "c",
            "subject": "",
            "text": "よろしくお願いします",
            "topic": "other",
            "urgent": True,
        },
        # labelled calm but alarming: a false alarm; and the topic label is wrong on purpose
        {"id": "d", "subject": "", "text": "遺書を書いた", "topic": "bullying", "urgent": False},
    ]
    report = evaluate(write(tmp_path / "l.jsonl", rows), rules)
    assert report.total == 4
    assert (report.urgent_tp, report.urgent_fn, report.urgent_fp) == (1, 1, 1)
    assert report.urgent_recall == 0.5 and report.urgent_precision == 0.5
    assert report.topic_correct == 3 and report.confusion["bullying"]["other"] == 1
    assert [m.id for m in report.misses] == ["c", "d"]
    text = format_eval(report)
    assert "MISSED URGENT" in text and "false urgent" in text and "topic bullying -> other" in text


def test_bad_label_line_is_reported_with_its_line(tmp_path: Path, rules: RuleSet) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text(
        '{"id": "a", "subject": "", "text": "", "topic": "other", "urgent": false}\n{oops\n',
        encoding="utf-8",
    )
    with pytest.raises(RulesError) as caught:
        evaluate(path, rules)
    assert caught.value.problems[0].line == 2
