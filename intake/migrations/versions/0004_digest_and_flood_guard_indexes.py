"""Indexes for the digest and the acknowledgement flood guard.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 12:10:00

Why (issue 7: cost must grow with new mail, not with the mailbox):

* ``ix_message_case_status`` (case_id, status): a digest finds its partner's messages
  not yet listed from their cases. Without it, telling a listed message from a new one
  read the message row, and in SQLite a row's columns after ``raw`` (status among them)
  sit behind the mail's bytes: every digest read every retained mail again.
* ``ix_case_mailbox_created_at`` (mailbox, created_at): the acknowledgement flood guard
  looks for a sender's acknowledged cases within ``ack_window_hours`` of each mail's
  arrival, comparing addresses in lower case; no index served it, so each mail read
  every case of the mailbox. Now it reads the cases of that window. An index on
  ``lower(sender)`` would serve it better, but SQLAlchemy cannot reflect expression
  indexes on SQLite (it warns, and the schema comparison skips them).

Plain CREATE INDEX on both (no table rebuild: SQLite's batch mode is not needed to add
an index).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_message_case_status", "message", ["case_id", "status"], unique=False)
    op.create_index("ix_case_mailbox_created_at", "case", ["mailbox", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_case_mailbox_created_at", table_name="case")
    op.drop_index("ix_message_case_status", table_name="message")
