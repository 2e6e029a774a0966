"""Alembic migrations, driven from code so `herald db upgrade` works from an installed package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from campaigns import db

_HERE = Path(__file__).parent


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    return cfg


def upgrade(revision: str = "head") -> None:
    cfg = alembic_config()
    with db.engine().begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def current() -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.engine().connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
