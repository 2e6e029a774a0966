"""SMS for AI (seed 004): ``POST /sms/send``, poll ``GET /sms/{id}``; Bearer ``smsai_`` token.

Errors as documented: 401 token, 403 permission / IP / spending limit, 402 credits (all stop
the account), 422 validation (the message), 429 rate limit, 500 gateway failure (retried).
Prices per country from ``GET /countries``, read once per process.

The 429 is "per-minute or per-day" and documents no header: a per-minute 429 waits longer each
time in a row (1 s doubling up to a minute, the window's length); a per-day one holds the
account until the next UTC midnight (the day's boundary is not documented: an assumption),
asking again at least hourly in case that guess is wrong.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import ClassVar

import httpx

from campaigns.errors import Permanent, RateLimited
from campaigns.reports import StatusReport
from campaigns.settings import ProviderAccount
from campaigns.statuses import MessageStatus
from worker.providers.base import (
    Accepted, BaseProvider, Outgoing, bearer_client, classify, error_text, json_body, parse_time,
    retry_after, to_decimal, transport_errors,
)

STATUS_MAP = {
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "failed": MessageStatus.FAILED,
}
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0  # a per-minute window is spent within a minute
DAY_PROBE_S = 3600.0


class SmsForAiProvider(BaseProvider):
    kind: ClassVar[str] = "smsforai"
    max_chars: ClassVar[int | None] = 1600

    def __init__(self, account: ProviderAccount, client: httpx.Client | None = None):
        self.client = client or bearer_client(account, Accept="application/json")
        self._prices: dict[str, Decimal] | None = None
        self._lock = threading.Lock()
        self._limited_in_a_row = 0

    def send(self, message: Outgoing) -> Accepted:
        body = {"to": message.to, "body": message.body}
        if message.sender:
            body["sender_id"] = message.sender
        with transport_errors():
            response = self.client.post("/sms/send", json=body)
        data = json_body(response)
        if response.status_code == 429:
            raise self._rate_limited(response, error_text(data))
        if response.status_code not in (200, 201):
            raise classify(response, error_text(data))
        self._limited_in_a_row = 0
        if data.get("id") in (None, ""):
            raise Permanent("accepted without an id")
        raw = str(data.get("status", ""))
        return Accepted(str(data["id"]), raw, STATUS_MAP.get(raw, MessageStatus.SENT),
                        cost=to_decimal(data.get("price_usd")))

    def _rate_limited(self, response: httpx.Response, detail: str) -> RateLimited:
        if "per-day" in detail.lower():
            wait = min(86400 - time.time() % 86400, DAY_PROBE_S)
        else:
            with self._lock:
                self._limited_in_a_row += 1
                wait = min(FIRST_BACKOFF_S * 2 ** (self._limited_in_a_row - 1), MAX_BACKOFF_S)
        # A Retry-After, should the API ever send one, knows better than either guess.
        return RateLimited(f"provider answered 429: {detail}", retry_after=retry_after(response, wait))

    def fetch_status(self, provider_message_id: str) -> StatusReport | None:
        data = self.call("GET", f"/sms/{provider_message_id}", missing_ok=True)
        if data is None:
            return None
        raw = str(data.get("status", ""))
        return StatusReport(raw_status=raw, status=STATUS_MAP.get(raw),
                            provider_message_id=str(data.get("id") or provider_message_id),
                            cost=to_decimal(data.get("price_usd")),
                            at=parse_time(data.get("delivered_at")))

    def balance(self) -> Decimal | None:
        return to_decimal(self.call("GET", "/balance").get("credits_usd"))

    def price(self, region: str) -> Decimal | None:
        with self._lock:
            if self._prices is None:
                with transport_errors():
                    response = self.client.get("/countries")
                if response.status_code != 200:
                    raise classify(response, error_text(json_body(response)))
                rows = response.json()
                self._prices = {str(r.get("country_code")): to_decimal(r.get("price_usd"))
                                for r in rows if isinstance(r, dict)}
            return self._prices.get(region)
