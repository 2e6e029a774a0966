"""dispatch window and priority (issue 15)

A campaign's priority class, the refill chain's sequence number and what its window last saw;
the message index gains the id so a window's in-flight count and the next keyset page are
range scans of it.

Revision ID: 15_dispatch_window
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '15_dispatch_window'
down_revision = "14_services"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.String(length=8), server_default='normal', nullable=False))
        batch_op.add_column(sa.Column('window_seq', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('window_size', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('window_wait', sa.String(length=16), nullable=True))
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_campaign_status')
        batch_op.create_index('ix_messages_campaign_status', ['campaign_id', 'status', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_campaign_status')
        batch_op.create_index('ix_messages_campaign_status', ['campaign_id', 'status'], unique=False)
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_column('window_wait')
        batch_op.drop_column('window_size')
        batch_op.drop_column('window_seq')
        batch_op.drop_column('priority')
