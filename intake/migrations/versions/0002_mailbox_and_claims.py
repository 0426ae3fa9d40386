"""Cases and outbox rows carry their mailbox (tenant); outbox rows can be claimed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 20:52:42

Existing rows get their mailbox from the data: a case from its first message, an outbox
row from its case; rows still without one (digests, when the database has one mailbox)
from the only cursor. The temporary server default exists only so NOT NULL can be added
to filled tables; it is removed again because the models have none.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    text = sqlmodel.sql.sqltypes.AutoString()
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mailbox", text, nullable=False, server_default=""))
        batch_op.create_index(batch_op.f("ix_case_mailbox"), ["mailbox"], unique=False)

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mailbox", text, nullable=False, server_default=""))
        batch_op.add_column(sa.Column("claimed_by", text, nullable=True))
        batch_op.add_column(
            sa.Column("claimed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_outbox_mailbox"), ["mailbox"], unique=False)

    op.execute(
        'UPDATE "case" SET mailbox = COALESCE((SELECT m.mailbox FROM message m '
        "WHERE m.case_id = \"case\".id ORDER BY m.id LIMIT 1), '')"
    )
    op.execute(
        'UPDATE outbox SET mailbox = COALESCE((SELECT c.mailbox FROM "case" c '
        "WHERE c.id = outbox.case_id), '')"
    )
    only = "(SELECT MIN(mailbox) FROM cursor HAVING COUNT(*) = 1)"
    for table in ('"case"', "outbox"):
        op.execute(f"UPDATE {table} SET mailbox = {only} WHERE mailbox = '' AND {only} IS NOT NULL")

    for table in ("case", "outbox"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "mailbox", existing_type=text, existing_nullable=False, server_default=None
            )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_mailbox"))
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("claimed_by")
        batch_op.drop_column("mailbox")

    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_mailbox"))
        batch_op.drop_column("mailbox")
