"""the poll index holds only sent messages (issue 19)

The report poller and the expiry read sent messages alone. A queued row then costs three index
entries, not four (intake's COPY), and a claim, a message leaving `queued`, inserts none here.

Revision ID: 18_partial_poll_index
Revises: 17_partial_provider_ref
"""
from alembic import op
import sqlalchemy as sa


revision = "18_partial_poll_index"
down_revision = "17_partial_provider_ref"
branch_labels = None
depends_on = None

_SENT = sa.text("status = 'sent'")


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_poll")
        batch_op.create_index("ix_messages_poll", ["provider", "polled_at"], unique=False,
                              postgresql_where=_SENT, sqlite_where=_SENT)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_poll")
        batch_op.create_index("ix_messages_poll", ["status", "provider", "polled_at"], unique=False)
