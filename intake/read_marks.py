"""Read marks: how far a mailbox was read, kept outside the database.

Why: the database is the only record of which mail was already read and acknowledged.
When it is restored from an older backup (a disk failure, a botched migration), its
cursor is behind the folder, and every mail that arrived between the backup and the
failure looks new: it was read, routed and *acknowledged again*, so a resident who wrote
the week before got a second "we received your consultation". The first-read check
(``pipeline.first_read_cutoff``) catches only a database with no cursor at all.

So after each committed batch the worker also writes, outside the database, the highest
UID it has read for (mailbox, UIDVALIDITY): a small JSON file, replaced atomically. At
the start of a read, a mark above the database's cursor means the database lost reads
that happened: mail up to the mark is read, triaged, routed and alerted again (the
cases were lost with the database; a duplicate alert costs a minute, a missing one may
cost a life) but not acknowledged again, and the operator is told at ERROR.

A mark behind the database is normal (another worker on another machine read the newer
mail; a crash between the commit and the mark's write) and changes nothing. A missing or
unreadable mark changes nothing either: the mark can only ever withhold a *second*
acknowledgement. ``once --accept-existing`` ignores it (the operator's choice).

Where: ``[service] state_dir`` when set, else beside an SQLite database file
(``<database>.mailbox-<hash>.read``), so every database has its own; PostgreSQL needs
``state_dir`` (``mark_path``). An in-memory database has none.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from intake.config import Settings

log = logging.getLogger(__name__)
# Folders where a mark could not be written, warned about once (``save``).
_unwritable: set[Path] = set()


@dataclass(frozen=True)
class ReadMark:
    uidvalidity: int
    last_uid: int


def mark_path(settings: Settings, mailbox_key: str) -> Path | None:
    """The mark file of ``mailbox_key`` read with ``settings``' database; None: no mark.

    ``[service] state_dir`` when set (one file per database URL, password removed, and
    mailbox: the same database restored on its server keeps its URL); else beside an
    SQLite database file. PostgreSQL without ``state_dir`` keeps no mark: a place taken
    from the environment differed between the systemd unit and a shell, so a ``once``
    run by hand after a restore would not have seen the worker's mark."""
    url = make_url(settings.database_url)
    name = hashlib.blake2b(mailbox_key.encode("utf-8"), digest_size=8).hexdigest()
    if settings.state_dir is not None:
        where = url.render_as_string(hide_password=True)
        both = hashlib.blake2b(f"{where}\n{mailbox_key}".encode(), digest_size=12).hexdigest()
        return settings.state_dir / "read-marks" / f"{both}.read"
    if url.get_backend_name() == "sqlite":
        database = url.database
        if not database or database == ":memory:" or database.startswith("file::memory:"):
            return None
        path = Path(database).resolve()
        return path.with_name(f"{path.name}.mailbox-{name}.read")
    return None


def load(path: Path | None, mailbox_key: str) -> ReadMark | None:
    """The mark at ``path``, or None when there is none or it cannot be trusted."""
    if path is None:
        return None
    try:
        if path.is_symlink():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("mailbox") != mailbox_key:
            return None  # another mailbox's file (a hash collision, a copied folder)
        return ReadMark(int(data["uidvalidity"]), int(data["last_uid"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("read mark unreadable; ignored", extra={"error": type(exc).__name__})
        return None


def owner_of_nearest(path: Path) -> int | None:
    """The owner (uid) of ``path`` or of its nearest existing ancestor; None if unknown.

    Symbolic links are followed: the folder's owner counts, not the link's (systemd's
    ``DynamicUser=`` state folders and an admin's link to a data disk are root's links
    to the service's folders; review rv8c)."""
    for candidate in (path, *path.parents):
        try:
            return candidate.stat().st_uid
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


@contextlib.contextmanager
def updating(path: Path | None) -> Iterator[None]:
    """Hold the mark's lock (``<mark>.lock``, flock) while it is read, decided and saved.

    Why: two processes on one database (the worker and a ``once`` or ``digest`` by hand,
    two workers on one machine) each read the mark, decide and write it; without a lock
    the one that decided on the older value could write last, leaving the mark lower
    than what was read, and a restore after that acknowledges again the mail in between.
    The lock is held for two small file operations, never across a database query. No
    lock is taken where this account may not write (``save`` writes nothing there
    either) or when the lock file cannot be opened: the mark is then moved as before
    rather than not at all; never raises for the lock."""
    handle = None
    if path is not None:
        owner = owner_of_nearest(path.parent)
        if owner is None or not hasattr(os, "getuid") or owner == os.getuid():
            try:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
                handle = os.fdopen(fd, "rb+", buffering=0)
                fcntl.flock(handle, fcntl.LOCK_EX)
            except OSError:
                if handle is not None:
                    handle.close()
                handle = None
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # releases the flock


def save(path: Path | None, mailbox_key: str, mark: ReadMark) -> None:
    """Replace the mark at ``path`` with ``mark`` (temp file + rename, mode 0600).

    Never raises: a mark that cannot be written only means a later restore of an older
    database is not noticed (as before marks existed); it is logged at WARNING, once per
    process and folder (it is written after every batch)."""
    if path is None:
        return
    owner = owner_of_nearest(path.parent)
    if owner is not None and hasattr(os, "getuid") and owner != os.getuid():
        # Another account's folder (root running ``once`` in the service's state_dir):
        # a folder or file made here would be one the worker cannot write (review rv8b
        # N1). Only the owner moves the mark; it stays behind, which is harmless.
        if path.parent not in _unwritable:
            _unwritable.add(path.parent)
            log.warning(
                "read mark not written by this account: its folder belongs to another "
                "one (run service commands as the service's account)",
                extra={"folder": str(path.parent)},
            )
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(
                    {
                        "mailbox": mailbox_key,
                        "uidvalidity": mark.uidvalidity,
                        "last_uid": mark.last_uid,
                    },
                    handle,
                )
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        if path.parent not in _unwritable:
            _unwritable.add(path.parent)
            log.warning(
                "read mark not written: a database restored from an older backup would "
                "acknowledge again the mail read since the backup",
                extra={"error": type(exc).__name__, "folder": str(path.parent)},
            )
