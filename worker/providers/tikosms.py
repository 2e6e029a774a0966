"""TikoSMS (seed 002): single-message API, push reports to ``callback_url``, poll ``get_message``."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import ClassVar

import httpx

from campaigns.errors import Permanent, ProviderError
from campaigns.reports import StatusReport
from campaigns.settings import ProviderAccount
from campaigns.statuses import MessageStatus
from worker.providers.base import Accepted, Outgoing, classify, http_client, transport_errors

# SMPP-style statuses (DELIVRD, UNDELIV, ...) as TikoSMS reports them.
STATUS_MAP = {
    "ACCEPTD": MessageStatus.SENT,
    "ENROUTE": MessageStatus.SENT,
    "SENT": MessageStatus.SENT,
    "PENDING": MessageStatus.SENT,
    "DELIVRD": MessageStatus.DELIVERED,
    "UNDELIV": MessageStatus.FAILED,
    "REJECTD": MessageStatus.FAILED,
    "DELETED": MessageStatus.FAILED,
    "EXPIRED": MessageStatus.EXPIRED,
}


def map_status(raw: str | None) -> MessageStatus | None:
    return STATUS_MAP.get((raw or "").upper())


class TikoSmsProvider:
    kind: ClassVar[str] = "tikosms"
    pushes_reports: ClassVar[bool] = True
    max_sender = 15
    max_chars = 160

    def __init__(self, account: ProviderAccount, client: httpx.Client | None = None):
        self.client = client or http_client(
            account, Authorization=f"Bearer {account.token.get_secret_value()}"
        )

    def send(self, message: Outgoing) -> Accepted:
        body = {
            "from": message.sender,
            "message": message.body,
            "to": message.to.lstrip("+"),
            "client_ref": message.reference,
        }
        if message.callback_url:
            body["callback_url"] = message.callback_url
        with transport_errors():
            response = self.client.post("/v1/message", json=body)
        data = _json(response)
        if response.status_code != 200 or not data.get("success"):
            raise classify(response, str(data.get("error", ""))[:200])
        if not data.get("message_id"):
            raise Permanent("accepted without a message_id")
        return Accepted(str(data["message_id"]), "ACCEPTD", MessageStatus.SENT)

    def parse_report(self, payload: dict) -> list[StatusReport]:
        rows = payload.get("data") if isinstance(payload.get("data"), list) else [payload]
        return [_report(row) for row in rows if isinstance(row, dict)]

    def fetch_status(self, provider_message_id: str) -> StatusReport | None:
        with transport_errors():
            response = self.client.get("/v1/get_message", params={"message_id": provider_message_id})
        if response.status_code == 404:
            return None
        data = _json(response)
        if response.status_code != 200:
            raise classify(response, str(data.get("error", ""))[:200])
        reports = self.parse_report(data)
        return reports[0] if reports else None

    def close(self) -> None:
        self.client.close()


def _json(response: httpx.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _report(row: dict) -> StatusReport:
    raw = str(row.get("status", ""))
    ref = row.get("client_ref")
    return StatusReport(
        raw_status=raw,
        status=map_status(raw),
        provider_message_id=row.get("message_id"),
        message_id=int(ref) if isinstance(ref, str) and ref.isdigit() else None,
        cost=_decimal(row.get("cost")),
        at=_time(row.get("delivered_at")) or _time(row.get("sent_at")),
        extra={k: row[k] for k in ("part", "total_parts", "mccmnc") if k in row},
    )


def _decimal(value) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


def _time(value) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


__all__ = ["TikoSmsProvider", "ProviderError"]
