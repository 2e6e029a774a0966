"""Engine and sessions, made once per process (and again after a fork) from the settings."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from campaigns.settings import get_settings

_state: dict = {}


def _make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

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
    return create_engine(url, pool_size=32, max_overflow=8)


_init_lock = threading.Lock()


def engine() -> Engine:
    # A forked Celery child must not share its parent's connections.
    if _state.get("pid") != os.getpid():
        # Threads of a fresh worker all arrive here at once: one builds, and "pid" is set last,
        # so no thread sees a half-built state.
        with _init_lock:
            if _state.get("pid") != os.getpid():
                _state.clear()
                _state["engine"] = _make_engine(get_settings().database_url)
                _state["sessions"] = sessionmaker(_state["engine"], expire_on_commit=False)
                _state["pid"] = os.getpid()
    return _state["engine"]


def reset() -> None:
    old = _state.get("engine")
    _state.clear()
    if old is not None:
        old.dispose()


# SQLite allows one writer; threads queueing on a lock beat sqlite's sleeping busy handler.
_sqlite_lock = threading.RLock()


@contextmanager
def session() -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any error."""
    if engine().dialect.name == "sqlite":
        with _sqlite_lock, _state["sessions"].begin() as s:
            yield s
    else:
        with _state["sessions"].begin() as s:
            yield s


@contextmanager
def autocommit() -> Iterator[Connection]:
    """A Core connection whose every statement commits on its own: for the send path's single
    statements, which so need neither an ORM session nor BEGIN and COMMIT round trips (each
    costs the sending thread a wait for the GIL; see `herald bench`)."""
    if engine().dialect.name == "sqlite":
        with _sqlite_lock, _state["engine"].begin() as conn:
            yield conn
    else:
        with _state["engine"].connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn


def is_postgres() -> bool:
    return engine().dialect.name == "postgresql"
