"""The emulator's shared state (knobs, records, request log) and the helpers its routers share."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from queue import Empty, SimpleQueue
from dataclasses import asdict, dataclass, field

import httpx
import phonenumbers
from fastapi import Request
from pydantic import BaseModel

from worker.emulator import documents

PUSH_THREADS = 32  # report pushes in flight at once
PUSH_ATTEMPTS = 5  # a report not taken (no 2xx) is posted again, backing off, this many times in all
PUSH_BACKOFF_S = 0.2

log = logging.getLogger("worker.emulator")


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
    # The Laravel gateway's number rule is not in its document (its examples are national,
    # 0701234567): "any" takes national numbers of `laravel_region` and E.164 alike; "e164" or
    # "national" refuses the other form with the documented 400.
    laravel_number_format: str = "any"
    laravel_region: str = "KE"
    # MobSMS calls my_id "echoed back" but no answer in its document shows it: off, rows carry
    # only documented fields; on, every message row carries my_id.
    mobsms_echo_my_id: bool = False
    # SMS for AI: sends per account per day before 429 "per-day" (0: no daily quota).
    smsforai_daily_quota: int = 0
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
        self.push_answers: Counter = Counter()  # status of every report push not taken (0: no answer)
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
            if on_final is not None and self.knobs.push_reports:
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
        """POST a report as a provider does (on a push thread): only a 2xx answer takes it;
        anything else is logged with its status and posted again, backing off."""
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            started = time.perf_counter()
            try:
                status = self._client.post(url, json=payload).status_code
            except httpx.HTTPError:
                status = 0
            if 200 <= status < 300:
                with self._lock:
                    self.push_seconds.append(time.perf_counter() - started)
                    self.reports_pushed += 1
                    self.last_pushed_at = time.time()
                return
            with self._lock:
                self.push_answers[status] += 1
            # The URL carries the webhook token: only the status is logged.
            log.warning("report push not taken: answered %s (attempt %d of %d)",
                        status or "nothing", attempt, PUSH_ATTEMPTS)
            if attempt < PUSH_ATTEMPTS:
                time.sleep(PUSH_BACKOFF_S * 2 ** (attempt - 1))
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

    def drop_held(self, keep: int = 0) -> int:
        """Forget the held reports unpushed but the first ``keep``; returns how many it forgot."""
        dropped, self.held = self.held[keep:], self.held[:keep]
        return len(dropped)

    def stats(self) -> dict:
        return {"accepted": len(self.records), "requests": len(self.requests), "held": len(self.held),
                "reports_pushed": self.reports_pushed, "reports_failed": self.reports_failed,
                "push_answers": dict(self.push_answers), "last_pushed_at": self.last_pushed_at}

    def find(self, provider: str, message_id: str) -> Record | None:
        record = self.by_id.get(message_id)
        return record if record is not None and record.provider == provider else None

    def snapshot(self) -> dict:
        with self._lock:
            records = [asdict(r) for r in self.records]
        return {"records": records, "requests": list(self.requests), "push_seconds": list(self.push_seconds),
                "reports_pushed": self.reports_pushed, "reports_failed": self.reports_failed,
                "push_answers": dict(self.push_answers), "peak_in_flight": dict(self.peak)}


def account_of(request: Request) -> str:
    """Who is asking, as a short hash of the credential (the request log never holds secrets)."""
    credential = (request.headers.get("authorization") or request.headers.get("x-api-key")
                  or request.query_params.get("api_key") or request.query_params.get("username") or "")
    return hashlib.sha256(credential.encode()).hexdigest()[:12] if credential else ""


def parse_number(raw: str, region: str | None = None) -> phonenumbers.PhoneNumber | None:
    """A number in international form (with or without its +), or national with ``region``."""
    text = str(raw).strip()
    try:
        return phonenumbers.parse(text if region else "+" + text.lstrip("+"), region)
    except phonenumbers.NumberParseException:
        return None


def valid_number(raw: str, region: str | None = None) -> bool:
    number = parse_number(raw, region)
    return number is not None and phonenumbers.is_valid_number(number)




async def json_body(request: Request) -> object:
    """The parsed JSON body; None when there is none, ``documents.NOT_JSON`` when it does not parse."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return documents.NOT_JSON


async def checked(request: Request, provider: str, path: str) -> tuple[dict, str | None]:
    """The request's JSON object, and why the provider's document refuses the request (or None).

    ``path`` is the document's path template (``/api/sms/{id}``), not the URL.
    """
    body = await json_body(request)
    problem = documents.operation(provider, request.method, path).refusal(body, dict(request.query_params))
    return (body if isinstance(body, dict) else {}), problem


async def admitted(emu: Emulator, request: Request, path: str, *, provider: str, refused, error,
                   send: bool = False) -> tuple[dict, object]:
    """The request's body, or the answer that refuses it: credentials and knobs first
    (``refused(request, send)``), then the provider's document (``path``: its path template),
    refused as ``error(422, why)``.

    The body is read before the latency is served: a provider's front server buffers a request
    as it arrives, so a client that dies after sending all of it has still sent it (uvicorn
    would drop a body the application had not read yet when the connection closed)."""
    await request.body()
    await emu.delay()
    if (answer := refused(request, send)) is not None:
        return {}, answer
    body, problem = await checked(request, provider, path)
    return body, (error(422, problem) if problem is not None else None)
