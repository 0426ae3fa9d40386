"""Report: the monthly figures for the platform meeting and the Cabinet Office.

Contract. ``monthly_report(svc, "YYYY-MM") -> Report`` counts the cases the service
*received* in that calendar month in the service's time zone (JST): by topic, by
partner, urgent and escalated cases, new versus returning senders, and the median times
to acknowledgement (ack mail sent − case received), to alert acknowledgement (first
acknowledgement − alert queued) and to callback (callback done − case received).
``write_report(report, out_dir, directory) -> [paths]`` writes Markdown, HTML and a PNG
bar chart. It never reads a mail body, never writes an address, name or phone number.

New versus returning: a sender is *returning* when the same address had a case before
this month. Addresses are compared through a keyed hash (HMAC-SHA-256) kept in
``SenderMark``, written before retention blanks ``Case.sender``; so the figure survives
``purge`` and the report is identical before and after it. The key lives outside the
database (``$INTAKE_SENDER_SALT``, ``[report] salt_file``, or a ``sender-salt`` file made
beside the SQLite file, mode 0600) so that a copy of the database alone cannot be
matched against a list of addresses. Each mailbox marks only its own cases, with its own
key: municipalities sharing a database may well have different keys.

The chart is drawn by a small PNG writer (zlib + a 3x5 pixel font for ASCII labels): one
bar chart does not justify a plotting stack as a dependency of a city mail service, and
the output is byte-for-byte deterministic, which the purge test relies on.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import html
import os
import secrets
import statistics
import struct
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Insert, exists, insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, Session, SQLModel, col, select

from intake.digest import TOPIC_JA
from intake.errors import ConfigError
from intake.escalate import ACK_EVENT, CALLBACK_DONE, ESCALATED_EVENT, utc
from intake.store import Case, Event, Outbox, session_scope

_STAFF_KEPT = "suppressed:staff-address"  # Case.ack_state of mail kept for staff

if TYPE_CHECKING:
    from intake.config import Settings
    from intake.partners import Directory
    from intake.pipeline import Service

SALT_ENV = "INTAKE_SENDER_SALT"


class SenderMark(SQLModel, table=True):
    """The keyed hash of a case's sender: enough to tell new from returning, nothing more."""

    __tablename__ = "sender_mark"

    case_id: int = Field(primary_key=True, foreign_key="case.id")
    sender_hash: str = Field(index=True)


# --- the sender key -------------------------------------------------------------------


def sender_salt(settings: Settings) -> bytes:
    """The HMAC key for sender hashes: env, then ``[report] salt_file``, then beside the DB."""
    value = os.environ.get(SALT_ENV)
    if value:
        return value.encode("utf-8")
    path = settings.salt_file
    url = settings.database_url
    if path is None and url.startswith("sqlite:///") and ":memory:" not in url:
        path = Path(url.removeprefix("sqlite:///")).parent / "sender-salt"
    if path is None:
        raise ConfigError(
            f'no key for sender hashes: set {SALT_ENV} or `salt_file = "..."` under [report]'
        )
    if not path.exists():
        _make_key_file(path)
    key = path.read_text(encoding="ascii").strip()
    if not key:
        raise ConfigError(f"{path}: the sender-hash key file is empty; delete it to make a new one")
    return key.encode("ascii")


