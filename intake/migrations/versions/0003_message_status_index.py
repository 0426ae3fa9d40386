"""An index on message.status.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 09:40:00

Why: the worker looks for stored mail a crash left unprocessed (status ``received``) and
for placeholders of unreadable mail (``quarantined``) once per connection and every ten
minutes; without an index that read every message row, so its cost grew with the size of
the mailbox (0.2 s at 20,000 mails) instead of with the mail waiting.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_status"))
