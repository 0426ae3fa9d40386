"""``check``: validate config, rules, partners and templates, reporting every problem at once.

Staff edit ``rules/`` and the contractor edits the config; both need one command that says
what is wrong, where (file:line) and how to fix it, before the worker is restarted.
Templates are rendered with sample values under ``StrictUndefined``, so a typo in a
variable name fails here rather than in a resident's acknowledgement.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from itertools import product
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import TemplateError, TemplateSyntaxError

from intake.businessdays import BusinessCalendar
from intake.compose import Sender, render_ack, render_alert, render_digest, template_environment
from intake.config import (
    ENV_NAME,
    PROJECT_ROOT,
    ConfigProblems,
    Settings,
    config_path,
    env_name_shown,
    load_settings,
    where_in,
)
from intake.errors import ConfigError, RulesError
from intake.partners import Directory, Emergency, Partner, load_directory
from intake.rules import check_rules

log = logging.getLogger(__name__)

ACK_TEMPLATE = "resident/ack.txt.j2"


@dataclass(frozen=True)
class _MarkedDirectory(Directory):
    """A directory whose every phone number and hours is a marker, for the ack check.

    The 24-hour partners are given markers of their own (``always_open``), different from
    their entry in the partner list, so a template that drops the 24-hour sentence but
    keeps the list is caught too.
    """

    night: tuple[Partner, ...] = ()

    @property
    def always_open(self) -> tuple[Partner, ...]:
        return self.night


def _sample_directory() -> Directory:
    """A directory for checking templates when partners.toml itself does not load."""
    return Directory(
        (
            Partner("sample", "見本の窓口", (), ("a@example.jp",), "x", "x"),
            Partner("sample24", "見本の24時間窓口", (), ("a@example.jp",), "x", "x", "always"),
        ),
        (Emergency("見本の緊急番号", "x"),),
    )


def _marked(directory: Directory | None) -> _MarkedDirectory:
    """The loaded directory (or a sample one) with marker numbers and hours.

    Markers, not the real numbers: a template that hard-codes today's numbers (or 110)
    instead of reading the directory would pass a check with the real ones, and then show
    stale numbers the day partners.toml changes.
    """
    if directory is None or not directory.partners:
        directory = _sample_directory()
    partners = tuple(
        replace(p, phone=f"0000-TEST-{i:02d}", hours=f"TEST-HOURS-{i:02d}")
        for i, p in enumerate(directory.partners, 1)
    )
    night = tuple(
        replace(p, phone=f"0000-24H-{i:02d}")
        for i, p in enumerate(directory.partners, 1)
        if p.always_open
    )
    emergency = tuple(
        replace(e, phone=f"0000-SOS-{i:02d}") for i, e in enumerate(directory.emergency, 1)
    )
    return _MarkedDirectory(partners=partners, emergency=emergency, night=night)


def _ack_hotline_problems(templates_dir: Path, directory: Directory | None) -> list[str]:
    """Every hotline the acknowledgement fails to show, in office hours and at night.

    Why: the acknowledgement is where a resident in crisis reads whom to phone now; a
    template edit that drops the partner list, the 24-hour line or 110/119 still renders
    without error, so rendering alone passed it.
    """
    env = template_environment(templates_dir)
    tz = ZoneInfo("Asia/Tokyo")
    marked = _marked(directory)
    real = {p.id: p for p in (directory.partners if directory else ())}
    file = templates_dir / ACK_TEMPLATE
    missing: dict[str, list[str]] = {}  # what is missing -> the variants it is missing in
    for variant, hour in (("office hours", 10), ("night", 22)):
        now = datetime(2026, 11, 26, hour, 0, tzinfo=tz)  # a Thursday, a business day
        text = render_ack(
            env,
            sender=Sender("sasaean@city.kasaoka.okayama.jp", "笠岡市"),
            to="resident@example.jp",
            case_number="C000001",
            in_reply_to=None,
            references=[],
            received=now,
            calendar=BusinessCalendar(),
            directory=marked,
            now=now,
        ).get_content()
        for partner in marked.partners:
            shown = real.get(partner.id, partner)
            loop = "{% for p in partners %}"
            if partner.phone not in text:
                what = f"{partner.name}'s phone ({shown.phone}); show {{{{ p.phone }}}} in {loop}"
                missing.setdefault(what, []).append(variant)
            if partner.hours not in text:
                what = f"{partner.name}'s hours ({shown.hours}); show {{{{ p.hours }}}} in {loop}"
                missing.setdefault(what, []).append(variant)
        for partner in marked.night:
            if partner.phone not in text:
                what = (
                    f"the 24-hour line {partner.name} ({real.get(partner.id, partner).phone}); "
                    "show {{ p.phone }} in {% for p in always_open %}"
                )
                missing.setdefault(what, []).append(variant)
        real_emergency = directory.emergency if directory else marked.emergency
        for index, e in enumerate(marked.emergency):
            if e.phone not in text:
                number = real_emergency[index].phone if index < len(real_emergency) else ""
                what = (
                    f"the emergency number {e.name} ({number}); "
                    "show {{ e.phone }} in {% for e in emergency %}"
                )
                missing.setdefault(what, []).append(variant)
    return [
        f"{file}: the acknowledgement ({' and '.join(variants)}) does not show {what} "
        "(numbers and hours come from partners.toml, never written into the template)"
        for what, variants in missing.items()
    ]


def _template_error(templates_dir: Path, name: str, exc: Exception) -> str:
    """``file:line: what`` for a template that failed, the line taken from the traceback.

    Why: an undefined variable is only found when a sample reaches it, and the message
    alone ("'escalation_no' is undefined") does not say where; Jinja rewrites its
    tracebacks so that the template's own frames carry its file and line.
    """
    if isinstance(exc, TemplateSyntaxError):
        return f"{exc.filename or templates_dir / (exc.name or name)}:{exc.lineno}: {exc.message}"
    root = str(templates_dir.resolve())
    frames = [
        (frame.filename, frame.lineno)
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename.endswith(".j2") and str(Path(frame.filename).resolve()).startswith(root)
    ]
    if not frames:
        return f"{templates_dir / name}: {type(exc).__name__}: {exc}"
    file, line = frames[-1]
    # a macro's line alone does not say which call passed the wrong value
    callers = [str(n) for f, n in reversed(frames[:-1]) if f == file and n != line]
    called = f" (in a macro called from line {', '.join(callers)})" if callers else ""
    return f"{file}:{line}: {type(exc).__name__}: {exc}{called}"


def _alert_samples(now: datetime) -> list[tuple[str, int, dict[str, Any]]]:
    """Sample alert contexts that together take every branch of the alert template.

    Every combination, not one sample: the branches a 10:00 sample skips (the night and
    overdue deadlines, the re-notice line, "no phone", quarantined and automatic mail) are
    exactly the ones rendered at night, when a failed render means no alert at all
    (review rv10a F1). The keys are those of ``pipeline.alert_context``.
    """
    day = timedelta(days=1)
    closing = now.replace(hour=16, minute=30)
    timings: dict[str, dict[str, Any]] = {
        "office hours, due today": {
            "callback_due": closing, "office_hours": True, "due_today": True, "overdue": False,
        },
        "office hours, due another day": {
            "callback_due": closing + day, "office_hours": True, "due_today": False,
            "overdue": False,
        },
        "night": {
            "callback_due": now.replace(hour=8, minute=30) + day, "office_hours": False,
            "due_today": False, "overdue": False,
        },
        "overdue": {
            "callback_due": closing - day, "office_hours": False, "due_today": False,
            "overdue": True,
        },
        "no deadline": {"callback_due": None},
    }  # fmt: skip
    contacts: dict[str, dict[str, Any]] = {
        "phone": {"sender": "resident@example.jp", "phones": ["090-0000-0000"]},
        "no phone": {"sender": "resident@example.jp", "phones": []},
        "no sender": {"sender": "", "phones": []},
    }
    kinds = {"": None, "quarantined": "quarantined", "automatic mail": "auto-replied"}
    reasons = {"": [{"surface": "消えたい", "rule": "urgent.sample"}], "no reasons": []}
    samples = []
    for escalation, (timing, t), (contact, c), (kind, automatic), (why, r) in product(
        (0, 1, 2), timings.items(), contacts.items(), kinds.items(), reasons.items()
    ):
        what = ", ".join(
            x
            for x in (f"re-notice {escalation}" if escalation else "", timing, contact, kind, why)
            if x
        )
        case = {
            "number": "C000001",
            "received": now,
            "partner_name": "笠岡市",
            "reasons": r,
            "automatic": automatic,
            **c,
            **t,
        }
        samples.append((what, escalation, case))
    return samples


def _digest_entries(now: datetime) -> list[dict[str, Any]]:
    """Sample digest entries that together take every branch of the digest templates.

    One entry per combination of what the digest words differently (urgent, follow-up,
    notice, an acknowledgement that failed with and without ``show_sender``, an owner or
    desk named or not, in doubt, needs a human, sender and phones, other topics); the keys
    are those of ``digest._entry``. One digest carries them all, so this stays one render.
    """
    failed: dict[str, dict[str, Any]] = {
        "": {"ack_failed": False},
        "ack failed, sender shown, owner": {
            "ack_failed": True, "show_sender": True, "owner": "見本",
        },
        "ack failed, sender shown": {"ack_failed": True, "show_sender": True, "owner": ""},
        "ack failed, desk named": {
            "ack_failed": True, "show_sender": False, "desk_name": "見本の窓口",
            "desk_phone": "0865-00-0000",
        },
        "ack failed, no desk": {"ack_failed": True, "show_sender": False, "desk_name": ""},
    }  # fmt: skip
    contacts = {
        "no sender": {"sender": "", "phones": []},
        "sender": {"sender": "resident@example.jp", "phones": []},
        "sender and phone": {"sender": "resident@example.jp", "phones": ["090-0000-0000"]},
    }
    entries = []
    for urgent, kind, (_f, f), in_doubt, human, (_c, c), secondary in product(
        (True, False), ("new", "followup", "notice"), failed.items(), (False, True),
        (False, True), contacts.items(), ([], ["いじめ"]),
    ):  # fmt: skip
        entries.append(
            {
                "number": "C000001",
                "received": now,
                "followup": kind == "followup",
                "notice": kind == "notice",
                "topic_ja": "その他",
                "secondary": secondary,
                "urgent": urgent,
                "reasons": ["「消えたい」"] if urgent else [],
                "ack_in_doubt": in_doubt,
                "needs_human": human,
                "text": "sample",
                **f,
                **c,
            }
        )
    return entries


def _template_problems(templates_dir: Path, directory: Directory | None) -> list[str]:
    """Every template rendered with samples that take each of its branches.

    Templates are re-read when they change and have no last good copy, so a mistake in a
    branch must be found here: the alert over every timing, contact, re-notice and
    quarantine case; the digest over every entry kind; the acknowledgement in office
    hours, at night, on a holiday and in English. One problem per file and line.
    """
    env = template_environment(templates_dir)
    tz = ZoneInfo("Asia/Tokyo")
    now = datetime(2026, 11, 26, 10, 0, tzinfo=tz)  # a Thursday, a business day
    sender = Sender("sasaean@city.kasaoka.okayama.jp", "笠岡市")
    problems: dict[str, str] = {}  # problem -> the sample that showed it
    calendar = BusinessCalendar()
    ack_times = {
        "office hours": now,
        "after the last digest": now.replace(hour=15, minute=30),
        "night": now.replace(hour=22),
        "holiday": datetime(2026, 11, 23, 10, 0, tzinfo=tz),  # 勤労感謝の日
        "weekend": datetime(2026, 11, 28, 10, 0, tzinfo=tz),
    }
    directories = {"": directory if directory and directory.partners else _sample_directory()}
    directories["no 24-hour line"] = replace(
        directories[""],
        partners=tuple(replace(p, days="weekdays") for p in directories[""].partners),
    )
    renders: list[tuple[str, str, Callable[[], object]]] = []
    for (when, at), language, (which, d) in product(
        ack_times.items(), ("ja", "en"), directories.items()
    ):
        renders.append(
            (
                ACK_TEMPLATE,
                ", ".join(x for x in (when, "English" if language == "en" else "", which) if x),
                partial(
                    render_ack,
                    env,
                    sender=sender,
                    to="resident@example.jp",
                    case_number="C000001",
                    in_reply_to="<x@example.jp>",
                    references=[],
                    received=at,
                    calendar=calendar,
                    directory=d,
                    now=at,
                    language=language,
                ),
            )
        )
    for what, escalation, case in _alert_samples(now):
        renders.append(
            (
                "oncall/urgent_alert.txt.j2",
                what or "office hours, phone",
                partial(
                    render_alert,
                    env,
                    sender=sender,
                    to=["oncall@example.jp"],
                    now=now,
                    tz=tz,
                    case=case,
                    escalation=escalation,
                ),
            )
        )
    renders.append(
        (
            "partner/digest.txt.j2 and partner/digest.html.j2",
            "every kind of entry",
            partial(
                render_digest,
                env,
                sender=sender,
                now=now,
                tz=tz,
                partner=(
                    directory.partners[0]
                    if directory and directory.partners
                    else SimpleNamespace(name="sample", digest_to=("a@example.jp",))
                ),
                entries=_digest_entries(now),
            ),
        )
    )
    broken: set[str] = set()  # a file that does not parse: reported once
    for name, sample, render in renders:
        if name in broken:
            continue
        try:
            render()
        except TemplateSyntaxError as exc:
            problems.setdefault(_template_error(templates_dir, name, exc), "")
            broken.add(name)
        except TemplateError as exc:
            problems.setdefault(_template_error(templates_dir, name, exc), sample)
        except OSError as exc:
            problems.setdefault(f"{templates_dir / name}: cannot read: {exc}", "")
            broken.add(name)
    if ACK_TEMPLATE not in broken and not any(ACK_TEMPLATE in p for p in problems):
        problems.update(dict.fromkeys(_ack_hotline_problems(templates_dir, directory), ""))
    return [
        f"{problem} (when rendered for: {sample})" if sample else problem
        for problem, sample in problems.items()
    ]


def template_problems(templates_dir: Path, directory: Directory | None) -> list[str]:
    """Every template problem ``check`` reports, for the worker to log at start-up.

    Why public: templates are re-read when they change and have no last good copy, so a
    worker that starts with a broken alert template finds out at the first urgent mail;
    logging these at start (about 0.4 s) tells the operator before that (review rv10a F1).
    """
    return _template_problems(templates_dir, directory)


def _secret_file_problems(settings: Settings) -> list[str]:
    """A mailbox without a password, a ``password_file`` that does not exist; warnings for
    a ``password_env`` not set here.

    Not refused by the loader itself: a secret file may be mounted, and the variable set,
    only for the service's own account (systemd credentials, EnvironmentFile), and staff
    commands load the same config without needing either.
    """
    problems: list[str] = []
    where = str(settings.path) if settings.path else "<config>"
    if settings.mailbox.password.env is None and settings.mailbox.password.file is None:
        where = where_in(settings.path, "mailbox", "password_env")  # the table's line
        problems.append(
            f"{where}: mailbox.password_env: missing: the IMAP server needs a password; add "
            'password_env = "NAME" (and export NAME) or password_file = "/path" under [mailbox]'
        )
    for name, secret in (("mailbox", settings.mailbox.password), ("smtp", settings.smtp.password)):
        if secret.file is not None:
            where = where_in(settings.path, name, "password_file")
            try:
                secret.file.read_bytes().decode("utf-8")
            except (FileNotFoundError, NotADirectoryError):
                problems.append(
                    f"{where}: {name}.password_file: {secret.file} does not exist; create it "
                    f"(chmod 600) or fix the path (relative paths are relative to this file)"
                )
            except UnicodeDecodeError:
                # the error itself holds the password: only say what to fix
                problems.append(
                    f"{where}: {name}.password_file: {secret.file} is not UTF-8 text; save "
                    "the password as UTF-8"
                )
            except OSError:
                pass  # not ours to read: the service's account may
        if secret.env and ENV_NAME.match(secret.env) and secret.env not in os.environ:
            where = where_in(settings.path, name, "password_env")
            # an invalid name is refused by the loader; neither is ever printed as is
            log.warning(
                "%s: %s.password_env: %s is not set in this environment; the service will "
                "need it (e.g. in the systemd EnvironmentFile)",
                where,
                name,
                env_name_shown(secret.env, f"{name}.password_env"),
            )
    return problems


def _warn_if_database_readable_by_others(settings: Settings) -> None:
    """A SQLite file others may read holds every consultation (review rv9b F2).

    New databases are made private (``store.open_database``); one made before that, or
    copied with the wrong mode, is only warned about: a backup job may read it under
    another account, which is the operator's call."""
    url = settings.database_url
    if not url.startswith("sqlite:///"):
        return
    path = Path(url.removeprefix("sqlite:///").partition("?")[0])
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "%s: the database file can be read by other accounts (mode %o); it holds every "
            "consultation: chmod 600 it (and its -wal and -shm files) and chmod 700 its "
            "folder, or give the reading account a group of its own",
            path,
            mode & 0o777,
        )


