"""Route: the partner directory and ``assign_partner(triage, directory) -> Partner``.

The directory is data (``rules/partners.toml``) that city staff edit, so the loader checks
it thoroughly and reports ``file:line`` with the fix; routing itself is a pure function.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any

from intake.config import address_problem
from intake.errors import Problem, RulesError
from intake.triage import TOPICS, Triage

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

# The keys each entry may hold: anything else is reported, as a misspelt key (also_notfy,
# show_sendr, phon) was silently ignored and its default used (review rv10a F10).
PARTNER_KEYS = (
    "id",
    "name",
    "topics",
    "general_desk",
    "digest_to",
    "phone",
    "hours",
    "days",
    "open",
    "close",
    "share",
    "show_sender",
    "also_notify",
    "digest_times",
)
EMERGENCY_KEYS = ("name", "phone")
TABLES = ("partner", "emergency")


def phone_problem(phone: str) -> str | None:
    """What is wrong with ``phone`` as a number shown to residents (None: nothing).

    Residents in crisis dial it from the acknowledgement, so a digit dropped while editing
    is found here: a Japanese number in half-width digits and hyphens, 10 or 11 digits
    from 0 (0120 and 0570 numbers included), a 3-digit number from 1 (110, 119, 189) or a
    short #NNNN number (#7119, #8000).
    """
    if not phone.isascii():
        return 'must be written in half-width digits and hyphens, e.g. "0865-63-8515"'
    if re.fullmatch(r"1\d\d|#\d{4}", phone):
        return None
    if not re.fullmatch(r"\d+(?:-\d+)*", phone):
        return 'must be digits and hyphens only, e.g. "0865-63-8515"'
    digits = phone.replace("-", "")
    if not digits.startswith("0") or not 10 <= len(digits) <= 11:
        return (
            f"has {len(digits)} digits: a Japanese number has 10 or 11 from 0 "
            '(e.g. "0865-63-8515", "0120-000-000"), or 3 from 1 ("110")'
        )
    return None


def _topics_of(entry: dict[str, Any]) -> list[str]:
    """The topics an entry names, whatever else is wrong with it."""
    topics = entry.get("topics", [])
    return [t for t in topics if isinstance(t, str)] if isinstance(topics, list) else []


def _unknown(entry: dict[str, Any], known: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(key, hint)`` for every key of ``entry`` not in ``known``, the hint naming the
    nearest known key."""
    found = []
    for key in entry:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            found.append((key, f"did you mean {close[0]}? " if close else ""))
    return found


@dataclass(frozen=True)
class Partner:
    id: str
    name: str
    topics: tuple[str, ...]
    digest_to: tuple[str, ...]
    phone: str
    hours: str
    days: str = "weekdays"  # weekdays | always
    open: time = time(9, 0)
    close: time = time(17, 0)
    general_desk: bool = False
    share: str = "excerpt"
    show_sender: bool = False
    also_notify: tuple[str, ...] = ()
    digest_times: tuple[str, ...] = ()  # "HH:MM" on business days; empty: the service default

    @property
    def always_open(self) -> bool:
        return self.days == "always"


@dataclass(frozen=True)
class Emergency:
    name: str
    phone: str


@dataclass(frozen=True)
class Directory:
    partners: tuple[Partner, ...]
    emergency: tuple[Emergency, ...]
    # Problems ``check`` reports that the service can run with, read the safe way (an
    # unknown key ignored, a quoted flag false, the first owner of a topic): a
    # partners.toml the previous version accepted must not stop the worker after an
    # upgrade, reading no mail at all (review rv10c R1). ``run`` logs them at ERROR.
    warnings: tuple[Problem, ...] = ()

    def get(self, partner_id: str) -> Partner | None:
        return next((p for p in self.partners if p.id == partner_id), None)

    @property
    def general_desk(self) -> Partner:
        return next(p for p in self.partners if p.general_desk)

    @property
    def always_open(self) -> tuple[Partner, ...]:
        """The 24-hour lines every acknowledgement must show."""
        return tuple(p for p in self.partners if p.always_open)


def _table_lines(text: str, header: str) -> list[int]:
    """Line numbers (1-based) of each ``[[header]]`` so errors can point at the entry."""
    pat = re.compile(r"^\s*\[\[\s*" + re.escape(header) + r"\s*\]\]")
    return [i for i, line in enumerate(text.splitlines(), 1) if pat.match(line)]


def _key_line(text: str, start: int, key: str) -> int:
    """The line of ``key =`` inside the entry whose header is on line ``start``."""
    lines = text.splitlines()
    for i in range(start, len(lines)):  # lines[start] is the line after the header
        if lines[i].lstrip().startswith("["):
            break
        if re.match(r"^\s*" + re.escape(key) + r"\s*=", lines[i]):
            return i + 1
    return start


