from alembic import context

from campaigns import db
from campaigns.models import Base


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        with db.engine().begin() as connection:
            _migrate(connection)
    else:
        _migrate(connection)


def _migrate(connection) -> None:
    # Batch mode lets the same migrations alter tables on SQLite.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
