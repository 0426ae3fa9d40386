"""``check``: validate config, rules, partners and templates, reporting every problem at once.

Staff edit ``rules/`` and the contractor edits the config; both need one command that says
what is wrong, where (file:line) and how to fix it, before the worker is restarted.
Templates are rendered with sample values under ``StrictUndefined``, so a typo in a
variable name fails here rather than in a resident's acknowledgement.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from jinja2 import TemplateError, TemplateSyntaxError

from intake.businessdays import BusinessCalendar
from intake.compose import Sender, render_ack, render_alert, render_digest, template_environment
from intake.config import PROJECT_ROOT, ConfigProblems, Settings, config_path, load_settings
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


def _marked(directory: Directory | None) -> _MarkedDirectory:
    """The loaded directory (or a sample one) with marker numbers and hours.

    Markers, not the real numbers: a template that hard-codes today's numbers (or 110)
    instead of reading the directory would pass a check with the real ones, and then show
    stale numbers the day partners.toml changes.
    """
    if directory is None or not directory.partners:
        directory = Directory(
            (
                Partner("sample", "見本の窓口", (), ("a@example.jp",), "x", "x"),
                Partner("sample24", "見本の24時間窓口", (), ("a@example.jp",), "x", "x", "always"),
            ),
            (Emergency("見本の緊急番号", "x"),),
        )
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


def _template_problems(templates_dir: Path, directory: Directory | None) -> list[str]:
    env = template_environment(templates_dir)
    tz = ZoneInfo("Asia/Tokyo")
    now = datetime(2026, 11, 26, 10, 0, tzinfo=tz)
    sender = Sender("sasaean@city.kasaoka.okayama.jp", "笠岡市")
    problems: list[str] = []
    reason = {"surface": "消えたい", "rule": "urgent.sample"}
    renders = {
        # in Japanese and for a mail in another language: the English block is rendered
        # only then, so a typo in it would otherwise fail a resident's acknowledgement
        "resident/ack.txt.j2": lambda: [
            render_ack(
                env,
                sender=sender,
                to="resident@example.jp",
                case_number="C000001",
                in_reply_to="<x@example.jp>",
                references=[],
                received=now,
                calendar=BusinessCalendar(),
                directory=directory or Directory((), ()),
                now=now,
                language=language,
            )
            for language in ("ja", "en")
        ],
        "oncall/urgent_alert.txt.j2": lambda: render_alert(
            env,
            sender=sender,
            to=["oncall@example.jp"],
            now=now,
            tz=tz,
            case={
                "number": "C000001",
                "received": now,
                "callback_due": now,
                "partner_name": "笠岡市",
                "sender": "resident@example.jp",
                "phones": ["090-0000-0000"],
                "reasons": [reason],
                "automatic": None,
            },
        ),
        "partner/digest.txt.j2 and partner/digest.html.j2": lambda: render_digest(
            env,
            sender=sender,
            now=now,
            tz=tz,
            partner=(
                directory.partners[0]
                if directory and directory.partners
                else SimpleNamespace(name="sample", digest_to=("a@example.jp",))
            ),
            entries=[
                {
                    "number": "C000001",
                    "received": now,
                    "followup": False,
                    "topic_ja": "その他",
                    "secondary": [],
                    "urgent": True,
                    "reasons": ["「消えたい」"],
                    "ack_failed": False,
                    "ack_in_doubt": False,
                    "needs_human": False,
                    "sender": "",
                    "phones": [],
                    "text": "sample",
                }
            ],
        ),
    }
    for name, render in renders.items():
        try:
            render()
            if name == ACK_TEMPLATE:
                problems.extend(_ack_hotline_problems(templates_dir, directory))
        except TemplateSyntaxError as exc:
            problems.append(f"{templates_dir / (exc.name or name)}:{exc.lineno}: {exc.message}")
        except TemplateError as exc:
            problems.append(f"{templates_dir / name}: {type(exc).__name__}: {exc}")
        except OSError as exc:
            problems.append(f"{templates_dir / name}: cannot read: {exc}")
    return problems


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
        problems.append(
            f"{where}: mailbox.password_env: missing: the IMAP server needs a password; add "
            'password_env = "NAME" (and export NAME) or password_file = "/path" under [mailbox]'
        )
    for name, secret in (("mailbox", settings.mailbox.password), ("smtp", settings.smtp.password)):
        if secret.file is not None:
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
        if secret.env and secret.env not in os.environ:
            log.warning(
                "%s: %s.password_env: %s is not set in this environment; the service will "
                "need it (e.g. in the systemd EnvironmentFile)",
                where,
                name,
                secret.env,
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
    where = f"{settings.path}: " if settings.path else ""
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
