"""Last good rules: the worker keeps running with the rules that last loaded.

Why: staff edit ``rules/`` (topics, urgent wording, signals, exclusions, partners, the
learned tier's examples). A typo there used to stop ``run`` and ``once`` until someone
fixed it; after a reboot or a restart at night that meant no mail read, no
acknowledgement and, worse, no on-call alert for a suicidal mail, with only a log line
to tell anyone. Now:

* every start of ``run``/``once`` whose rules directory loads without a problem saves a
  copy of exactly the files the loaders read (``prepare_pool.rules_files``: the rules,
  ``partners.toml``, ``examples.jsonl``), for that mailbox, unless the saved copy already
  has the same fingerprint (no write on every start);
* a start that finds problems logs each one at ERROR (``file:line: message``), logs at
  ERROR that it runs with the copy saved at such a time, loads the copy (rules, partners,
  the learned tier, whose cache is keyed by the examples' bytes, so nothing is retrained),
  and queues one short, content-free Japanese notice to the on-call address(es) and the
  coordinator through the ordinary outbox, at most once a day per distinct set of
  problems (a restart loop does not flood anyone);
* without a saved copy (a first installation) the start is refused as before.

``check`` is not affected: it validates the live folder and fails on every problem.

Where the copy lives (``snapshot_root``), one folder per mailbox, named after its key
(readable part plus a hash, so two keys never share a folder):

* ``[service] last_good_rules_dir`` when set;
* else beside a SQLite database (``last-good-rules/``), as the report's ``sender-salt``:
  the service's own state, backed up with the database, on the machine that runs it;
* else (PostgreSQL, an in-memory database) in the learned model's cache folder
  (``intake.learned.cache_dir``: ``$SOUDAN_INTAKE_CACHE_DIR``, the systemd unit's
  ``CacheDirectory``): a database server is no place for files, and that folder is
  already private to the service user, local, and outlives restarts. Losing it only
  means the next broken start is refused, as before this module.

Safety: each copy is written whole to a private temporary folder (0700, files 0600),
synced, renamed, and then a ``current`` symbolic link is switched to it with one
``os.replace``, so a crash leaves either the old copy or the new one, never half of one.
A copy is used only when its folder is this user's and nobody else may write it (another
local user could otherwise plant rules that never flag anything), when its manifest names
this mailbox, and when its files still have the fingerprint the manifest records.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intake.errors import Problem, RulesError
from intake.learned import private_folder
from intake.prepare_pool import files_fingerprint, rules_files, rules_fingerprint
from intake.read_marks import owner_of_nearest

if TYPE_CHECKING:
    from intake.config import Settings
    from intake.partners import Directory
    from intake.pipeline import Service
    from intake.rules import RuleSet

log = logging.getLogger(__name__)

ROOT_NAME = "last-good-rules"  # the folder beside the database or in the cache folder
CURRENT = "current"  # symbolic link to the copy in use
MANIFEST = ".last-good.json"  # hidden: ``rules_fingerprint`` leaves it out
SNAPSHOT_PREFIX = "snap-"
FORMAT = 1
NOTICE_KIND = "rules-fallback"
NOTICE_PRIORITY = 2  # after alerts (0) and acknowledgements (1), before digests (5)
MAX_LISTED = 20  # problems listed in the notice; ``check`` lists every one
MAX_PROBLEM_CHARS = 300
# A copy that ``current`` no longer names is removed only when older than this: another
# worker of the same mailbox may have just renamed its copy and not yet switched the link.
PRUNE_AFTER = 600.0


@dataclass(frozen=True)
class Snapshot:
    """A saved copy of a rules directory that loaded without problems."""

    path: Path  # the folder holding the copied files (load rules from here)
    fingerprint: str  # ``rules_fingerprint`` of those files
    saved_at: datetime  # when it was saved (UTC)
    mailbox: str  # the ``[mailbox]`` key it was saved for


@dataclass(frozen=True)
class Fallback:
    """The live rules are broken and the service runs with ``snapshot`` instead."""

    problems: tuple[Problem, ...]
    snapshot: Snapshot


@dataclass(frozen=True)
class Loaded:
    """What ``Service.from_settings`` needs: the rules, the partners, where they came from
    and their fingerprint (for the prepare pool), and the fallback, if any."""

    rules: RuleSet
    directory: Directory
    rules_dir: Path
    fingerprint: str
    fallback: Fallback | None


def mailbox_folder_name(key: str) -> str:
    """A folder name for a mailbox key: its readable part and a hash of the whole key.

    Keys are free text (``user@host/folder`` by default); the hash keeps two keys that
    differ only in characters replaced here from ever sharing a folder."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", key)[:40].strip(".") or "mailbox"
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def snapshot_root(settings: Settings) -> Path:
    """This mailbox's folder of saved copies (see the module docstring for why here)."""
    base = settings.last_good_rules_dir
    url = settings.database_url
    if base is None and settings.state_dir is not None:
        base = settings.state_dir / ROOT_NAME
    if base is None and url.startswith("sqlite:///") and ":memory:" not in url:
        base = Path(url.removeprefix("sqlite:///")).parent / ROOT_NAME
    if base is None:
        from intake.learned import cache_dir

        base = cache_dir() / ROOT_NAME
    return base / mailbox_folder_name(settings.mailbox.key)


