"""Fixtures for tests against the real PostgreSQL, Redis, Celery workers and emulators.

A test that needs a service skips with the reason when it is absent, except when
HERALD_REQUIRE_SERVICES=1 (CI), where it fails instead. Each test session gets its own
PostgreSQL database (HERALD_TEST_DB) and Redis database number (HERALD_TEST_REDIS_DB), so
several checkouts can run their suites side by side; each pytest-xdist process of one session
gets its own too (the name suffixed, the number plus the process's index).

Most tests wait on latency (workers starting, emulated providers), so the suite runs in two
processes (``-n 2`` in pyproject.toml). The tests that load the machine with worker fleets share
the group ``FLEET``, so they run one at a time in one process and never load each other.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
import redis as redis_lib
from fastapi import FastAPI, Request  # module level: FastAPI resolves the route's annotations here

from campaigns import db
from campaigns.settings import ProviderAccount, Settings, configure

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("HERALD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
_XDIST = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under pytest-xdist, else empty
PG_DB = os.environ.get("HERALD_TEST_DB", "herald_test") + (f"_{_XDIST}" if _XDIST else "")
REDIS_BASE = os.environ.get("HERALD_TEST_REDIS", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("HERALD_TEST_REDIS_DB", "1")) + int(_XDIST[2:] or 0)
FLEET = pytest.mark.xdist_group("fleet")
REQUIRED = os.environ.get("HERALD_REQUIRE_SERVICES") == "1"
SECRET = "test-secret-not-for-production"


def _unavailable(what: str, exc: Exception):
    reason = f"{what} is not reachable ({type(exc).__name__}); start it to run this test"
    if REQUIRED:
        pytest.fail(f"{reason} (HERALD_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_url() -> str:
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{PG_DB}"')
    except psycopg.OperationalError as exc:
        _unavailable("PostgreSQL", exc)
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{PG_DB}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = f"{REDIS_BASE}/{REDIS_DB}"
    try:
        redis_lib.Redis.from_url(url, socket_connect_timeout=3).flushdb()
    except redis_lib.RedisError as exc:
        _unavailable("Redis", exc)
    return url


def provider_accounts(emulator_url: str) -> dict[str, ProviderAccount]:
    return {
        "tiko": ProviderAccount(kind="tikosms", base_url=f"{emulator_url}/tikosms",
                                token="test-token", timeout_s=5, prices={"*": "0.05"}),
    }


@pytest.fixture(scope="session")
def emulator():
    from worker.emulator.process import EmulatorProcess

    with EmulatorProcess() as emu:
        yield emu


@pytest.fixture(scope="module")
def receiver():
    """A webhook receiver standing in for Herald: keeps every pushed body, answers 200."""
    from worker.api.serving import ServerThread

    bodies: list[dict] = []
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request):
        bodies.append(await request.json())
        return {}

    with ServerThread(app) as server:
        server.bodies = bodies
        yield server


@pytest.fixture(scope="session")
def api_server():
    """Herald's HTTP app in this process: provider webhooks land here."""
    from worker.api.http import create_app
    from worker.api.serving import ServerThread

    with ServerThread(create_app()) as server:
        yield server


@pytest.fixture(scope="session")
def service_env(pg_url, redis_url, emulator, api_server) -> dict[str, str]:
    """Environment naming the real services; this process and every subprocess share it."""
    from worker.app import configure_app

    env = {
        "HERALD_DATABASE_URL": pg_url,
        "HERALD_BROKER_URL": redis_url,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_SECRET_KEY": SECRET,
        "HERALD_PUBLIC_URL": api_server.url,
        "HERALD_PROVIDERS": _accounts_json(emulator.url),
        "HERALD_DEFAULT_PROVIDER": "tiko",
        "HERALD_CALLBACK_ALLOW_PRIVATE": "true",  # test receivers listen on 127.0.0.1
    }
    # Subprocesses get `env`; this process gets the same values without touching os.environ.
    settings = configure(Settings(
        database_url=pg_url, broker_url=redis_url, redis_url=redis_url, secret_key=SECRET,
        public_url=api_server.url, providers=provider_accounts(emulator.url), default_provider="tiko",
        callback_allow_private=True,
    ))
    configure_app(settings)
    from campaigns import migrate

    migrate.upgrade()
    return env, settings


def _accounts_json(emulator_url: str) -> str:
    import json

    return json.dumps({
        name: {**acct.model_dump(mode="json"), "token": acct.token.get_secret_value()}
        for name, acct in provider_accounts(emulator_url).items()
    })


@pytest.fixture
def services(service_env):
    """Real PostgreSQL + Redis, clean for this test; returns the environment naming them."""
    from sqlalchemy import text

    from worker.app import configure_app

    env, settings = service_env
    configure_app(configure(settings))
    with db.session() as s:
        s.execute(text("TRUNCATE campaigns, messages, rejections, delivery_reports, suppressions, api_keys CASCADE"))
        s.execute(text("DELETE FROM services WHERE id <> 1"))  # the migration's `default` stays
        s.execute(text("UPDATE services SET high_priority = false"))  # as the migration left it
    redis_lib.Redis.from_url(env["HERALD_REDIS_URL"]).flushdb()
    return env


@pytest.fixture
def api_key(services) -> str:
    """A live API key with every scope, in the test database."""
    from campaigns import apikeys

    return apikeys.create_key("tests")[1]


@pytest.fixture
def api_headers(api_key) -> dict[str, str]:
    """Headers that authorise a request to the HTTP API."""
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def api_client(api_server, api_headers):
    """An httpx client for the running HTTP API (``api_server``), authorised with every scope."""
    with httpx.Client(base_url=api_server.url, headers=api_headers, timeout=10) as client:
        yield client


class WorkerProcess:
    """A real `celery -A worker worker` subprocess."""

    def __init__(self, env: dict[str, str], *args: str, name: str | None = None):
        self.name = name or f"test-{uuid.uuid4().hex[:8]}"
        self.log = Path(f"/tmp/herald-worker-{self.name}.log")
        self.cmd = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel", "INFO",
                    "--hostname", f"{self.name}@%h", "--without-mingle", "--without-gossip", *args]
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=self.log.open("w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while " ready." not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:  # a warm shutdown stuck on a task (its broker gone) is not worth waiting for
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(services):
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess({**services, **(env or {})}, *args).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_for(predicate, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def sqlite_settings(tmp_path):
    """The embedded default: a fresh SQLite file, no broker, no Redis."""
    from campaigns import migrate
    from campaigns.settings import get_settings

    previous = get_settings()
    settings = configure(Settings(database_url=f"sqlite:///{tmp_path / 'herald.db'}",
                                  secret_key=SECRET, _env_file=None))
    migrate.upgrade()
    yield settings
    configure(previous)


__all__ = ["FLEET", "WorkerProcess", "wait_for", "httpx"]
