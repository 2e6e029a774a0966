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


class Recorder:
    """A ``write_many`` that remembers its batches and refuses what it is told to."""

    def __init__(self, slow_s=0.0, refuse=(), lose_connection=False):
        import threading
        self.batches, self.slow_s, self.refuse, self.lose = [], slow_s, set(refuse), lose_connection
        self.lock = threading.Lock()

    def __call__(self, rows):
        import time
        time.sleep(self.slow_s)
        if self.lose:
            raise psycopg.OperationalError("the server closed the connection")
        if self.refuse & set(rows):
            raise ValueError("value too long")
        with self.lock:
            self.batches.append(list(rows))


def run_callers(commit, rows):
    """Each row from a thread of its own: what each caller returned or raised."""
    import threading
    outcomes, start = {}, threading.Barrier(len(rows))

    def call(row):
        start.wait()
        try:
            outcomes[row] = commit(row)
        except Exception as exc:  # noqa: BLE001 - what that caller saw
            outcomes[row] = exc
    threads = [threading.Thread(target=call, args=(row,)) for row in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a caller never returned"
    return outcomes


def test_a_group_commit_writes_concurrent_rows_together_and_each_exactly_once():
    write = Recorder(slow_s=0.02)
    outcomes = run_callers(db.GroupCommit(write), list(range(40)))
    assert all(o is None for o in outcomes.values())
    written = [row for batch in write.batches for row in batch]
    assert sorted(written) == list(range(40))  # every row once
    assert len(write.batches) < 40 and max(map(len, write.batches)) > 1  # grouped
    commit = db.GroupCommit(write)
    assert commit(99) is None and write.batches[-1] == [99]  # a lone caller waits for nobody


def test_a_bad_row_fails_only_its_caller_and_a_lost_connection_every_caller():
    write = Recorder(slow_s=0.01, refuse={7})
    outcomes = run_callers(db.GroupCommit(write), list(range(20)))
    assert isinstance(outcomes.pop(7), ValueError)
    assert all(o is None for o in outcomes.values())
    assert sorted(row for batch in write.batches for row in batch) == [r for r in range(20) if r != 7]

    outcomes = run_callers(db.GroupCommit(Recorder(lose_connection=True)), list(range(10)))
    assert all(isinstance(o, psycopg.OperationalError) for o in outcomes.values())  # each retries