def inside_rules(settings: Settings) -> bool:
    """Whether this mailbox's copies would be saved inside the live rules folder (``check``
    refuses that: every copy would change the rules' fingerprint)."""
    root = snapshot_root(settings).resolve()
    rules = settings.rules_dir.resolve()
    return root == rules or rules in root.parents


def _private(folder: Path) -> bool:
    """Whether ``folder`` is a real directory of this user that nobody else may write
    (the learned model's cache folder is held to the same test)."""
    return private_folder(folder)


def _private_to_read(folder: Path) -> bool:
    """Whether ``folder`` is a real directory that only its owner may write (any owner)."""
    try:
        st = folder.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def find(settings: Settings, read_only: bool = False) -> Snapshot | None:
    """The saved copy for this mailbox, or None (none saved, not private, another
    mailbox's, damaged). Never raises for a bad copy: it is reported and ignored.

    ``read_only`` (staff commands, which save nothing): a copy owned by another user (the
    service's, read by root or with sudo) is used when nobody else may write it."""
    root = snapshot_root(settings)
    link = root / CURRENT
    if not link.is_symlink():
        return None
    private = _private_to_read if read_only else _private
    if not private(root):
        log.warning(
            "the last good rules folder is not private to this user; it is not used",
            extra={"folder": str(root)},
        )
        return None
    name = os.readlink(link)
    if "/" in name or not name.startswith(SNAPSHOT_PREFIX):
        log.warning(
            "the last good rules link points elsewhere; not used", extra={"folder": str(root)}
        )
        return None
    folder = root / name
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        mailbox = str(manifest["mailbox"])
        fingerprint = str(manifest["fingerprint"])
        saved_at = datetime.fromisoformat(str(manifest["saved_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        log.warning(
            "the last good rules copy is unreadable; not used", extra={"folder": str(folder)}
        )
        return None
    if mailbox != settings.mailbox.key:
        log.warning(
            "the last good rules copy was saved for another mailbox; not used",
            extra={"folder": str(folder)},
        )
        return None
    if not private(folder) or rules_fingerprint(folder) != fingerprint:
        log.warning(
            "the last good rules copy was changed or damaged since it was saved; not used",
            extra={"folder": str(folder)},
        )
        return None
    return Snapshot(folder, fingerprint, saved_at, mailbox)


def save(settings: Settings, fingerprint: str, now: datetime | None = None) -> bool:
    """Save the live rules directory as this mailbox's last good copy; True if written.

    ``fingerprint``: ``rules_fingerprint`` of the live folder taken before it was loaded.
    Nothing is written when the saved copy has that fingerprint already, nor when the
    files changed while they were being loaded (then the copy would not be what loaded;
    the next start saves it). A failure to save is logged and costs only the fallback."""
    root = snapshot_root(settings)
    if inside_rules(settings):
        # the copies would become part of the rules they copy (and of every fingerprint)
        log.warning(
            "the last good rules folder is inside the rules folder; nothing is saved "
            "(set [service] last_good_rules_dir elsewhere)",
            extra={"folder": str(root)},
        )
        return False
    owner = owner_of_nearest(root)
    me = os.getuid() if hasattr(os, "getuid") else None
    if owner is not None and me is not None and owner != me:
        # Another account's folder: a copy this process wrote there would be one the
        # worker can neither use nor replace, and the next rules mistake would stop it
        # (review rv8b N1: root's first ``once`` in the service's state_dir). Only the
        # folder's owner saves; said at ERROR when copies exist that this account could
        # not use if it is the worker.
        (log.error if root.exists() else log.warning)(
            "the last good rules folder belongs to another account (uid %s, this is uid "
            "%s): nothing is saved. Run service commands as the service's account (e.g. "
            "sudo -u intake ...); if this is the worker, give the folder to its account "
            "(chown -R), or a rules mistake will stop the service",
            owner,
            me,
            extra={"folder": str(root)},
        )
        return False
    if root.exists() and not _private(root):
        log.error(
            "others may write the last good rules folder: it is neither used nor saved, "
            "and a rules mistake will stop the service; chmod 700 it",
            extra={"folder": str(root)},
        )
        return False
    try:
        current = _current_fingerprint(root)
        if current == fingerprint:
            return False
        files = rules_files(settings.rules_dir)
        if files_fingerprint(files) != fingerprint:
            log.info("rules changed while they were loaded; the last good copy is not updated")
            return False
        _write(root, settings.mailbox.key, settings.rules_dir, files, fingerprint, now)
    except OSError as exc:
        log.warning(
            "could not save the last good rules; a broken rules edit will stop the service",
            extra={"folder": str(root), "error": f"{type(exc).__name__}: {exc.strerror}"},
        )
        return False
    log.info("saved the rules as the last good rules", extra={"folder": str(root)})
    return True


def _current_fingerprint(root: Path) -> str | None:
    """The fingerprint the manifest of ``current`` records (not re-hashed: only compared
    to decide whether to write; ``find`` re-hashes before a copy is used)."""
    try:
        name = os.readlink(root / CURRENT)
        manifest = json.loads((root / name / MANIFEST).read_text(encoding="utf-8"))
        return str(manifest["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(
    root: Path,
    mailbox: str,
    source: Path,
    files: Sequence[tuple[str, bytes]],
    fingerprint: str,
    now: datetime | None,
) -> None:
    """Write the copy to a private temporary folder, rename it, switch ``current``."""
    if not root.exists():
        old = os.umask(0o077)
        try:
            root.mkdir(parents=True, mode=0o700, exist_ok=True)
        finally:
            os.umask(old)
    if not _private(root):
        raise PermissionError(13, "the folder is not private to the service user", str(root))
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))  # mode 0700
    try:
        for relative, data in files:
            _write_file(tmp / relative, data)
        manifest = {
            "format": FORMAT,
            "mailbox": mailbox,
            "fingerprint": fingerprint,
            "saved_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(),
            "source": str(source),
        }
        _write_file(tmp / MANIFEST, json.dumps(manifest, ensure_ascii=False).encode())
        final = root / (SNAPSHOT_PREFIX + tmp.name.removeprefix(".tmp-"))
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    link = root / f".link-{final.name}"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    os.symlink(final.name, link)
    os.replace(link, root / CURRENT)
    _fsync_folder(root)
    _prune(root, final.name)


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _prune(root: Path, keep: str) -> None:
    """Remove copies and leftovers ``current`` does not name, once they are old enough."""
    cutoff = time.time() - PRUNE_AFTER
    for entry in root.iterdir():
        if entry.name in (keep, CURRENT):
            continue
        with contextlib.suppress(OSError):
            if entry.lstat().st_mtime >= cutoff:
                continue
            if entry.is_symlink() and entry.name.startswith(".link-"):
                entry.unlink()  # left by a crash between the link's creation and its rename
            elif not entry.is_symlink() and entry.name.startswith((SNAPSHOT_PREFIX, ".tmp-")):
                shutil.rmtree(entry)


def load(settings: Settings, last_good: bool, *, read_only: bool = False) -> Loaded:
    """Load the live rules and partners; with ``last_good``, save them when they load and
    fall back to the saved copy when they do not (see the module docstring). With
    ``read_only`` (staff commands such as ``show``, which the night alert tells the
    on-call person to run): fall back to the copy too, but never save one (and the caller
    queues no notice).

    Raises ``RulesError`` (the live folder's problems) when they do not load and there is
    no usable copy, or neither ``last_good`` nor ``read_only`` is set."""
    from intake.partners import load_directory
    from intake.rules import load_rules

    live = settings.rules_dir
    # Taken before the rules are read: the copy saved is only ever what loaded, and a pool
    # child refuses to work with other rules than these (staff may edit rules/ meanwhile).
    fingerprint = rules_fingerprint(live)
    try:
        rules = load_rules(live)
        directory = load_directory(live / "partners.toml")
    except RulesError as exc:
        if not (last_good or read_only):
            raise
        snapshot = find(settings, read_only=read_only and not last_good)
        if snapshot is None:
            raise
        problems = tuple(exc.problems) + _partner_problems(live, exc)
        if read_only:
            log.warning(
                "the rules have problems (service.py check lists them): this command uses "
                "the last rules that loaded, saved at %s",
                snapshot.saved_at.astimezone(settings.timezone).isoformat(timespec="seconds"),
            )
        else:
            _log_fallback(problems, snapshot, settings)
        return Loaded(
            rules=load_rules(snapshot.path),
            directory=load_directory(snapshot.path / "partners.toml"),
            rules_dir=snapshot.path,
            fingerprint=snapshot.fingerprint,
            fallback=Fallback(problems, snapshot),
        )
    for problem in directory.warnings:
        # Loaded, read the safe way (``Directory.warnings``), but staff must fix it.
        log.error(
            "partners.toml problem; the service runs with it read the safe way (an unknown "
            "key ignored, a quoted flag false, a topic's first owner); fix it and run "
            "service.py check",
            extra={"problem": str(problem)},
        )
    if last_good:
        save(settings, fingerprint)
    return Loaded(rules, directory, live, fingerprint, None)


def _partner_problems(live: Path, exc: RulesError) -> tuple[Problem, ...]:
    """The partner list's problems too, when the rules' already stopped the load (the
    notice then names every broken file at once)."""
    from intake.partners import load_directory

    partners = live / "partners.toml"
    if any(p.path == partners for p in exc.problems):
        return ()
    try:
        load_directory(partners)
    except RulesError as more:
        return tuple(more.problems)
    return ()


@dataclass(frozen=True)
class FileDifference:
    """A rules file whose live version is not the one the service runs with.

    Why: the fallback loads every file from the saved copy, not only the broken ones, so a
    valid edit made since (a new urgent phrase) is not in force either; staff must see
    which files that concerns, or they believe their change is live."""

    name: str  # relative POSIX name inside the rules folder
    change: str  # "changed", "added" (live only), "removed" (copy only), "same"
    has_errors: bool  # the live file has problems (a "same" file is listed only then)


def file_differences(
    live: Path, saved: Path, problems: Sequence[Problem]
) -> tuple[FileDifference, ...] | None:
    """The files that differ between the live rules folder and the saved copy, and the
    files with problems, sorted by name; None when either folder is missing or cannot be
    read (a missing rules folder is a problem of its own, not every file "removed").

    Compares exactly the files the fingerprint covers (``prepare_pool.rules_files``), so
    a hidden file or an editor backup is never reported. Names only: the callers put this
    in a log and a mail, never the files' content."""
    if not (live.is_dir() and saved.is_dir()):
        return None
    try:
        now = dict(rules_files(live))
        then = dict(rules_files(saved))
    except OSError:
        return None
    broken = {name for name in (_problem_file(p, live) for p in problems) if name}
    listed = []
    for name in sorted(now.keys() | then.keys() | broken):
        if name not in then:
            change = "added"
        elif name not in now:
            change = "removed"
        else:
            change = "changed" if now[name] != then[name] else "same"
        if change != "same" or name in broken:
            listed.append(FileDifference(name, change, name in broken))
    return tuple(listed)


def _problem_file(problem: Problem, live: Path) -> str | None:
    """The problem's file relative to the live rules folder, or None when it is not a
    file inside it (the folder itself, a path elsewhere)."""
    for base in (live, live.resolve()):
        try:
            name = problem.path.relative_to(base).as_posix()
        except ValueError:
            continue
        return None if name in ("", ".") else name
    return None


def _differences_for_log(differences: tuple[FileDifference, ...] | None) -> str:
    if differences is None:
        return "unknown (a rules folder could not be read)"
    if not differences:
        return "none"
    return ", ".join(
        f"{d.name} ({d.change}{', has problems' if d.has_errors else ''})" for d in differences
    )


def _log_fallback(problems: Sequence[Problem], snapshot: Snapshot, settings: Settings) -> None:
    """Log each problem and what the service now runs with, at ERROR.

    Every file comes from the copy, so the log says that every change since it was saved
    is unused (valid edits too) and names the files that differ from it; names only."""
    for problem in problems:
        log.error(
            "rules problem; the service runs with the last rules that loaded until it is "
            "fixed and the service restarted (service.py check lists every problem)",
            extra={"problem": str(problem)},
        )
    differences = file_differences(settings.rules_dir, snapshot.path, problems)
    log.error(
        "the rules have problems: running with the last rules that loaded, saved at %s: "
        "ALL rules files as they were then; every change since, in files without problems "
        "too, is unused until the problems are fixed and the service restarted",
        snapshot.saved_at.astimezone(settings.timezone).isoformat(timespec="seconds"),
        extra={"folder": str(snapshot.path), "differing": _differences_for_log(differences)},
    )


def notice_key(mailbox: str, problems: Sequence[Problem], day: str) -> str:
    """The outbox dedupe key of the notice: one per mailbox, day and set of problems."""
    digest = hashlib.sha256("\n".join(sorted(str(p) for p in problems)).encode()).hexdigest()
    return f"{NOTICE_KIND}:{mailbox}:{day}:{digest[:16]}"


def notify(svc: Service, fallback: Fallback, now: datetime) -> bool:
    """Queue the staff notice of ``fallback`` unless one for the same problems was queued
    today (in the service's time zone); True when queued.

    Through the outbox, as alerts and digests go: the worker delivers it, retries it and
    reports a failure like any other mail. To the on-call ``to`` address(es), whom the
    service already wakes for what cannot wait, and the coordinator, if any."""
    from sqlalchemy.exc import IntegrityError
    from sqlmodel import select

    from intake.pipeline import queue_mail
    from intake.store import Outbox, session_scope

    settings = svc.settings
    to = _unique([*settings.oncall.to, *settings.coordinator])
    if not to:
        return False
    day = now.astimezone(svc.calendar.tz).date().isoformat()
    key = notice_key(settings.mailbox.key, fallback.problems, day)
    message = notice_message(svc, fallback, to, now)
    try:
        with session_scope(svc.engine) as session:
            if session.exec(select(Outbox.id).where(Outbox.dedupe_key == key)).first():
                return False
            queue_mail(
                session,
                kind=NOTICE_KIND,
                key=key,
                case=None,
                to=to,
                message=message,
                priority=NOTICE_PRIORITY,
                now=now,
                mailbox=settings.mailbox.key,
            )
    except IntegrityError:
        return False  # another worker of this mailbox queued it at the same moment
    log.info("queued the staff notice that the rules have problems")
    return True


def _unique(addresses: Sequence[str]) -> list[str]:
    seen: list[str] = []
    for address in addresses:
        if address and address.lower() not in (s.lower() for s in seen):
            seen.append(address)
    return seen


def _check_command(svc: Service) -> str:
    """The ``check`` command as the worker itself would run it (``service_command``): a
    bare ``python service.py check`` in a shell without INTAKE_CONFIG checks the
    project's rules/, not the service's, and says OK (review rv10a F12)."""
    from intake.pipeline import service_command

    return service_command(svc, "check")


def notice_message(svc: Service, fallback: Fallback, to: list[str], now: datetime) -> Any:
    """The notice: which files and lines are wrong, that the service runs with ALL the
    files as saved at a given time (so a valid edit since, such as a new urgent phrase, is
    not in force either), which files differ from that copy, and what to do. Built in
    code, not from a staff-editable template, so a broken template cannot silence it; no
    mail content (the problems are about staff's own files; files are named, never
    quoted). Short lines: on-call staff read it on a phone."""
    from intake.compose import _base_message

    tz = svc.calendar.tz
    saved = fallback.snapshot.saved_at.astimezone(tz)
    saved_ja = f"{saved.year}年{saved.month}月{saved.day}日 {saved:%H:%M}"
    live = svc.settings.rules_dir
    listed = []
    for problem in fallback.problems[:MAX_LISTED]:
        try:
            name = problem.path.relative_to(live).as_posix()
        except ValueError:
            name = str(problem.path)
        where = f"{name} {problem.line}行目" if problem.line else name
        text = problem.message
        if len(text) > MAX_PROBLEM_CHARS:
            text = text[:MAX_PROBLEM_CHARS] + "…"
        listed.append(f"・{where}: {text}")
    more = len(fallback.problems) - MAX_LISTED
    if more > 0:
        listed.append(f"・ほか {more} 件（python service.py check ですべて表示されます）")
    differences = file_differences(live, fallback.snapshot.path, fallback.problems)
    subject = "【要対応】相談ルールのファイルに誤りがあります（前回のルールで稼働中）"
    message = _base_message(svc.sender, to, subject, now, "auto-generated", NOTICE_KIND)
    lines = [
        "相談メール受付サービスの起動時に、ルールのファイル（rules/）に誤りが見つかりました。",
        "",
        f"ルールのフォルダー: {live}",
        f"設定ファイル: {svc.settings.path or '（なし）'}",
        "",
        "誤りのある箇所:",
        *listed,
        "",
        "サービスは止まっていません。",
        "ただし、rules/ のすべてのファイルについて、",
        f"{saved_ja} に保存した控え（最後に正しく読み込めたルール）で動いています。",
        "受付・自動返信・緊急通知・振り分けは、その時点のルールで続けています。",
        "",
        f"{saved_ja} より後の変更は、誤りのないファイルの変更も含めて、すべて使われていません。",
        "たとえば緊急の言葉を追加していても、その言葉ではまだ緊急通知が出ません。",
        "",
        *_differences_for_notice(differences, saved_ja),
        "",
        "対応のお願い:",
        "1. サーバーのインストール先で、サービスと同じ利用者として次を実行して誤りを確認し、"
        "ファイルを直してください。",
        f"   {_check_command(svc)}",
        "2. check が通ったら sudo systemctl restart soudan-intake で再起動してください。",
        "再起動するまで、直したファイルもほかのファイルも、変更は使われません。",
        "",
        "このメールは自動送信です。相談の内容は含まれていません。",
        "同じ誤りについては、1日に1回だけお知らせします。",
        "",
    ]
    message.set_content("\n".join(lines), charset="utf-8", cte="8bit")
    return message


_CHANGE_JA = {
    "changed": "変更あり → この変更は使われていません",
    "added": "新しく追加 → このファイルは使われていません",
    "removed": "削除済み → 保存時点の内容がまだ使われています",
    "same": "変更なし",
}


def _differences_for_notice(
    differences: tuple[FileDifference, ...] | None, saved_ja: str
) -> list[str]:
    """The notice's list of files that differ from the saved copy (names only)."""
    if differences is None:
        return ["保存時点と違うファイル: 調べられませんでした（フォルダーを読めません）。"]
    if not differences:
        return ["保存時点と違うファイルはありません。"]
    lines = [f"{saved_ja} の時点と違うファイル:"]
    for d in differences[:MAX_LISTED]:
        errors = "【誤りあり】" if d.has_errors else ""
        lines.append(f"・{d.name}{errors}: {_CHANGE_JA[d.change]}")
    more = len(differences) - MAX_LISTED
    if more > 0:
        lines.append(f"・ほか {more} 件")
    return lines
