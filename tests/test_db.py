"""The send path's raw statements (campaigns.db.first) on the real PostgreSQL."""

from __future__ import annotations

import os
import threading
import time

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


def _open_backends(url: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as admin:
        return {row[0] for row in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")}


def _closed(pids: set[int], url: str) -> bool:
    """Whether none of ``pids`` is still a backend, waiting a moment for closed ones to exit."""
    for _ in range(50):
        if not pids & _open_backends(url):
            return True
        time.sleep(0.1)
    return False


def test_each_sending_thread_keeps_one_connection_until_it_ends(services):
    url = services["HERALD_DATABASE_URL"]
    seen: dict[str, set[int]] = {}
    go = threading.Event()

    def send(name: str) -> None:
        seen[name] = {backend_pid() for _ in range(5)}
        go.wait(10)

    threads = [threading.Thread(target=send, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    while len(seen) < 4:
        time.sleep(0.01)
    # One connection per thread, kept across its statements, none shared.
    assert all(len(pids) == 1 for pids in seen.values())
    mine = set().union(*seen.values())
    assert len(mine) == 4 and mine <= _open_backends(url)

    go.set()
    for t in threads:
        t.join()
    # A thread that ends closes its connection: threads that come and go leak none.
    assert _closed(mine, url)


def test_reset_closes_the_threads_connections_and_the_next_statement_opens_one(services):
    before = backend_pid()
    db.reset()
    assert _closed({before}, services["HERALD_DATABASE_URL"])
    assert backend_pid() != before


def test_a_forked_child_never_uses_its_parents_connection(services):
    parent = backend_pid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its own connection, and the parent's left alone
        try:
            os.write(write, str(backend_pid()).encode())
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert int(os.read(read, 64)) != parent
    assert backend_pid() == parent, "the child's exit must not have closed the parent's connection"