def _make_key_file(path: Path) -> None:
    """Create the key file whole, or leave the one a concurrent process made.

    Two workers (or a worker and the ``report`` command) start at once on a fresh
    installation and both find no file. Creating it in place with ``O_EXCL`` let the
    loser fail, or read the winner's file while it was still empty. So the key is
    written and synced to a private temporary file first, then hard-linked to its name:
    the link either appears with the whole key or fails because the other process's
    file is already there, and then that one is used.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def sender_hash(address: str, salt: bytes) -> str:
    """Keyed hash of an address, case-insensitive (mail domains are; local parts in practice)."""
    return hmac.new(salt, address.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()


def mark_senders(session: Session, salt: bytes, mailbox: str) -> int:
    """Write a ``SenderMark`` for each of ``mailbox``'s cases with a sender and no mark yet.

    Only this mailbox's cases: the key belongs to this mailbox's config, and another
    municipality's residents hashed with it would never match that municipality's own
    marks (a mark is never rewritten), so its returning residents would count as new.

    The purge and the report call this inside their own transaction, and another
    worker's purge or a staff ``report`` may mark the same new cases at the same moment.
    A plain insert then failed on the primary key and rolled back the whole purge. The
    rows go in with ON CONFLICT DO NOTHING instead: a concurrent mark of the same case
    (same mailbox, so same key and the same hash) is simply kept. On SQLite the write
    lock is taken before the first read, so the other transaction waits in busy_timeout
    and then reads what this one committed, rather than failing on a stale snapshot.
    Returns how many unmarked cases it found (a concurrent writer may have marked some).
    """
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("UPDATE sender_mark SET case_id = case_id WHERE 0 = 1")
    unmarked = (
        select(Case.id, Case.sender)
        .where(
            Case.mailbox == mailbox,
            Case.sender != "",
            ~exists().where(col(SenderMark.case_id) == col(Case.id)),
        )
        .order_by(col(Case.id))  # one order for every writer: no deadlock between them
    )
    rows = [
        {"case_id": case_id, "sender_hash": sender_hash(sender, salt)}
        for case_id, sender in session.exec(unmarked)
        if case_id is not None
    ]
    if not rows:
        return 0
    table = SenderMark.__table__  # type: ignore[attr-defined]
    statement: Insert
    if conn.dialect.name == "postgresql":
        statement = pg_insert(table).on_conflict_do_nothing(index_elements=["case_id"])
    elif conn.dialect.name == "sqlite":
        statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=["case_id"])
    else:  # neither (not a supported database): a plain insert, as before
        statement = insert(table)
    session.execute(statement, rows)
    return len(rows)


def repair_sender_marks(svc: Service) -> int:
    """Re-hash this mailbox's marks that another mailbox's key wrote; returns how many.

    A one-off for databases several mailboxes shared before ``mark_senders`` kept to its
    own mailbox: another municipality's purge or report hashed this mailbox's residents
    with its own key, so they never matched and counted as new. Run it once per mailbox
    with that mailbox's config: every mark that does not match this mailbox's key is
    rewritten (a mark made with an earlier key of its own too). Only cases that still
    have their sender can be repaired; a mark whose case retention has already blanked
    stays as it is (the address is gone).
    """
    salt = sender_salt(svc.settings)
    repaired = 0
    with session_scope(svc.engine) as session:
        rows = session.exec(
            select(SenderMark, Case)
            .join(Case, col(Case.id) == col(SenderMark.case_id))
            .where(Case.mailbox == svc.settings.mailbox.key, Case.sender != "")
            .order_by(col(Case.id))
        ).all()
        for mark, case in rows:
            right = sender_hash(case.sender, salt)
            if mark.sender_hash != right:
                mark.sender_hash = right
                repaired += 1
    return repaired


# --- the figures ----------------------------------------------------------------------


@dataclass(frozen=True)
class Durations:
    """How many cases had the event, and the median minutes to it (None when none had)."""

    count: int
    median_minutes: float | None


def durations(deltas: list[timedelta]) -> Durations:
    minutes = [d.total_seconds() / 60 for d in deltas]
    return Durations(len(minutes), round(statistics.median(minutes), 1) if minutes else None)


@dataclass(frozen=True)
class Report:
    month: str
    cases: int
    urgent: int
    escalated: int
    by_topic: tuple[tuple[str, int], ...]
    by_partner: tuple[tuple[str, int], ...]
    new_senders: int
    returning_senders: int
    unknown_senders: int  # cases whose sender could not be read (quarantined mail)
    ack: Durations
    alert_ack: Durations
    callback: Durations


def month_bounds(month: str, settings: Settings) -> tuple[datetime, datetime]:
    """[start, end) of ``YYYY-MM`` in the service's time zone, as aware datetimes."""
    try:
        first = datetime.strptime(month, "%Y-%m").replace(tzinfo=settings.timezone)
    except ValueError as exc:
        raise ConfigError(f"month {month!r}: write it as YYYY-MM, e.g. 2026-11") from exc
    following = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
    return first, following


