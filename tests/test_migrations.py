"""Migrations build the schema the models describe, on SQLite and on PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from campaigns import db
from campaigns.models import Base


def assert_schema_matches_models():
    with db.engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"


def test_sqlite_schema_matches_models(sqlite_settings):
    assert_schema_matches_models()


def test_postgres_schema_matches_models(services):
    assert_schema_matches_models()
