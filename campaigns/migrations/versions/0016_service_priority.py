"""who may submit high-priority campaigns: a property of the service (issue 15)

Replaces the HERALD_HIGH_PRIORITY_KEYS list of API key names; no service may until granted
(`herald services create NAME --high-priority`, `herald services set NAME --high-priority`).

Revision ID: 16_service_priority
Revises: 15_dispatch_window
"""
from alembic import op
import sqlalchemy as sa


revision = "16_service_priority"
down_revision = "15_dispatch_window"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.add_column(sa.Column("high_priority", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.drop_column("high_priority")
