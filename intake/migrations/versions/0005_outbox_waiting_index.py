"""An index for the outbox's waiting acknowledgements (the read mark).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 15:15:00

Why (issue 7: cost must grow with new mail, not with the mailbox): after each batch and
each delivery run, ``pipeline.note_read`` asks for the first mail whose acknowledgement
still waits (outbox rows of kind ``ack`` that are ``queued`` or ``sending``). Outbox rows
are never deleted, and SQLite planned the query through ``ix_outbox_mailbox``, reading
every row the mailbox ever sent (13-15 ms at 100,000 rows, measured by review rv8b).
``ix_outbox_waiting`` (status, kind, mailbox) starts from the few waiting rows on both
SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_outbox_waiting", "outbox", ["status", "kind", "mailbox"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_outbox_waiting", table_name="outbox")
