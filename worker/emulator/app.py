"""The emulator's shared state (knobs, records, request log) and its ASGI app."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import httpx
from fastapi import FastAPI, Request
from pydantic import BaseModel


class Knobs(BaseModel):
    """Behaviour an emulator can be asked for; all default to a fast, well-behaved provider."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    # Fractions of send requests answered with each error instead of being accepted.
    fail_5xx: float = 0.0
    # Delay before a pushed delivery report, and the share of messages that end delivered.
    report_delay_ms: float = 50.0
    delivered_ratio: float = 1.0
    push_reports: bool = True
    # Keep pushed reports back until POST /_emulator/release (the benchmark times them apart).
    hold_reports: bool = False
    tokens: list[str] = ["test-token"]
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
    accepted_at: float = field(default_factory=time.time)
    delivered_at: float | None = None


class Emulator:
    """State shared by the provider routers; safe to read from another thread."""

    def __init__(self, knobs: Knobs | None = None):
        self.knobs = knobs or Knobs()
        self.records: list[Record] = []
        self.by_id: dict[str, Record] = {}
        self.requests: list[tuple[float, str, str]] = []  # (time, provider, path)
        self.reports_pushed = 0
        self.reports_failed = 0
        # Requests being served right now, and the most ever at once, per path.
        self.current: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.held: list[tuple[str, dict]] = []
        self.push_seconds: list[float] = []  # round trip of each successful report push
        self._lock = threading.Lock()
        self.rng = random.Random(self.knobs.seed)
        self._client: httpx.AsyncClient | None = None

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

    def log_request(self, provider: str, path: str) -> None:
        self.requests.append((time.time(), provider, path))

    def accept(self, record: Record) -> Record:
        with self._lock:
            self.records.append(record)
            self.by_id[record.message_id] = record
        return record

    def final_status(self) -> bool:
        return self.rng.random() < self.knobs.delivered_ratio

    async def push(self, url: str, payload: dict) -> None:
        """POST a report, retrying a few times like a real provider would."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=50))
        for attempt in range(5):
            try:
                started = time.perf_counter()
                response = await self._client.post(url, json=payload)
                if response.status_code < 500:
                    self.push_seconds.append(time.perf_counter() - started)
                    self.reports_pushed += 1
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2 * 2 ** attempt)
        self.reports_failed += 1

    async def report(self, url: str, payload: dict) -> None:
        if self.knobs.hold_reports:
            self.held.append((url, payload))
        else:
            await self.push(url, payload)

    async def release(self, concurrency: int = 64) -> int:
        """Push every held report, ``concurrency`` at a time; returns how many were held."""
        held, self.held = self.held, []
        queue = iter(held)

        async def pusher() -> None:
            for url, payload in queue:
                await self.push(url, payload)

        # Referenced until done: the event loop keeps only weak references to tasks.
        self._pushers = {asyncio.get_running_loop().create_task(pusher()) for _ in range(concurrency)}
        return len(held)

    def stats(self) -> dict:
        return {"accepted": len(self.records), "requests": len(self.requests), "held": len(self.held),
                "reports_pushed": self.reports_pushed, "reports_failed": self.reports_failed}

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


def create_app(emulator: Emulator | None = None) -> FastAPI:
    from worker.emulator import tikosms

    emulator = emulator or Emulator()
    app = FastAPI(title="Herald provider emulators")
    app.state.emulator = emulator
    app.include_router(tikosms.router(emulator), prefix="/tikosms")

    app.add_middleware(_CountInFlight, emulator=emulator)

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
    async def release() -> dict:
        return {"released": await emulator.release()}

    @app.put("/_emulator/knobs")
    def set_knobs(knobs: Knobs) -> Knobs:
        emulator.knobs = knobs
        return knobs

    return app