def _last_good_problems(settings: Settings, rules_dir: Path) -> list[str]:
    """``[service] last_good_rules_dir`` (or its default) must not be inside the rules
    folder: the saved copies would become part of the rules (``intake.last_good_rules``)."""
    from intake.last_good_rules import inside_rules

    if settings.state_dir is None and not settings.database_url.startswith("sqlite"):
        # Not refused (the service runs without it), but said: see Settings.state_dir.
        rules_too = (
            " and its last good rules only in the cache folder of the account that runs it"
            if settings.last_good_rules_dir is None
            else ""
        )
        log.warning(
            "%s: [service] state_dir is not set: with PostgreSQL the service then keeps no "
            "read marks (a database restored from an older backup would acknowledge "
            "residents again)%s; set state_dir (e.g. /var/lib/soudan-intake)",
            settings.path or "<config>",
            rules_too,
        )
    if not inside_rules(replace(settings, rules_dir=rules_dir)):
        return []
    where = (
        f"{where_in(settings.path, 'service', 'last_good_rules_dir')}: " if settings.path else ""
    )
    return [
        f"{where}service.last_good_rules_dir: the last good rules would be saved inside the "
        f"rules folder {rules_dir}; choose a folder outside it"
    ]


def run_checks(config: str | Path | None, rules_dir: Path | None = None) -> list[str]:
    """Every problem found, as ``file:line: message`` strings; empty means all good.

    ``config`` is resolved as every command resolves it (``--config``, else
    ``$INTAKE_CONFIG``); with neither, only rules, partners and templates are checked.
    """
    problems: list[str] = []
    templates_dir = PROJECT_ROOT / "templates"
    path = config_path(config)
    if path is not None:
        settings: Settings | None = None
        try:
            settings = load_settings(path)
        except ConfigProblems as exc:
            problems.extend(exc.problems)
            settings = exc.settings
        except ConfigError as exc:
            problems.append(str(exc))
        if settings is not None:
            rules_dir = rules_dir or settings.rules_dir
            templates_dir = settings.templates_dir
            problems.extend(_secret_file_problems(settings))
            problems.extend(_last_good_problems(settings, rules_dir))
            _warn_if_database_readable_by_others(settings)
    rules_dir = rules_dir or PROJECT_ROOT / "rules"
    problems.extend(str(p) for p in check_rules(rules_dir))
    directory: Directory | None = None
    try:
        directory = load_directory(rules_dir / "partners.toml")
        # what the service runs with (logged at ERROR) but staff must fix
        problems.extend(str(p) for p in directory.warnings)
    except RulesError as exc:
        problems.extend(str(p) for p in exc.problems)
    problems.extend(_template_problems(templates_dir, directory))
    if path is not None and settings is not None and directory is not None:
        _warn_if_nobody_sees_contacts(settings, directory)
    return problems


def _warn_if_nobody_sees_contacts(settings: Settings, directory: Directory) -> None:
    """When an acknowledgement fails, someone must phone the resident: the general desk
    (with ``show_sender``) or the coordinator gets the address and phone. With neither,
    partners are told to ask the desk, who cannot see them either (h-bounce)."""
    if settings.coordinator or directory.general_desk.show_sender:
        return
    log.warning(
        "%s: nobody is shown a resident's address or phone when an acknowledgement "
        "fails: set show_sender = true for the general desk (%s) in partners.toml, or "
        "[service] coordinator",
        settings.path or "<config>",
        directory.general_desk.id,
    )
