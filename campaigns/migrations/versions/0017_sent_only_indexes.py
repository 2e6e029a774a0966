"""the provider-reference and poll indexes hold only messages with a provider's reference (issue 19)

Queued messages have none, and neither index is ever asked about them: intake then writes two
index entries less per recipient.

Revision ID: 17_sent_only_indexes
Revises: 16_service_priority
"""
from alembic import op
import sqlalchemy as sa


revision = "17_sent_only_indexes"
down_revision = "16_service_priority"
branch_labels = None
depends_on = None

_SENT = sa.text("provider_message_id IS NOT NULL")
_INDEXES = {"ix_messages_provider_ref": ["provider", "provider_message_id"],
            "ix_messages_poll": ["status", "provider", "polled_at"]}


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        for name, columns in _INDEXES.items():
            batch_op.drop_index(name)
            batch_op.create_index(name, columns, unique=False, postgresql_where=_SENT, sqlite_where=_SENT)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        for name, columns in _INDEXES.items():
            batch_op.drop_index(name)
            batch_op.create_index(name, columns, unique=False)