def _time(value: str) -> time:
    m = _HHMM.match(value)
    assert m
    return time(int(m.group(1)), int(m.group(2)))


def load_directory(path: Path) -> Directory:
    """Load and validate the partner directory; raise RulesError listing every problem."""
    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError([Problem(path, None, f"cannot read: {exc.strerror}")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        raise RulesError([Problem(path, line, f"not valid TOML: {exc}")]) from exc

    soft: list[Problem] = []  # see ``Directory.warnings``
    for table in data:
        if table not in TABLES:
            close = difflib.get_close_matches(table, TABLES, n=1)
            hint = f"did you mean [[{close[0]}]]? " if close else ""
            line = next(
                (i for i, t in enumerate(text.splitlines(), 1) if re.match(
                    r"^\s*\[*\s*" + re.escape(table) + r"\s*[\].=]", t
                )),
                None,
            )  # fmt: skip
            soft.append(
                Problem(path, line, f"unknown table or key {table!r}; {hint}this file holds "
                "[[partner]] and [[emergency]] entries")
            )  # fmt: skip
    entries: list[Any] = data.get("partner", [])
    starts = _table_lines(text, "partner")
    partners: list[Partner] = []
    seen: dict[str, int] = {}
    owners: dict[str, tuple[str, int]] = {}  # topic -> (partner id, line)
    dropped: set[str] = set()  # topics of entries skipped for a bad or duplicate id
    for index, entry in enumerate(entries):
        start = starts[index] if index < len(starts) else 1

        def err(key: str, message: str, start: int = start) -> None:
            problems.append(Problem(path, _key_line(text, start, key), message))

        def warn(key: str, message: str, start: int = start) -> None:
            soft.append(Problem(path, _key_line(text, start, key), message))

        pid = entry.get("id")
        named = f"partner {pid!r}" if isinstance(pid, str) else "[[partner]]"
        for key, hint in _unknown(entry, PARTNER_KEYS):
            warn(
                key,
                f"{named}: unknown key {key!r}, so it would be ignored; {hint}the keys of "
                f"[[partner]] are {', '.join(PARTNER_KEYS)}",
            )
        if not isinstance(pid, str) or not re.fullmatch(r"[a-z0-9_-]+", pid or ""):
            err("id", 'each [[partner]] needs id = "lowercase-letters" (a-z, 0-9, -, _)')
            dropped.update(_topics_of(entry))
            continue
        if pid in seen:
            err("id", f"duplicate partner id {pid!r}; the first is at line {seen[pid]}")
            # its topics are not "unowned": that would send staff to move topics, not
            # to fix the id (review rv10a F13)
            dropped.update(_topics_of(entry))
            continue
        seen[pid] = start
        for key in ("name", "phone", "hours"):
            if not isinstance(entry.get(key), str) or not entry.get(key):
                err(key, f'partner {pid!r}: {key} = "..." is required')
        phone = entry.get("phone")
        if isinstance(phone, str) and phone and phone_problem(phone):
            warn("phone", f"partner {pid!r}: phone {phone!r} {phone_problem(phone)}")
        flags = {}
        for key in ("general_desk", "show_sender"):
            value = entry.get(key, False)
            if not isinstance(value, bool):
                # "false" in quotes is a string, and any non-empty string read as true:
                # an NPO that must not see residents' addresses was shown them (rv10a F4)
                warn(key, f"partner {pid!r}: {key} must be true or false, without quotes")
                value = value == "true" if key == "general_desk" else False
            flags[key] = value
        topics = entry.get("topics", [])
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            err("topics", f"partner {pid!r}: topics must be a list of strings")
            topics = []
        for t in topics:
            if t not in TOPICS:
                err(
                    "topics",
                    f"partner {pid!r}: unknown topic {t!r}; use one of {', '.join(TOPICS)}",
                )
            elif t in owners and owners[t][0] != pid:
                # routing takes the first owner listed: the second would never get a case
                first, line = owners[t]
                warn(
                    "topics",
                    f"partner {pid!r}: topic {t!r} is also owned by {first!r} (line {line}); "
                    "keep it in one partner's topics (use also_notify for a copy)",
                )
            else:
                owners[t] = (pid, _key_line(text, start, "topics"))
        also = entry.get("also_notify", [])
        for t in also if isinstance(also, list) else []:
            if t not in TOPICS:
                err("also_notify", f"partner {pid!r}: unknown topic {t!r} in also_notify")
        digest_to = entry.get("digest_to", [])
        if (
            not isinstance(digest_to, list)
            or not digest_to
            or not all(isinstance(a, str) and "@" in a for a in digest_to)
        ):
            err("digest_to", f'partner {pid!r}: digest_to = ["name@example.jp"] is required')
            digest_to = []
        for address in digest_to:
            problem = address_problem(address)
            if problem:
                warn("digest_to", f"partner {pid!r}: digest_to {address!r} {problem}")
        days = entry.get("days", "weekdays")
        if days not in ("weekdays", "always"):
            err("days", f'partner {pid!r}: days must be "weekdays" or "always"')
        opening = {}
        for key, default in (("open", "09:00"), ("close", "17:00")):
            value = entry.get(key, default)
            if not isinstance(value, str) or not _HHMM.match(value):
                err(key, f'partner {pid!r}: {key} must be "HH:MM", e.g. "{default}"')
                value = default
            opening[key] = _time(value)
        if days == "weekdays" and opening["open"] >= opening["close"]:
            err("close", f"partner {pid!r}: close must be after open")
        times = entry.get("digest_times", [])
        if not isinstance(times, list) or not all(
            isinstance(t, str) and _HHMM.match(t) for t in times
        ):
            err("digest_times", f'partner {pid!r}: digest_times must be a list like ["09:00"]')
            times = []
        share = entry.get("share", "excerpt")
        if share not in ("full", "excerpt"):
            err("share", f'partner {pid!r}: share must be "full" or "excerpt"')
        partners.append(
            Partner(
                id=pid,
                name=str(entry.get("name", pid)),
                topics=tuple(topics),
                digest_to=tuple(digest_to),
                phone=str(entry.get("phone", "")),
                hours=str(entry.get("hours", "")),
                days=days if days in ("weekdays", "always") else "weekdays",
                open=opening["open"],
                close=opening["close"],
                general_desk=flags["general_desk"],
                share=share if share in ("full", "excerpt") else "excerpt",
                show_sender=flags["show_sender"],
                also_notify=tuple(also) if isinstance(also, list) else (),
                digest_times=tuple(times),
            )
        )

    desks = [p for p in partners if p.general_desk]
    if len(desks) != 1:
        problems.append(
            Problem(
                path, None, f"exactly one partner needs general_desk = true (found {len(desks)})"
            )
        )
    owned = {t for p in partners for t in p.topics}
    for t in TOPICS:
        if t not in owned and t != "other" and t not in dropped:
            problems.append(
                Problem(path, None, f"no partner owns topic {t!r}: add it to a partner's topics")
            )
    emergency = []
    emergency_starts = _table_lines(text, "emergency")
    for index, entry in enumerate(data.get("emergency", [])):
        line = emergency_starts[index] if index < len(emergency_starts) else 1
        for key, hint in _unknown(entry, EMERGENCY_KEYS):
            soft.append(
                Problem(
                    path,
                    _key_line(text, line, key),
                    f"[[emergency]]: unknown key {key!r}, so it would be ignored; {hint}"
                    "each [[emergency]] has name and phone",
                )
            )
        if not entry.get("phone") or not entry.get("name"):
            problems.append(Problem(path, line, "each [[emergency]] needs name and phone"))
            continue
        phone = str(entry["phone"])
        if phone_problem(phone):
            soft.append(
                Problem(
                    path,
                    _key_line(text, line, "phone"),
                    f"[[emergency]] {entry['name']!s}: phone {phone!r} {phone_problem(phone)}",
                )
            )
        emergency.append(Emergency(name=str(entry["name"]), phone=phone))
    unknown_tables = [t for t in data if t not in TABLES]
    if not emergency and unknown_tables:
        # A misspelt [[emergancy]] would leave residents' acknowledgements without 110/119:
        # that stops the load (the last good copy is used), not only a warning (rv10d).
        problems.append(
            Problem(
                path,
                None,
                f"no [[emergency]] entries, and unknown table(s) {', '.join(unknown_tables)}: "
                "is one a misspelt [[emergency]]? Acknowledgements must show 110/119",
            )
        )
    if not any(p.always_open for p in partners) and not emergency:
        problems.append(Problem(path, None, "no 24-hour line: acknowledgements must show one"))
    if problems:
        raise RulesError(problems + soft)
    return Directory(partners=tuple(partners), emergency=tuple(emergency), warnings=tuple(soft))


def assign_partner(triage: Triage, directory: Directory) -> Partner:
    """The partner that owns a case: the primary topic's owner, else the general desk.

    Unreadable mail and ``other`` go to the general desk, which is staffed by the city:
    a consultation nobody can classify must still reach a person.
    """
    if triage.needs_human or triage.topic == "other":
        return directory.general_desk
    for partner in directory.partners:
        if triage.topic in partner.topics:
            return partner
    return directory.general_desk
