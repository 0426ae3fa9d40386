"""Triage: ``classify(letter, rules) -> Triage`` (placeholder; being implemented)."""

from __future__ import annotations

from dataclasses import dataclass, field

TOPICS = ("bullying", "poverty", "caregiving", "isolation", "volunteer", "other")


@dataclass(frozen=True)
class Match:
    """One piece of evidence: which rule matched which words, where, and whether it counted."""

    rule: str  # rule id, e.g. "urgent.suicidal.shinitai"
    kind: str  # "topic" | "urgent" | "exclusion"
    topic: str | None  # topic for topic rules; category (e.g. "suicidal") for urgent rules
    pattern: str  # the pattern as staff wrote it
    surface: str  # the words in the mail that matched
    start: int  # character offset in the analysed text (subject + "\n" + new text)
    end: int
    discounted: str | None = None  # why it did not count ("negated", "idiom", ...), else None


@dataclass
class Triage:
    """The decision for one letter, with its evidence."""

    topic: str = "other"
    topics: list[tuple[str, float]] = field(default_factory=list)  # ranked, with scores
    urgent: bool = False
    urgent_reasons: list[Match] = field(default_factory=list)  # the urgent matches that counted
    matches: list[Match] = field(default_factory=list)  # every match, counted or discounted
    language: str = "ja"
    needs_human: bool = False  # e.g. undecodable mail: a person must read it today
