"""``check``: validate config, rules, partners and templates, reporting every problem at once.

Staff edit ``rules/`` and the contractor edits the config; both need one command that says
what is wrong, where (file:line) and how to fix it, before the worker is restarted.
Templates are rendered with sample values under ``StrictUndefined``, so a typo in a
variable name fails here rather than in a resident's acknowledgement.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from jinja2 import TemplateError, TemplateSyntaxError

from intake.businessdays import BusinessCalendar
from intake.compose import Sender, render_ack, render_alert, render_digest, template_environment
from intake.config import PROJECT_ROOT, load_settings
from intake.errors import ConfigError, RulesError
from intake.partners import Directory, load_directory
from intake.rules import check_rules


def _template_problems(templates_dir: Path, directory: Directory | None) -> list[str]:
    env = template_environment(templates_dir)
    tz = ZoneInfo("Asia/Tokyo")
    now = datetime(2026, 11, 26, 10, 0, tzinfo=tz)
    sender = Sender("sasaean@city.kasaoka.okayama.jp", "笠岡市")
    problems: list[str] = []
    reason = {"surface": "消えたい", "rule": "urgent.sample"}
    renders = {
        "resident/ack.txt.j2": lambda: render_ack(
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
        ),
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
        except TemplateSyntaxError as exc:
            problems.append(f"{templates_dir / (exc.name or name)}:{exc.lineno}: {exc.message}")
        except TemplateError as exc:
            problems.append(f"{templates_dir / name}: {type(exc).__name__}: {exc}")
        except OSError as exc:
            problems.append(f"{templates_dir / name}: cannot read: {exc}")
    return problems


def run_checks(config: str | None, rules_dir: Path | None = None) -> list[str]:
    """Every problem found, as ``file:line: message`` strings; empty means all good."""
    problems: list[str] = []
    templates_dir = PROJECT_ROOT / "templates"
    if config is not None:
        try:
            settings = load_settings(config)
            rules_dir = rules_dir or settings.rules_dir
            templates_dir = settings.templates_dir
        except ConfigError as exc:
            problems.append(str(exc))
    rules_dir = rules_dir or PROJECT_ROOT / "rules"
    problems.extend(str(p) for p in check_rules(rules_dir))
    directory: Directory | None = None
    try:
        directory = load_directory(rules_dir / "partners.toml")
    except RulesError as exc:
        problems.extend(str(p) for p in exc.problems)
    problems.extend(_template_problems(templates_dir, directory))
    return problems
