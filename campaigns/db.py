"""Engine and sessions, made once per process (and again after a fork) from the settings."""

from __future__ import annotations

import functools
import os
import threading
import weakref
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
    # The pool serves sessions; the send path's statements run on each thread's own connection
    # (first). A connection beyond pool_size is closed when returned, and reopening one costs
    # more than a statement. Connections open only when needed, so a quiet process holds few.
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
    for own in list(_owns):
        own.close()


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

    On PostgreSQL the statement, compiled once, runs in autocommit on a connection and cursor of
    the calling thread's own (``_Own``), never the pool's: SQLAlchemy's
    per-execution work cost more than PostgreSQL's own, and taking a pooled connection, switching
    it to autocommit and back and opening a cursor were a quarter of the two statements' client CPU.
    """
    eng = engine()
    if eng.dialect.name != "postgresql":
        with _one_writer(), eng.connect() as conn:
            result = conn.execution_options(isolation_level="AUTOCOMMIT").execute(statement, params)
            return result.first() if result.returns_rows else None
    sql, fixed = _compiled(statement, eng.dialect)
    cur = _own_cursor(eng)
    try:
        cur.execute(sql, {**fixed, **params})
    except psycopg.Error:
        # A lost connection raises psycopg's own OperationalError (the send task retries on it);
        # this thread's next statement opens a new one.
        if cur.connection.broken:
            cur.connection.close()
        raise
    return cur.fetchone() if cur.description else None


class _Own:
    """A thread's own autocommit connection and cursor for ``first``, closed when its thread ends.

    A worker thread sends one message at a time, so it needs one connection, and keeps it: as
    many connections as sending threads, as the pool held when sends took theirs from it; the
    pool now serves the sessions alone. One inherited through a fork is never used here, nor
    closed (it is the parent's; psycopg does not close it either).
    """

    __slots__ = ("pid", "engine", "cursor", "__weakref__")

    def __init__(self, eng: Engine) -> None:
        pooled = eng.raw_connection()  # connected as the engine connects, then let go by the pool
        conn = pooled.driver_connection
        pooled.detach()
        conn.autocommit = True
        self.pid, self.engine, self.cursor = os.getpid(), eng, conn.cursor(row_factory=namedtuple_row)

    def usable(self, eng: Engine) -> bool:
        return self.pid == os.getpid() and self.engine is eng and not self.cursor.connection.closed

    def close(self) -> None:
        if self.pid == os.getpid():
            self.cursor.connection.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001  at interpreter exit the connection may be half torn down
            pass


_thread = threading.local()
_owns: weakref.WeakSet[_Own] = weakref.WeakSet()  # every live thread's, for reset()
_inherited: list[_Own] = []  # a forked child's from its parent


def _own_cursor(eng: Engine) -> psycopg.Cursor:
    own = getattr(_thread, "own", None)
    if own is None or not own.usable(eng):
        if own is not None and own.pid != os.getpid():
            _inherited.append(own)  # kept, not dropped: psycopg would warn it was never closed
        elif own is not None:
            own.close()  # another engine's (the settings moved), or closed by reset()
        own = _thread.own = _Own(eng)
        _owns.add(own)
    return own.cursor


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
