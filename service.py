#!/usr/bin/env python3
"""soudan-intake command line: the service's entry point.

Command contracts relied on by tools outside this repository (keep them stable; extend,
never rename): once, run, digest, skip-existing, check, classify --json, parse --json,
eval --labels, demo, and the staff commands ack, cases, show, close, reassign, callback,
escalate, report, purge.
Human-readable output goes to stdout; logs go to stderr and never contain message bodies
or subjects above DEBUG.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from intake.config import PROJECT_ROOT, Settings, load_settings
from intake.errors import IntakeError, RulesError

DEFAULT_OWN_ADDRESS = "sasaean@city.kasaoka.okayama.jp"

log = logging.getLogger("intake")


def _setup_logging(verbose: bool, json_logs: bool) -> None:
    from intake.logs import configure

    configure(level=logging.DEBUG if verbose else logging.INFO, as_json=json_logs)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _log_template_problems(svc: Any) -> None:
    """Log each template problem ``check`` would report, at ERROR, and start anyway.

    Why: templates are re-read when they change and have no last good copy; a worker
    started with a broken alert template used to learn of it at the first urgent mail
    (review rv10a F1). The alert itself still goes out in a built-in text
    (``compose.render_alert``), so this warns without refusing to start."""
    from intake.check import template_problems

    for problem in template_problems(svc.settings.templates_dir, svc.directory):
        log.error(
            "template problem; alerts use a built-in text where the alert template fails "
            "(run service.py check)",
            extra={"problem": problem},
        )


def cmd_once(args: argparse.Namespace) -> int:
    """Fetch everything new, process it, send what is due, exit.

    The first read of a mailbox whose folder already holds old mail does not acknowledge
    the mail older than a day (said at ERROR) unless ``--accept-existing``: see
    ``pipeline.first_read_cutoff``."""
    from imapclient.exceptions import IMAPClientError

    from intake.fetch import Mailbox
    from intake.locks import mailbox_lock
    from intake.pipeline import Service, process_new_mail
    from intake.worker import alerts_between_batches

    settings = _settings(args)
    # last_good: broken rules with a saved copy run with that copy (logged at ERROR, staff
    # told by mail); without one they stop the command, as before.
    svc = Service.from_settings(settings, last_good=True)
    _log_template_problems(svc)
    svc.settle()
    now = datetime.now(svc.calendar.tz)
    status = 0
    lock = mailbox_lock(svc.engine, settings.mailbox.key)
    try:
        if not lock.try_acquire():
            print("another worker is polling this mailbox; only sending")
        else:
            with Mailbox(settings.mailbox) as mailbox:
                report = process_new_mail(
                    svc,
                    mailbox,
                    now,
                    still_mine=lock.verify,
                    after_batch=alerts_between_batches(svc),
                    accept_existing=args.accept_existing,
                )
            print(
                f"fetched {report.fetched}, stored {report.stored}, cases {report.cases}, "
                f"follow-ups {report.followups}, quarantined {report.quarantined}, "
                f"acks queued {report.acks}, alerts queued {report.alerts}"
                + (f", not acknowledged {report.suppressed}" if report.suppressed else "")
            )
    except (IntakeError, IMAPClientError, OSError) as exc:
        # Whatever broke the mailbox side, alerts already queued are still delivered below.
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 2
    finally:
        lock.release()
    # Deliver even when the mailbox failed: alerts queued earlier must not wait for IMAP.
    sent = svc.deliver(datetime.now(svc.calendar.tz))
    # One escalation pass, as the worker's escalation job does: an alert the server just
    # refused is failed over (and logged at ERROR) at once, and one left unacknowledged
    # since an earlier `once` is escalated, also where `once` runs from cron.
    from intake.escalate import escalate

    escalations = 0
    try:
        escalations = escalate(svc, datetime.now(svc.calendar.tz))
    except Exception as exc:
        # Whatever broke here (a database error too), what was sent is still reported
        # below: the "sent ..." line is part of the command's contract.
        print(f"error: escalation pass: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = status or 2
    if escalations:
        more = svc.deliver(datetime.now(svc.calendar.tz))
        sent.sent += more.sent
        sent.deferred += more.deferred
        sent.failed += more.failed
    print(f"sent {sent.sent}, deferred {sent.deferred}, failed {sent.failed}")
    if escalations:
        print(f"escalations queued {escalations}")
    return _undelivered_status(svc, now, status)


# ``once``'s exit statuses (README and ``once --help`` say the same): 0 done (also when
# only acknowledgements wait; said on stderr), 2 the mailbox or the escalation pass
# failed (queued mail was still delivered), 3 an urgent alert or escalation is still
# undelivered after the run. 2 wins over 3: both need the administrator, and a broken
# mailbox may hide urgent mail that was never read at all.
EXIT_URGENT_UNDELIVERED = 3


def _undelivered_status(svc: Any, since: datetime, status: int) -> int:
    """``status``, or 3 when urgent mail is still undelivered after this run; each on stderr.

    Why: ``once`` runs from cron, which tells the administrator only about a run that
    exits non-zero or prints something. An alert deferred because the relay was down
    ended in exit 0 with the "sent 0, deferred N" line as the only trace. An
    acknowledgement that waits leaves the exit at 0: it is retried for a day and then
    flagged for staff to phone the resident (``ack_failed``), and a monitor that pages on
    every relay hiccup is soon ignored; the stderr line still reaches cron's mail."""
    from intake.send import waiting_after_run

    try:
        waiting = waiting_after_run(
            svc.engine, svc.settings.mailbox.key, since, datetime.now(svc.calendar.tz)
        )
    except Exception as exc:
        # The database may be what broke the run: say so rather than claim all is well.
        print(f"error: could not check what is undelivered: {type(exc).__name__}", file=sys.stderr)
        return status or 2
    if waiting.urgent:
        print(
            f"URGENT: {waiting.urgent} urgent alert(s) or escalation(s) still undelivered "
            "after this run; urgent alerts are waiting for the mail server (see the log); "
            f"exit status {EXIT_URGENT_UNDELIVERED}",
            file=sys.stderr,
        )
        status = status or EXIT_URGENT_UNDELIVERED
    if waiting.partial:
        print(
            f"note: {waiting.partial} urgent alert(s) reached some recipients; the mail "
            "server put off the others, and the next run retries them (see the log)",
            file=sys.stderr,
        )
    if waiting.acks:
        print(
            f"note: {waiting.acks} acknowledgement(s) to residents still waiting for the "
            "mail server; the next run retries them (a day later their cases are flagged "
            "for staff to phone)",
            file=sys.stderr,
        )
    return status


