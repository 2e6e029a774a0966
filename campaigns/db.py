"""Engine and sessions, made once per process (and again after a fork) from the settings."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from enum import Enum

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from campaigns.resources import per_process
from campaigns.settings import get_settings


def _make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):
            # WAL lets the webhook receiver read while a worker thread writes.
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # No pre-ping: it was a round trip on every checkout, two per send. After a PostgreSQL
    # restart the first statement on a dead connection fails and invalidates the whole pool;
    # the send task retries on that error, an HTTP caller gets one 503 and retries.
    # The pool keeps as many connections as a worker has threads (24): a connection beyond
    # pool_size is closed when returned, and reopening one per send cost more than the send's
    # own statements. Connections open only when needed, so a quiet process holds few.
    # hide_parameters: a statement's error never quotes its values (numbers, message text).
    return create_engine(url, pool_size=32, max_overflow=8, hide_parameters=True)


@per_process(in_child=lambda made: made[0].dispose(close=False))
def _database(url: str) -> tuple[Engine, sessionmaker]:
    engine = _make_engine(url)
    return engine, sessionmaker(engine, expire_on_commit=False)


def engine() -> Engine:
    """This process's engine for the configured database (another URL, another engine)."""
    return _database(get_settings().database_url)[0]


def reset() -> None:
    """Close this process's connections; the next statement opens new ones."""
    engine().dispose()


# SQLite allows one writer; threads queueing on a lock beat sqlite's sleeping busy handler.
_sqlite_lock = threading.RLock()


def _one_writer():
    return _sqlite_lock if engine().dialect.name == "sqlite" else nullcontext()


@contextmanager
def session() -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any error."""
    with _one_writer(), _database(get_settings().database_url)[1].begin() as s:
        yield s


def first(statement, params: dict):
    """Run a prebuilt ``statement`` in a transaction of its own; its first row (attributes by
    column name) or None. For the send path's single statements: no ORM session, no BEGIN and
    COMMIT round trips (each costs the sending thread a wait for the GIL; see `herald bench`).

    On PostgreSQL the statement, compiled once, runs on psycopg's own cursor of a pooled
    connection switched to autocommit for it: SQLAlchemy's per-execution work (a Connection,
    its isolation level set and reset) cost more than PostgreSQL's own.
    """
    eng = engine()
    if eng.dialect.name != "postgresql":
        with _one_writer(), eng.connect() as conn:
            result = conn.execution_options(isolation_level="AUTOCOMMIT").execute(statement, params)
            return result.first() if result.returns_rows else None
    sql, fixed = _compiled(statement, eng.dialect)
    pooled = eng.raw_connection()
    driver = pooled.driver_connection
    try:
        driver.autocommit = True
        # A broken connection raises psycopg's own OperationalError here (the send task retries
        # on it); the pool's reset on return finds it broken and never hands it out again.
        with driver.cursor(row_factory=namedtuple_row) as cur:
            cur.execute(sql, {**fixed, **params})
            return cur.fetchone() if cur.description else None
    finally:
        if not driver.closed:  # as the pool's other users expect it; a broken one is discarded
            driver.autocommit = False
        pooled.close()


def first_in(conn, statement, params: dict):
    """``first``, but in the transaction of ``conn`` (a SQLAlchemy Connection): for a statement
    run once per item of a batch. On PostgreSQL it runs on psycopg's own cursor of that
    connection, compiled once, as ``first`` does."""
    if conn.dialect.name != "postgresql":
        return conn.execute(statement, params).first()
    sql, fixed = _compiled(statement, conn.dialect)
    with conn.connection.driver_connection.cursor(row_factory=namedtuple_row) as cur:
        cur.execute(sql, {**fixed, **params})
        return cur.fetchone() if cur.description else None


@functools.cache
def _compiled(statement, dialect) -> tuple[str, dict]:
    """The statement's SQL for psycopg and its constant parameters (enums as their values)."""
    compiled = statement.compile(dialect=dialect)
    sql = str(compiled)
    if "POSTCOMPILE" in sql:
        raise ValueError("db.first() takes no expanding IN parameters")
    return sql, {k: v.value if isinstance(v, Enum) else v for k, v in compiled.params.items()}


# What a lost database connection raises: SQLAlchemy's wrappers, or psycopg's own from first().
CONNECTION_ERRORS = (exc.OperationalError, exc.InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)


def retry_once(fn, *args):
    """``fn(*args)``, and once more after a lost connection: after a PostgreSQL restart the first
    statement meets a dead pooled connection, and its failure discards the pool's dead ones."""
    try:
        return fn(*args)
    except CONNECTION_ERRORS:
        return fn(*args)


def is_postgres() -> bool:
    return engine().dialect.name == "postgresql"
