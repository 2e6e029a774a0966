"""AikData SMS API (seed 000): ``POST /send``, poll ``GET /messages/{id}``; Bearer token.

No reports are pushed and no reference of ours can be attached, so an ambiguous send cannot be
looked up: it ends ``unknown`` rather than being sent twice.
"""

from __future__ import annotations

from typing import ClassVar

import httpx

from campaigns.errors import Permanent
from campaigns.reports import StatusReport
from campaigns.settings import ProviderAccount
from campaigns.statuses import MessageStatus
from worker.providers.base import (
    Accepted, BaseProvider, Outgoing, bearer_client, classify, error_text, json_body, parse_time,
    transport_errors,
)

# The document shows `queued` (on send) and `delivered` (on lookup); the rest are the
# lower-case words the same family of APIs uses. Anything else stays raw and unmapped.
STATUS_MAP = {
    "queued": MessageStatus.SENT,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "failed": MessageStatus.FAILED,
    "undelivered": MessageStatus.FAILED,
    "expired": MessageStatus.EXPIRED,
}


class AikDataProvider(BaseProvider):
    kind: ClassVar[str] = "aikdata"

    def __init__(self, account: ProviderAccount, client: httpx.Client | None = None):
        self.client = client or bearer_client(account)

    def send(self, message: Outgoing) -> Accepted:
        body = {"to": message.to, "body": message.body, "from": message.sender}
        with transport_errors():
            response = self.client.post("/send", json=body)
        data = json_body(response)
        if response.status_code != 200:
            raise classify(response, error_text(data))
        if not data.get("id"):
            raise Permanent("accepted without an id")
        raw = str(data.get("status", ""))
        return Accepted(str(data["id"]), raw, STATUS_MAP.get(raw.lower(), MessageStatus.SENT))

    def fetch_status(self, provider_message_id: str) -> StatusReport | None:
        data = self.call("GET", f"/messages/{provider_message_id}", missing_ok=True)
        if data is None:
            return None
        raw = str(data.get("status", ""))
        return StatusReport(raw_status=raw, status=STATUS_MAP.get(raw.lower()),
                            provider_message_id=str(data.get("id") or provider_message_id),
                            at=parse_time(data.get("delivered_at")))
