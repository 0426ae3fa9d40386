"""Measure the rules against a labelled corpus: ``evaluate(labels_path, rules) -> EvalReport``.

Input: a JSON-lines file, one consultation per line
(``{"id", "subject", "text", "topic", "secondary", "urgent", "note"}``) and a RuleSet.
Output: topic accuracy, urgent recall and precision, a topics x topics confusion matrix
and every miss with the evidence that decided it. It never changes the rules; staff read
``format_eval`` to decide which rule to write. ``service.py eval`` fails when urgent
recall is below 1.0, because a missed crisis is the one error the service must not make.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from intake.errors import Problem, RulesError
from intake.triage import TOPICS, Match, classify_text

if TYPE_CHECKING:
    from intake.rules import RuleSet


@dataclass
class Miss:
    """One labelled mail the rules got wrong (topic, urgent flag or both)."""

    id: str
    expected_topic: str
    got_topic: str
    expected_urgent: bool
    got_urgent: bool
    matches: list[Match]


@dataclass
class EvalReport:
    total: int = 0
    topic_correct: int = 0
    urgent_tp: int = 0
    urgent_fp: int = 0
    urgent_fn: int = 0
    # confusion[expected][got] = count
    confusion: dict[str, dict[str, int]] = field(
        default_factory=lambda: {t: dict.fromkeys(TOPICS, 0) for t in TOPICS}
    )
    misses: list[Miss] = field(default_factory=list)

    @property
    def topic_accuracy(self) -> float:
        return self.topic_correct / self.total if self.total else 0.0

    @property
    def urgent_recall(self) -> float:
        """Share of urgent mails flagged; 1.0 when the corpus has none (nothing missed)."""
        positives = self.urgent_tp + self.urgent_fn
        return self.urgent_tp / positives if positives else 1.0

    @property
    def urgent_precision(self) -> float:
        flagged = self.urgent_tp + self.urgent_fp
        return self.urgent_tp / flagged if flagged else 1.0


def _read_labels(path: Path) -> list[dict[str, object]]:
    rows = []
    problems = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(path, n, f"not JSON: {exc}"))
            continue
        missing = {"id", "subject", "text", "topic", "urgent"} - set(row)
        if missing:
            problems.append(Problem(path, n, f"missing keys {sorted(missing)}"))
        elif row["topic"] not in TOPICS:
            problems.append(Problem(path, n, f"unknown topic {row['topic']!r}"))
        else:
            rows.append(row)
    if problems:
        raise RulesError(problems)
    return rows


def evaluate(labels_path: Path, rules: RuleSet) -> EvalReport:
    """Classify every labelled mail and compare with its labels."""
    report = EvalReport()
    for row in _read_labels(Path(labels_path)):
        triage = classify_text(str(row["subject"]), str(row["text"]), rules)
        expected, got = str(row["topic"]), triage.topic
        expected_urgent = bool(row["urgent"])
        report.total += 1
        report.confusion[expected][got] += 1
        report.topic_correct += expected == got
        if expected_urgent and triage.urgent:
            report.urgent_tp += 1
        elif triage.urgent:
            report.urgent_fp += 1
        elif expected_urgent:
            report.urgent_fn += 1
        if expected != got or expected_urgent != triage.urgent:
            report.misses.append(
                Miss(str(row["id"]), expected, got, expected_urgent, triage.urgent, triage.matches)
            )
    return report


def format_eval(report: EvalReport) -> str:
    """A plain-text report for the terminal: figures, confusion matrix, then every miss."""
    lines = [
        f"mails: {report.total}",
        f"topic accuracy:   {report.topic_accuracy:.3f} ({report.topic_correct}/{report.total})",
        f"urgent recall:    {report.urgent_recall:.3f} "
        f"(missed {report.urgent_fn} of {report.urgent_tp + report.urgent_fn})",
        f"urgent precision: {report.urgent_precision:.3f} (false alarms {report.urgent_fp})",
        "",
        "confusion (rows = expected, columns = got):",
        "            " + " ".join(f"{t[:10]:>10}" for t in TOPICS),
    ]
    for expected in TOPICS:
        row = report.confusion[expected]
        lines.append(f"{expected[:10]:>10}  " + " ".join(f"{row[g]:>10}" for g in TOPICS))
    if report.misses:
        lines += ["", "misses:"]
    for miss in report.misses:
        what = []
        if miss.expected_topic != miss.got_topic:
            what.append(f"topic {miss.expected_topic} -> {miss.got_topic}")
        if miss.expected_urgent != miss.got_urgent:
            what.append("MISSED URGENT" if miss.expected_urgent else "false urgent")
        lines.append(f"  {miss.id}: {'; '.join(what)}")
        for m in miss.matches:
            flag = f" [{m.discounted}]" if m.discounted else ""
            lines.append(
                f"      {m.kind:9} {m.topic or '-':12} {m.rule} {m.pattern!r} = {m.surface!r} "
                f"@{m.start}-{m.end}{flag}"
            )
    return "\n".join(lines)
