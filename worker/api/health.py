"""Readiness: can this process reach the database and the broker right now, and does a live
worker consume every queue (else campaigns are accepted that nothing sends)?"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class SchemaBehind(Exception):
    """The database answers but `herald db upgrade` has not been run to the code's revision."""


def check_database() -> None:
    from alembic.script import ScriptDirectory

    from campaigns import migrate

    if migrate.current() != ScriptDirectory.from_config(migrate.alembic_config()).get_current_head():
        raise SchemaBehind


def check_broker() -> None:
    from worker.app import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


class NoConsumer(Exception):
    """No live worker consumes one of the queues."""


def check_workers() -> None:
    from campaigns.settings import get_settings
    from worker import queues
    from worker.app import app

    if get_settings().embedded:  # the worker is a thread of this very process
        return
    if not all(queues.consumers(app).get(name) for name in queues.ALL):
        raise NoConsumer


def readiness() -> tuple[bool, dict[str, str]]:
    """Each dependency as "ok" or the kind of error that stopped it (never its message: URLs hold secrets)."""
    checks = {}
    for name, check in (("database", check_database), ("broker", check_broker), ("workers", check_workers)):
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readiness check failed", extra={"dependency": name, "error": type(exc).__name__})
            checks[name] = f"unavailable ({type(exc).__name__})"
    return all(v == "ok" for v in checks.values()), checks