def _sorted_counts(counter: Counter[str]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def monthly_report(svc: Service, month: str) -> Report:
    """The figures for the cases received in ``month`` (YYYY-MM, service time zone)."""
    start, end = month_bounds(month, svc.settings)
    salt = sender_salt(svc.settings)
    SQLModel.metadata.create_all(svc.engine, tables=[SenderMark.__table__])  # type: ignore[attr-defined]
    with session_scope(svc.engine) as session:
        mark_senders(session, salt, svc.settings.mailbox.key)
        cases = session.exec(
            select(Case).where(
                Case.mailbox == svc.settings.mailbox.key,
                Case.created_at >= utc(start),
                Case.created_at < utc(end),
            )
        ).all()
        # Mail kept for staff (an on-call or partner address writing without a case
        # number: intake.pipeline) is not a consultation; an urgent one still counts.
        cases = [c for c in cases if c.urgent or c.ack_state != _STAFF_KEPT]
        ids = [c.id for c in cases]
        marks = dict(session.exec(select(SenderMark.case_id, SenderMark.sender_hash)).all())
        earlier = set(
            session.exec(
                select(SenderMark.sender_hash)
                .join(Case, col(Case.id) == SenderMark.case_id)
                .where(Case.mailbox == svc.settings.mailbox.key, Case.created_at < utc(start))
            ).all()
        )
        outbox = session.exec(select(Outbox).where(col(Outbox.case_id).in_(ids))).all()
        events = session.exec(select(Event).where(col(Event.case_id).in_(ids))).all()
    received = {c.id: utc(c.created_at) for c in cases}
    ack_times, alert_ack_times, callback_times = [], [], []
    for row in outbox:
        if row.kind == "ack" and row.status == "sent" and row.sent_at is not None:
            ack_times.append(utc(row.sent_at) - received[row.case_id])
    first_alert: dict[int | None, datetime] = {}
    for row in outbox:
        if row.kind == "alert":
            at = utc(row.created_at)
            first_alert[row.case_id] = min(at, first_alert.get(row.case_id, at))
    first_event: dict[tuple[str, int | None], datetime] = {}
    for e in events:
        at = utc(e.at)
        key = (e.kind, e.case_id)
        first_event[key] = min(at, first_event.get(key, at))
    for case_id, alert_at in first_alert.items():
        acked = [
            utc(e.at)
            for e in events
            if e.case_id == case_id and e.kind == ACK_EVENT and utc(e.at) >= alert_at
        ]
        if acked:
            alert_ack_times.append(min(acked) - alert_at)
    for case_id, at in received.items():
        done = first_event.get((CALLBACK_DONE, case_id))
        if done is not None:
            callback_times.append(done - at)
    hashes = {marks[c.id] for c in cases if c.id in marks}
    return Report(
        month=month,
        cases=len(cases),
        urgent=sum(1 for c in cases if c.urgent),
        escalated=len({e.case_id for e in events if e.kind == ESCALATED_EVENT}),
        by_topic=_sorted_counts(Counter(c.topic for c in cases)),
        by_partner=_sorted_counts(Counter(c.partner for c in cases)),
        new_senders=len(hashes - earlier),
        returning_senders=len(hashes & earlier),
        unknown_senders=sum(1 for c in cases if c.id not in marks),
        ack=durations(ack_times),
        alert_ack=durations(alert_ack_times),
        callback=durations(callback_times),
    )


# --- output -----------------------------------------------------------------------------


def _minutes(d: Durations) -> str:
    if d.median_minutes is None:
        return "—（該当なし）"
    return f"{d.median_minutes:g} 分（{d.count} 件の中央値）"


def _rows(report: Report, directory: Directory | None) -> dict[str, list[tuple[str, str]]]:
    def partner_name(pid: str) -> str:
        partner = directory.get(pid) if directory else None
        return partner.name if partner else pid

    return {
        "概要": [
            ("受付件数", str(report.cases)),
            ("うち緊急", str(report.urgent)),
            ("うち再通知あり", str(report.escalated)),
            ("新規の相談者", str(report.new_senders)),
            ("再来の相談者", str(report.returning_senders)),
            ("送信者不明（読み取れないメール）", str(report.unknown_senders)),
            ("受付返信までの時間", _minutes(report.ack)),
            ("緊急通知の確認までの時間", _minutes(report.alert_ack)),
            ("折り返し連絡までの時間", _minutes(report.callback)),
        ],
        "分類別": [(TOPIC_JA.get(t, t), str(n)) for t, n in report.by_topic],
        "担当別": [(partner_name(p), str(n)) for p, n in report.by_partner],
    }


def render_markdown(report: Report, directory: Directory | None = None, chart: str = "") -> str:
    lines = [
        f"# 相談受付 月次報告 {report.month}",
        "",
        "受信した月（日本時間）で集計。個人を特定できる情報は含みません。",
        "",
    ]
    for title, rows in _rows(report, directory).items():
        lines += [f"## {title}", "", "| 項目 | 値 |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in rows] or ["| （なし） | 0 |"]
        lines.append("")
    if chart:
        lines += [f"![分類別・担当別の件数]({chart})", ""]
    return "\n".join(lines)


def render_html(report: Report, directory: Directory | None = None, chart: str = "") -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="ja"><head><meta charset="utf-8">',
        f"<title>相談受付 月次報告 {html.escape(report.month)}</title></head><body>",
        f"<h1>相談受付 月次報告 {html.escape(report.month)}</h1>",
        "<p>受信した月（日本時間）で集計。個人を特定できる情報は含みません。</p>",
    ]
    for title, rows in _rows(report, directory).items():
        parts.append(f'<h2>{html.escape(title)}</h2><table border="1">')
        parts += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows]
        parts.append("</table>")
    if chart:
        parts.append(f'<p><img src="{html.escape(chart)}" alt="分類別・担当別の件数"></p>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(report: Report, out_dir: Path, directory: Directory | None = None) -> list[Path]:
    """Write ``report-YYYY-MM.md``, ``.html`` and ``.png`` into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"report-{report.month}"
    png = out_dir / f"{stem}.png"
    png.write_bytes(bar_chart_png(report))
    md = out_dir / f"{stem}.md"
    md.write_text(render_markdown(report, directory, png.name), encoding="utf-8")
    page = out_dir / f"{stem}.html"
    page.write_text(render_html(report, directory, png.name), encoding="utf-8")
    return [md, page, png]


# --- a tiny PNG bar chart -----------------------------------------------------------------

_GLYPHS = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001001001001",
    "8": "111101111101111",
    "9": "111101111001111",
    "a": "010101111101101",
    "b": "110101110101110",
    "c": "011100100100011",
    "d": "110101101101110",
    "e": "111100110100111",
    "f": "111100110100100",
    "g": "011100101101011",
    "h": "101101111101101",
    "i": "111010010010111",
    "j": "001001001101010",
    "k": "101101110101101",
    "l": "100100100100111",
    "m": "101111111101101",
    "n": "110101101101101",
    "o": "010101101101010",
    "p": "110101110100100",
    "q": "010101101110011",
    "r": "110101110101101",
    "s": "011100010001110",
    "t": "111010010010010",
    "u": "101101101101111",
    "v": "101101101101010",
    "w": "101101111111101",
    "x": "101101010101101",
    "y": "101101010010010",
    "z": "111001010100111",
    "-": "000000111000000",
    "_": "000000000000111",
    ":": "000010000010000",
    ".": "000000000000010",
    " ": "000000000000000",
    "?": "111001011000010",
}
_SCALE = 3
_INK = (40, 40, 40)
_BARS = ((66, 133, 244), (219, 68, 55), (244, 180, 0), (15, 157, 88), (171, 71, 188), (0, 172, 193))


class _Canvas:
    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.pixels = bytearray(b"\xff" * (width * height * 3))

    def rect(self, x: int, y: int, w: int, h: int, color: tuple[int, int, int]) -> None:
        for row in range(max(0, y), min(self.height, y + h)):
            start = (row * self.width + max(0, x)) * 3
            end = (row * self.width + min(self.width, x + w)) * 3
            self.pixels[start:end] = bytes(color) * ((end - start) // 3)

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int] = _INK) -> None:
        for i, ch in enumerate(text.lower()):
            glyph = _GLYPHS.get(ch, _GLYPHS["?"])
            for bit, on in enumerate(glyph):
                if on == "1":
                    gx, gy = bit % 3, bit // 3
                    self.rect(x + (i * 4 + gx) * _SCALE, y + gy * _SCALE, _SCALE, _SCALE, color)

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[r * self.width * 3 : (r + 1) * self.width * 3])
            for r in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            crc = zlib.crc32(kind + data) & 0xFFFFFFFF
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def _text_width(text: str) -> int:
    return len(text) * 4 * _SCALE


def bar_chart_png(report: Report) -> bytes:
    """Horizontal bars: cases by topic, then by partner, labelled with their ASCII ids."""
    sections = [
        (f"cases by topic {report.month}", report.by_topic),
        ("cases by partner", report.by_partner),
    ]
    labels = [k for _t, rows in sections for k, _n in rows] or ["none"]
    label_w = max(_text_width(k) for k in labels) + 12
    bar_max, row_h, pad = 360, 7 * _SCALE + 6, 12
    height = pad + sum(row_h * (len(rows) + 1) + pad for _t, rows in sections)
    width = label_w + bar_max + _text_width("99999") + 3 * pad
    canvas = _Canvas(width, height)
    top = max([n for _t, rows in sections for _k, n in rows], default=0) or 1
    y = pad
    for title, rows in sections:
        canvas.text(pad, y, title)
        y += row_h
        for i, (key, n) in enumerate(rows):
            canvas.text(pad + label_w - 12 - _text_width(key), y, key)
            length = max(1, round(bar_max * n / top)) if n else 0
            canvas.rect(pad + label_w, y - 2, length, 5 * _SCALE + 4, _BARS[i % len(_BARS)])
            canvas.text(pad + label_w + length + 8, y, str(n))
            y += row_h
        y += pad
    return canvas.png()


__all__ = [
    "Durations",
    "Report",
    "SenderMark",
    "bar_chart_png",
    "mark_senders",
    "month_bounds",
    "monthly_report",
    "render_html",
    "render_markdown",
    "repair_sender_marks",
    "sender_hash",
    "sender_salt",
    "write_report",
]
