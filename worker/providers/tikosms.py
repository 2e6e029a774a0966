"""TikoSMS (seed 002): single and bulk send, push reports to ``callback_url``, poll ``get_message``.

Herald's message id travels as ``client_ref``; TikoSMS echoes it in every report row.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import httpx

from campaigns.errors import Permanent
from campaigns.reports import StatusReport
from campaigns.settings import ProviderAccount
from campaigns.statuses import MessageStatus
from worker.providers.base import (
    Accepted, BaseProvider, Outgoing, bearer_client, classify, error_text, json_body, parse_time, reference_id, to_decimal,
    transport_errors,
)

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

# `sms-rates` is keyed by MCC (ITU E.212), which phonenumbers does not know: regions not listed
# here have no TikoSMS price lookup (the account's configured `prices` still apply).
MCC = {"GB": "234", "GG": "234", "JE": "234", "IM": "234", "US": "310", "UA": "255", "DE": "262",
       "FR": "208", "IT": "222", "ES": "214", "NL": "204", "PL": "260", "UZ": "434", "KZ": "401",
       "NG": "621", "KE": "639", "ZA": "655", "IN": "404", "BR": "724", "RU": "250", "JP": "440"}

BULK_MAX = 100_000


def map_status(raw: str | None) -> MessageStatus | None:
    return STATUS_MAP.get((raw or "").upper())


def _raise_for(response: httpx.Response, data: dict):
    detail = error_text(data)
    low = detail.lower()
    # 403 "No SMS rate is available for this destination": another account may carry it.
    # 422 "Invalid callback URL": our configuration, not the message, is at fault.
    raise classify(response, detail, no_route=response.status_code == 403 and "rate" in low,
                   provider_level=response.status_code == 422 and "callback" in low)


class TikoSmsProvider(BaseProvider):
    kind: ClassVar[str] = "tikosms"
    max_sender: ClassVar[int | None] = 15
    max_chars: ClassVar[int | None] = 160
    pushes_reports: ClassVar[bool] = True

    def __init__(self, account: ProviderAccount, client: httpx.Client | None = None):
        self.client = client or bearer_client(account)

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
        data = json_body(response)
        if response.status_code != 200 or not data.get("success"):
            _raise_for(response, data)
        if not data.get("message_id"):
            raise Permanent("accepted without a message_id")
        return Accepted(str(data["message_id"]), "ACCEPTD", MessageStatus.SENT)

    def send_bulk(self, messages: list[Outgoing], callback_url: str | None = None) -> str:
        """One ``POST /v1/messages`` for many recipients of one text; returns TikoSMS's campaign id.

        Reports (pushed, or ``fetch_campaign``) carry each recipient's ``client_ref``.
        """
        if not messages or len(messages) > BULK_MAX:
            raise ValueError(f"a bulk send takes 1 to {BULK_MAX} messages")
        if len({(m.sender, m.body) for m in messages}) != 1:
            raise ValueError("a bulk send carries one sender and one text")
        body = {
            "from": messages[0].sender, "message": messages[0].body,
            "recipients": [{"to": m.to.lstrip("+"), "client_ref": m.reference} for m in messages],
        }
        if callback_url:
            body["callback_url"] = callback_url
        with transport_errors():
            response = self.client.post("/v1/messages", json=body)
        data = json_body(response)
        if response.status_code != 200 or not data.get("success"):
            _raise_for(response, data)
        return str(data["campaign_id"])

    def fetch_campaign(self, campaign_id: str) -> list[StatusReport]:
        return self._get_message({"campaign_id": campaign_id})

    def parse_report(self, payload: dict) -> list[StatusReport]:
        rows = payload.get("data") if isinstance(payload.get("data"), list) else [payload]
        return [_report(row) for row in rows if isinstance(row, dict)]

    def fetch_status(self, provider_message_id: str) -> StatusReport | None:
        reports = self._get_message({"message_id": provider_message_id})
        return reports[0] if reports else None

    def _get_message(self, params: dict) -> list[StatusReport]:
        data = self.call("GET", "/v1/get_message", params=params, missing_ok=True)
        return self.parse_report(data) if data is not None else []

    def balance(self) -> Decimal | None:
        return to_decimal(self.call("GET", "/v1/balance").get("balance"))

    def price(self, region: str) -> Decimal | None:
        mcc = MCC.get(region)
        if mcc is None:
            return None
        data = self.call("GET", "/v1/sms-rates", params={"mccmnc": mcc}, missing_ok=True)
        rate = (data or {}).get("rate")
        return to_decimal(rate.get("rate")) if isinstance(rate, dict) else None


def _report(row: dict) -> StatusReport:
    raw = str(row.get("status", ""))
    return StatusReport(
        raw_status=raw,
        status=map_status(raw),
        provider_message_id=row.get("message_id"),
        message_id=reference_id(row.get("client_ref")),
        cost=to_decimal(row.get("cost")),
        at=parse_time(row.get("delivered_at")) or parse_time(row.get("sent_at")),
        extra={k: row[k] for k in ("part", "total_parts", "mccmnc") if k in row},
    )


__all__ = ["TikoSmsProvider"]
