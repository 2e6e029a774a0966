"""MobSMS (seed 003), an Android-phone gateway: ``POST /api/sms``, ``GET /api/sms/{id}``, cancel.

Each message carries its own ``callback_url``, which receives ``{"event": "status", "data":
{...message...}}``. Herald's message id travels as ``my_id``, which the document calls "echoed
back" but shows in no answer: nothing here relies on it, and a row that does carry it is used
(a my_id names its message). The price is the sending device's ``sms_rate`` (``GET /api/devices``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import ClassVar

import httpx

from campaigns.errors import InvalidReport, Permanent
from campaigns.optout import InboundMessage
from campaigns.reports import StatusReport
from campaigns.settings import ProviderAccount
from campaigns.statuses import MessageStatus
from worker.providers.base import (
    Accepted, BaseProvider, Outgoing, SentQuery, bearer_client, classify, error_text, json_body, parse_time,
    reference_id, to_decimal, transport_errors,
)

STATUS_MAP = {
    "pending": MessageStatus.SENT,  # queued on the phone: the provider has it
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "failed": MessageStatus.FAILED,
    "cancelled": MessageStatus.CANCELLED,
    # "received" is an inbound message: not an outcome of ours, so it stays unmapped.
}
# The provider's clock and Herald's may differ: history this much older than the claim is searched too.
CLOCK_SKEW = timedelta(minutes=5)
LOOKUP_MAX_PAGES = 100  # a busier history than this proves nothing either way: no match


class MobSmsProvider(BaseProvider):
    kind: ClassVar[str] = "mobsms"
    max_chars: ClassVar[int | None] = 1600
    pushes_reports: ClassVar[bool] = True
    lookup_by_reference: ClassVar[bool] = True

    def __init__(self, account: ProviderAccount, client: httpx.Client | None = None):
        self.client = client or bearer_client(account, Accept="application/json")

    def send(self, message: Outgoing) -> Accepted:
        body = {"message": message.body, "recipient_number": message.to, "my_id": message.reference}
        if message.callback_url:
            body["callback_url"] = message.callback_url
        with transport_errors():
            response = self.client.post("/api/sms", json=body)
        data = json_body(response)
        if response.status_code not in (200, 201) or not data.get("success"):
            detail = error_text(data)
            # "No active device available": the account cannot send anything right now.
            raise classify(response, detail, provider_level="device" in detail.lower())
        row = data.get("data") or {}
        if not row.get("message_id") and not row.get("id"):
            raise Permanent("accepted without an id")
        raw = str(row.get("status", ""))
        return Accepted(str(row.get("message_id") or row["id"]), raw,
                        STATUS_MAP.get(raw, MessageStatus.SENT), cost=to_decimal(row.get("price")))

    def parse_report(self, payload: dict) -> list[StatusReport]:
        row = payload.get("data")
        if payload.get("event") not in (None, "status") or not isinstance(row, dict):
            return []
        return [_report(row)]

    def parse_inbound(self, payload: dict) -> list[InboundMessage]:
        """The incoming webhook: ``{"event": ..., "data": <an /api/sms/inbox row>}``."""
        row = payload.get("data")
        if not isinstance(row, dict) or not isinstance(row.get("sender_number"), str) \
                or not isinstance(row.get("message"), str):
            raise InvalidReport("an inbound message needs data.sender_number and data.message")
        return [InboundMessage(sender=row["sender_number"], text=row["message"])]

    def fetch_status(self, provider_message_id: str) -> StatusReport | None:
        data = self.call("GET", f"/api/sms/{provider_message_id}", missing_ok=True)
        if data is None:
            return None
        return _report(data["data"]) if isinstance(data.get("data"), dict) else None

    def fetch_by_reference(self, query: SentQuery) -> StatusReport | None:
        """The message Herald sent, found from what the documented API returns.

        With the provider's id (its send answer was read), that message. Otherwise the outbound
        history, newest first as documented, back to the claim: the one row with our recipient
        and text. Two such rows (the same text sent to the same number twice) name neither, so
        nothing is returned; neither is when no row matches (the history is not proof of absence).
        """
        if query.provider_message_id:
            return self.fetch_status(query.provider_message_id)
        since = query.since if query.since.tzinfo else query.since.replace(tzinfo=timezone.utc)  # SQLite
        oldest = since - CLOCK_SKEW
        matches: list[dict] = []
        for page in range(1, LOOKUP_MAX_PAGES + 1):
            data = self.call("GET", "/api/sms", params={"direction": "outbound", "page": page})
            listing = data.get("data") or {}
            rows = listing.get("data") or []
            for row in rows:
                created = parse_time(row.get("created_at"))
                if created is not None and created < oldest:
                    return _single(matches, query.reference)
                if row.get("my_id") is not None:
                    if str(row["my_id"]) == query.reference:
                        return _report(row)
                    continue  # it names another message
                if row.get("recipient_number") == query.to and row.get("message") == query.body:
                    matches.append(row)
            if len(rows) < int(listing.get("per_page") or 50):
                return _single(matches, query.reference)
        return None

    def cancel(self, provider_message_id: str) -> bool:
        with transport_errors():
            response = self.client.post(f"/api/sms/{provider_message_id}/cancel")
        if response.status_code == 422:
            return False  # "Only pending messages can be cancelled"
        data = json_body(response)
        if response.status_code != 200:
            raise classify(response, error_text(data))
        return bool(data.get("success"))

    def balance(self) -> Decimal | None:
        data = self.call("GET", "/api/account")
        return to_decimal(((data.get("data") or {}).get("user") or {}).get("balance"))

    def price(self, region: str) -> Decimal | None:
        """The default active device's ``sms_rate`` (a phone prices every destination alike)."""
        data = self.call("GET", "/api/devices")
        devices = [d for d in data.get("data") or [] if d.get("is_active")]
        devices.sort(key=lambda d: not d.get("is_default"))
        return to_decimal(devices[0].get("sms_rate")) if devices else None


def _single(matches: list[dict], reference: str) -> StatusReport | None:
    if len(matches) != 1:
        return None
    return replace(_report(matches[0]), message_id=reference_id(reference))


def _report(row: dict) -> StatusReport:
    raw = str(row.get("status", ""))
    at: datetime | None = parse_time(row.get("delivered_at")) or parse_time(row.get("sent_at"))
    return StatusReport(
        raw_status=raw, status=STATUS_MAP.get(raw),
        provider_message_id=str(row.get("message_id") or row.get("id") or "") or None,
        message_id=reference_id(row.get("my_id")), cost=to_decimal(row.get("price")), at=at,
        error=(str(row["error_message"])[:200] if row.get("error_message") else None),
    )