def cmd_skip_existing(args: argparse.Namespace) -> int:
    """At installation: leave the mail already in the folder to staff (see README)."""
    from imapclient.exceptions import IMAPClientError

    from intake.fetch import Mailbox
    from intake.locks import mailbox_lock
    from intake.pipeline import skip_existing
    from intake.store import open_database

    settings = _settings(args)
    if settings.mailbox.move_to:
        # Checked before connecting: opening with move_to creates that folder and selects
        # the inbox read-write.
        print(
            "error: skip-existing cannot be used with [mailbox] move_to: the housekeeping "
            "would move the mail left to staff out of the folder; remove move_to first",
            file=sys.stderr,
        )
        return 2
    engine = open_database(settings.database_url)
    lock = mailbox_lock(engine, settings.mailbox.key)
    if not lock.try_acquire():
        print("error: a worker is polling this mailbox; stop it first", file=sys.stderr)
        return 2
    try:
        with Mailbox(settings.mailbox) as mailbox:
            count, top = skip_existing(
                engine, mailbox, settings.mailbox.key, datetime.now().astimezone()
            )
    except (IntakeError, IMAPClientError, OSError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        lock.release()
    print(
        f"left {count} mail(s) already in {settings.mailbox.folder} to staff "
        f"(UIDs up to {top}); from now on only mail that arrives is read, acknowledged "
        "and routed"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The long-running worker. Whatever stops it is logged through the configured
    formatter (a JSON line with --json-logs), so log alerting sees it, not only stderr:
    each rules problem that keeps it from starting, a config error (``main`` prints these
    too, as before), and an unexpected error, as its ``repr`` (never its ``str`` or a
    traceback, which may carry a database statement's parameters)."""
    from intake.pipeline import Service
    from intake.worker import run_worker

    try:
        # Broken rules with a last good copy: the worker runs with the copy (each problem
        # logged at ERROR, staff told by mail; ``intake.last_good_rules``). Only without
        # one (a first installation) does it refuse to start, below.
        svc = Service.from_settings(_settings(args), last_good=True)
        _log_template_problems(svc)
        svc.settle()
        run_worker(svc)
    except RulesError as exc:
        for problem in exc.problems:
            log.error(
                "rules problem; the worker does not start until it is fixed "
                "(service.py check lists every problem; there are no last good rules to "
                "run with)",
                extra={"problem": str(problem)},
            )
        raise
    except IntakeError as exc:
        log.error("the worker does not start", extra={"reason": str(exc)})
        raise
    except Exception:
        log.critical("worker stopped by an unexpected error", exc_info=True)
        return 1
    return 0


def cmd_digest(args: argparse.Namespace) -> int:
    """Send the partner digests now (staff's manual run of what ``run`` schedules).

    A typo in the rules does not stop it: like ``run`` and ``once`` it routes with the
    last rules that loaded (``intake.last_good_rules``), so staff who send a digest by
    hand while the rules are being fixed still hand every case to its partner."""
    from intake.digest import queue_digests
    from intake.pipeline import Service

    svc = Service.from_settings(_settings(args), last_good=True)
    now = datetime.now(svc.calendar.tz)
    queued = queue_digests(svc, now)
    sent = svc.deliver(now)
    for partner, count in queued.items():
        print(f"digest for {partner}: {count} message(s)")
    if not queued:
        print("no new cases for any partner; no digest sent")
    print(f"sent {sent.sent}, deferred {sent.deferred}, failed {sent.failed}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from intake.check import run_checks
    from intake.config import config_path

    # the same resolution as every other command: --config, else $INTAKE_CONFIG
    config = config_path(args.config)
    problems = run_checks(config, Path(args.rules) if args.rules else None)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    if config is None:
        print(
            "rules, partners and templates: OK; no config was checked (none given: "
            "pass --config PATH or set INTAKE_CONFIG)"
        )
        return 0
    print(f"config ({config}), rules, partners and templates: OK")
    return 0


def _rules_dir(args: argparse.Namespace) -> Path:
    return Path(args.rules) if args.rules else PROJECT_ROOT / "rules"


def cmd_classify(args: argparse.Namespace) -> int:
    from intake.parse import parse
    from intake.pipeline import decide
    from intake.rules import load_rules
    from intake.triage import triage_report

    rules = load_rules(_rules_dir(args))
    status = 0
    for path in args.paths:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            print(json.dumps({"path": path, "error": exc.strerror}, ensure_ascii=False))
            status = 1
            continue
        triage, block = decide(parse(raw), rules, args.own_address)
        out = {"path": path, **triage_report(triage), "acknowledge": block is None}
        if block:
            out["acknowledge_blocked_by"] = block
        print(json.dumps(out, ensure_ascii=False))
    return status


def cmd_parse(args: argparse.Namespace) -> int:
    from intake.parse import letter_report, parse

    status = 0
    for path in args.paths:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            print(json.dumps({"path": path, "error": exc.strerror}, ensure_ascii=False))
            status = 1
            continue
        print(json.dumps(letter_report(path, parse(raw)), ensure_ascii=False, default=str))
    return status


def cmd_eval(args: argparse.Namespace) -> int:
    from intake.evaluate import evaluate, format_eval
    from intake.rules import load_rules

    report = evaluate(Path(args.labels), load_rules(_rules_dir(args)))
    print(format_eval(report))
    return 0 if report.urgent_recall >= 1.0 else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from intake.demo import run_demo

    return run_demo(Path(args.state))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="service.py", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="DEBUG logging")
    parser.add_argument("--json-logs", action="store_true", help="structured JSON logs")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="TOML config (default: $INTAKE_CONFIG)")
        return p

    p = with_config(
        sub.add_parser(
            "once",
            help="fetch new mail, process it, send what is due",
            description="Fetch new mail, process it, send what is due, run one escalation "
            "pass, exit. Exit status: 0 done (acknowledgements still waiting for the mail "
            "server are only said on stderr); 2 the mailbox or the escalation pass failed "
            "(mail already queued was still sent); 3 an urgent alert or escalation is "
            "still undelivered after the run (waiting for the mail server, or refused "
            "with nobody told of the case), said on stderr. 2 wins over 3.",
        )
    )
    p.add_argument(
        "--accept-existing",
        action="store_true",
        help="first read of a mailbox only: acknowledge the mail already in the folder even "
        "when it is older than a day; after a database was rolled back on purpose: "
        "acknowledge the mail it had read before (read mark). It is read, routed and "
        "alerted either way",
    )
    p.set_defaults(func=cmd_once)
    with_config(sub.add_parser("run", help="the long-running worker")).set_defaults(func=cmd_run)
    with_config(
        sub.add_parser(
            "skip-existing",
            help="at installation only: leave the mail already in the folder to staff",
        )
    ).set_defaults(func=cmd_skip_existing)
    with_config(sub.add_parser("digest", help="send partner digests now")).set_defaults(
        func=cmd_digest
    )
    p = with_config(sub.add_parser("check", help="validate config, rules, partners and templates"))
    p.add_argument(
        "--rules",
        help="rules directory (default: the config's rules_dir, else the project's rules/)",
    )
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("classify", help="triage .eml files; no config or servers needed")
    p.add_argument("--json", action="store_true", required=True, help="one JSON line per file")
    p.add_argument("--rules", help="rules directory (default: the project's rules/)")
    p.add_argument("--own-address", default=DEFAULT_OWN_ADDRESS, help=argparse.SUPPRESS)
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_classify)
    p = sub.add_parser("parse", help="decode .eml files; no config or servers needed")
    p.add_argument("--json", action="store_true", required=True, help="one JSON line per file")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_parse)
    p = sub.add_parser("eval", help="measure triage quality on a labelled JSONL corpus")
    p.add_argument("--labels", required=True)
    p.add_argument("--rules", help="rules directory (default: the project's rules/)")
    p.set_defaults(func=cmd_eval)
    from intake.staff import add_commands

    add_commands(sub)  # ack, cases, show, close, reassign, callback, escalate, report, purge
    p = sub.add_parser("demo", help="local Dovecot + SMTP sink + sample mail, run once, show it")
    p.add_argument("--state", default=str(PROJECT_ROOT / "demo-state"))
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from intake.escalate import CaseNotFound
    from intake.staff import StaffError

    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, args.json_logs)
    try:
        return int(args.func(args))
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except CaseNotFound as exc:
        print(f"エラー: {_case_not_found(args, exc)}", file=sys.stderr)
        return 1
    except StaffError as exc:
        print(f"エラー: {exc}", file=sys.stderr)
        return 1
    except IntakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _case_not_found(args: argparse.Namespace, exc: Exception) -> str:
    """What a staff member is told when the case they named is not there, in Japanese.

    Why here: staff read these at a terminal, often at night; the English of
    ``intake.escalate.CaseNotFound`` (also raised where no staff command is involved) is
    for the logs and the IT contractor. The exit code stays 1.
    """
    from intake.escalate import CaseNotFound, parse_case_number

    given = getattr(args, "case", None)
    if not isinstance(given, str):
        return str(exc)
    try:
        number = parse_case_number(given)
    except CaseNotFound:
        return f"「{given}」は受付番号ではありません。C000042（または 42）のように書いてください"
    return f"受付番号 C{number:06d} はありません（python service.py cases で一覧を表示できます）"


if __name__ == "__main__":
    sys.exit(main())
