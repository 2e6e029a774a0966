"""The send path's raw statements (campaigns.db.first) on the real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import func, literal, select

from campaigns import db
from campaigns.statuses import MessageStatus

pytestmark = pytest.mark.services

BACKEND_PID = select(func.pg_backend_pid().label("pid"))


def backend_pid() -> int:
    return db.first(BACKEND_PID, {}).pid


def test_a_connection_killed_under_a_statement_is_never_reused(services):
    pids = {backend_pid() for _ in range(3)}
    with psycopg.connect(services["HERALD_DATABASE_URL"], autocommit=True) as admin:
        for pid in pids:  # what a PostgreSQL restart does to every pooled connection
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])

    failures = 0
    for _ in range(len(pids) + 1):
        try:
            backend_pid()
        except psycopg.OperationalError:
            failures += 1  # the send task retries on exactly this
    assert failures <= len(pids), "a dead connection went back to the pool"
    assert backend_pid() not in pids, "after the failures, statements run on new connections"


def test_enum_constants_in_a_prebuilt_statement_reach_postgresql_as_values(services):
    assert db.first(select(literal(MessageStatus.SENT).label("status")), {}).status == "sent"
