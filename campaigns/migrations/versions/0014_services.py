"""Services (tenants): each owns its API keys, campaigns, idempotency keys and suppressions.

Everything that existed before belongs to the service ``default`` (id 1), so a single-service
install keeps working unchanged.

Revision ID: 14_services
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "14_services"
down_revision = "0001"
branch_labels = None
depends_on = None

_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.execute("INSERT INTO services (id, name) VALUES (1, 'default')")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT setval(pg_get_serial_sequence('services', 'id'), 1)")

    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("service_id", sa.Integer(), nullable=False, server_default="1"))
        batch.create_foreign_key("fk_api_keys_service_id_services", "services", ["service_id"], ["id"])
    # SQLite's copy names the old unnamed unique constraint by this convention, so it can be dropped.
    with op.batch_alter_table("campaigns", naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"}) as batch:
        batch.add_column(sa.Column("service_id", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("idempotency_digest", sa.JSON(), nullable=True))
        batch.create_foreign_key("fk_campaigns_service_id_services", "services", ["service_id"], ["id"])
        batch.create_index("ix_campaigns_service_id", ["service_id"])
        batch.drop_constraint("campaigns_idempotency_key_key" if op.get_bind().dialect.name == "postgresql"
                              else "uq_campaigns_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_campaigns_service_idempotency", ["service_id", "idempotency_key"])

    # The phone was the primary key; now a number may be on several services' lists.
    op.create_table(
        "suppressions_by_service",
        sa.Column("id", _BIGID, autoincrement=True, nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"]),
        sa.UniqueConstraint("service_id", "phone", name="uq_suppressions_service_phone"),
    )
    op.execute("INSERT INTO suppressions_by_service (service_id, phone, reason, created_at) "
               "SELECT 1, phone, reason, created_at FROM suppressions")
    op.drop_table("suppressions")
    op.rename_table("suppressions_by_service", "suppressions")
    op.create_index("uq_suppressions_global_phone", "suppressions", ["phone"], unique=True,
                    postgresql_where=sa.text("service_id IS NULL"), sqlite_where=sa.text("service_id IS NULL"))


def downgrade() -> None:
    raise NotImplementedError("services cannot be merged back into one; restore a backup instead")
