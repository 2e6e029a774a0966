"""the provider-reference index holds only messages with a provider's reference (issue 19)

Queued messages have none, and a lookup by reference never asks about them: intake then writes
one index entry less per recipient.

Revision ID: 17_partial_provider_ref
Revises: 16_service_priority
"""
from alembic import op
import sqlalchemy as sa


revision = "17_partial_provider_ref"
down_revision = "16_service_priority"
branch_labels = None
depends_on = None

_COLUMNS = ["provider", "provider_message_id"]
_SENT = sa.text("provider_message_id IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_provider_ref")
        batch_op.create_index("ix_messages_provider_ref", _COLUMNS, unique=False,
                              postgresql_where=_SENT, sqlite_where=_SENT)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_provider_ref")
        batch_op.create_index("ix_messages_provider_ref", _COLUMNS, unique=False)
