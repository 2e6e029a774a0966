"""The emulator's shared state (knobs, records, request log) and its ASGI app."""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from queue import Empty, SimpleQueue
from dataclasses import asdict, dataclass, field

import httpx
import phonenumbers
from fastapi import FastAPI, Request
from pydantic import BaseModel

# The kinds of failure a send can be made to answer, each with a documented status code.
ERROR_STATUS = {"auth": 401, "credits": 402, "forbidden": 403, "rate": 429, "server": 500}
PUSH_THREADS = 32  # report pushes in flight at once


class Knobs(BaseModel):
    """Behaviour an emulator can be asked for; all default to a fast, well-behaved provider."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    # Fractions of send requests answered with each error instead of being accepted.
    fail_5xx: float = 0.0
    fail_401: float = 0.0  # credentials refused
    fail_402: float = 0.0  # out of credit
    fail_403: float = 0.0  # missing permission / no rate for this destination
    fail_429: float = 0.0
    # A rate limit per account: more than this many requests in the window answer 429.
    rate_limit: int = 0
    rate_window_s: float = 1.0
    # Retry-After sent with a 429 (default: the rest of the rate window, rounded up).
    retry_after_s: int | None = None
    # "Accept then answer late": the message is recorded, then the answer waits this long
    # (past the client's timeout, the send is ambiguous) for this share of sends.
    answer_late_ms: float = 0.0
    answer_late_ratio: float = 0.0
    # Delay before a pushed delivery report, and the share of messages that end delivered.
    report_delay_ms: float = 50.0
    delivered_ratio: float = 1.0
    push_reports: bool = True
    # Keep pushed reports back until POST /_emulator/release (the benchmark times them apart).
    hold_reports: bool = False
    tokens: list[str] = ["test-token"]
    # Laravel v1 form credentials: username -> password.
    users: dict[str, str] = {"test-user": "test-pass"}
    seed: int | None = None


@dataclass
class Record:
    provider: str
    message_id: str
    to: str
    sender: str
    body: str
    client_ref: str | None
    callback_url: str | None
    status: str
    account: str = ""
    price: float | None = None
    seq: int = 0  # the provider's numeric id where it has one
    accepted_at: float = field(default_factory=time.time)
    delivered_at: float | None = None


class Emulator:
    """State shared by the provider routers; safe to read from another thread."""

    def __init__(self, knobs: Knobs | None = None):
        self.knobs = knobs or Knobs()
        self.records: list[Record] = []
        self.by_id: dict[str, Record] = {}
        # (arrival time, provider, path, status answered, account: a hash of the credential,
        #  time the answer was sent)
        self.requests: list[tuple[float, str, str, int, str, float]] = []
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}
        self.reports_pushed = 0
        self.reports_failed = 0
        self.last_pushed_at = 0.0  # wall time the last successful push was answered
        # Requests being served right now, and the most ever at once, per path.
        self.current: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.held: list[tuple[str, dict]] = []
        self.push_seconds: list[float] = []  # round trip of each successful report push
        self._lock = threading.Lock()
        self.rng = random.Random(self.knobs.seed)
        # Reports are pushed from threads with a blocking client: httpx's async pool spent 2-7 ms
        # of CPU per request under a burst, the blocking one under 1 ms (see `herald bench`).
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- helpers used by provider routers -------------------------------------------------
    async def delay(self) -> None:
        k = self.knobs
        if k.latency_ms or k.jitter_ms:
            await asyncio.sleep(max(0.0, k.latency_ms + self.rng.uniform(-k.jitter_ms, k.jitter_ms)) / 1000)

    @contextmanager
    def in_flight(self, path: str) -> Iterator[None]:
        with self._lock:
            self.current[path] = self.current.get(path, 0) + 1
            self.peak[path] = max(self.peak.get(path, 0), self.current[path])
        try:
            yield
        finally:
            with self._lock:
                self.current[path] -= 1

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bearer ") and header[7:] in self.knobs.tokens

    def roll(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    def log_request(self, provider: str, path: str, status: int = 0, account: str = "",
                    at: float | None = None) -> None:
        self.requests.append((at or time.time(), provider, path, status, account, time.time()))

    def gate(self, provider: str, account: str, authorised: bool, *, send: bool) -> tuple[int, float] | None:
        """The failure to answer instead of serving, as (status, retry_after), or None."""
        if not authorised:
            return 401, 0
        k = self.knobs
        if k.rate_limit:
            now = time.monotonic()
            with self._lock:
                start, count = self._windows.get((provider, account), (now, 0))
                if now - start >= k.rate_window_s:
                    start, count = now, 0
                self._windows[(provider, account)] = (start, count + 1)
            if count >= k.rate_limit:
                wait = k.retry_after_s if k.retry_after_s is not None else \
                    math.ceil(k.rate_window_s - (now - start))
                return 429, wait
        if not send:
            return None
        for status, rate in ((401, k.fail_401), (402, k.fail_402), (403, k.fail_403),
                             (429, k.fail_429), (500, k.fail_5xx)):
            if self.roll(rate):
                return status, (k.retry_after_s if k.retry_after_s is not None else 1)
        return None

    async def answer_late(self) -> None:
        if self.knobs.answer_late_ms and self.roll(self.knobs.answer_late_ratio):
            await asyncio.sleep(self.knobs.answer_late_ms / 1000)

    def settle_later(self, record: Record, delivered: str, failed: str, on_final=None) -> None:
        """After the report delay, give the message its final status and tell ``on_final``."""
        async def settle() -> None:
            await asyncio.sleep(self.knobs.report_delay_ms / 1000)
            if record.status in (delivered, failed, "cancelled"):
                return
            record.status = delivered if self.final_status() else failed
            record.delivered_at = time.time()
            if on_final is not None and record.callback_url and self.knobs.push_reports:
                await on_final(record)

        asyncio.get_running_loop().create_task(settle())

    def accept(self, record: Record) -> Record:
        with self._lock:
            record.seq = len(self.records) + 1
            self.records.append(record)
            self.by_id[record.message_id] = record
        return record

    def final_status(self) -> bool:
        return self.rng.random() < self.knobs.delivered_ratio

    async def push(self, url: str, payload: dict) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pushers(), self._push, url, payload)

    def _pushers(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._client = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=PUSH_THREADS))
            self._pool = ThreadPoolExecutor(PUSH_THREADS, thread_name_prefix="push")
        return self._pool

    def _push(self, url: str, payload: dict) -> None:
        """POST a report, retrying a few times like a real provider would (on a push thread)."""
        for attempt in range(5):
            started = time.perf_counter()
            try:
                if self._client.post(url, json=payload).status_code < 500:
                    with self._lock:
                        self.push_seconds.append(time.perf_counter() - started)
                        self.reports_pushed += 1
                        self.last_pushed_at = time.time()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2 * 2 ** attempt)
        with self._lock:
            self.reports_failed += 1

    async def report(self, url: str, payload: dict) -> None:
        if self.knobs.hold_reports:
            self.held.append((url, payload))
        else:
            await self.push(url, payload)

    async def release(self, to: str | None = None, keep: bool = False) -> int:
        """Push every held report from the push threads; returns how many were held.

        ``to`` (scheme://host:port) sends them to the same paths on another server, and ``keep``
        holds them still: the benchmark pushes the same reports to a bare receiver first.
        """
        held = self.held
        if not keep:
            self.held = []
        queue: SimpleQueue = SimpleQueue()
        for url, payload in held:
            if to is not None:
                parts = httpx.URL(url)
                url = str(httpx.URL(to).copy_with(path=parts.path, query=parts.query or None))
            queue.put((url, payload))

        def pusher() -> None:
            while not queue.empty():
                try:
                    self._push(*queue.get_nowait())
                except Empty:
                    return

        pool = self._pushers()
        for _ in range(PUSH_THREADS):
            pool.submit(pusher)
        return len(held)

    def stats(self) -> dict:
        return {"accepted": len(self.records), "requests": len(self.requests), "held": len(self.held),
                "reports_pushed": self.reports_pushed, "reports_failed": self.reports_failed,
                "last_pushed_at": self.last_pushed_at}

    def find(self, provider: str, message_id: str) -> Record | None:
        record = self.by_id.get(message_id)
        return record if record is not None and record.provider == provider else None

    def snapshot(self) -> dict:
        with self._lock:
            records = [asdict(r) for r in self.records]
        return {"records": records, "requests": list(self.requests), "push_seconds": list(self.push_seconds),
                "reports_pushed": self.reports_pushed, "reports_failed": self.reports_failed,
                "peak_in_flight": dict(self.peak)}


class _CountInFlight:
    """Plain ASGI middleware (cheap): counts requests being served per path."""

    def __init__(self, app, emulator: Emulator):
        self.app, self.emulator = app, emulator

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        with self.emulator.in_flight(scope["path"]):
            await self.app(scope, receive, send)


def account_of(request: Request) -> str:
    """Who is asking, as a short hash of the credential (the request log never holds secrets)."""
    credential = (request.headers.get("authorization") or request.headers.get("x-api-key")
                  or request.query_params.get("api_key") or request.query_params.get("username") or "")
    return hashlib.sha256(credential.encode()).hexdigest()[:12] if credential else ""


def valid_number(raw: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse("+" + str(raw).strip().lstrip("+")))
    except phonenumbers.NumberParseException:
        return False


PREFIXES = ("aikdata", "laravel", "mobsms", "smsforai", "tikosms")


async def json_or_empty(request: Request) -> dict:
    """The body as a JSON object, or {} for anything else: each provider then names what is missing."""
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def create_app(emulator: Emulator | None = None) -> FastAPI:
    from worker.emulator import aikdata, laravel, mobsms, smsforai, tikosms

    emulator = emulator or Emulator()
    app = FastAPI(title="Herald provider emulators")
    app.state.emulator = emulator
    app.include_router(aikdata.router(emulator), prefix="/aikdata/v1/sms")
    app.include_router(laravel.router(emulator), prefix="/laravel")
    app.include_router(mobsms.router(emulator), prefix="/mobsms")
    app.include_router(smsforai.router(emulator), prefix="/smsforai/api/v1")
    app.include_router(tikosms.router(emulator), prefix="/tikosms")

    app.add_middleware(_CountInFlight, emulator=emulator)

    @app.middleware("http")
    async def log_requests(request: Request, call_next):
        # Logged on arrival time, with the status answered: tests read timing from here.
        arrived = time.time()
        response = await call_next(request)
        provider, _, path = request.url.path.lstrip("/").partition("/")
        if provider in PREFIXES:
            emulator.log_request(provider, "/" + path, response.status_code, account_of(request), arrived)
        return response

    @app.get("/_emulator/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/_emulator/records")
    def records() -> dict:
        return emulator.snapshot()

    @app.get("/_emulator/stats")
    def stats() -> dict:
        return emulator.stats()

    @app.post("/_emulator/release")
    async def release(to: str | None = None, keep: bool = False) -> dict:
        return {"released": await emulator.release(to, keep)}

    @app.put("/_emulator/knobs")
    def set_knobs(knobs: Knobs) -> Knobs:
        emulator.knobs = knobs
        return knobs

    return app
