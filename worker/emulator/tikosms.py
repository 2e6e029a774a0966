"""TikoSMS emulator (seed 002): paths, bodies, statuses and error bodies as documented.

Single (``/v1/message``) and bulk (``/v1/messages``) sends; reports pushed to ``callback_url`` as
one ``get_message`` data row; ``get_message``, ``balance`` and ``sms-rates`` answer lookups.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from worker.emulator.app import Emulator, Record, account_of, valid_number

PROVIDER = "tikosms"
INVALID_NUMBER = "Oops! We couldn't find this number in any country on Earth. Mind giving it another look?"
ERRORS = {401: "User not authenticated", 402: "Insufficient balance",
          403: "No SMS rate is available for this destination for your account. Please contact sales team.",
          429: "Too Many Attempts.", 500: "Server Error"}
# sms-rates by MCC; destinations not listed have no rate (403 on send).
RATES = {"234": "0.045000", "255": "0.045000", "262": "0.060000", "310": "0.010000"}


def _fmt(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ts else None


def _error(status: int, error: str, retry_after: float = 0) -> JSONResponse:
    headers = {"Retry-After": str(int(retry_after))} if status == 429 else None
    return JSONResponse({"success": False, "error": error}, status_code=status, headers=headers)


def _row(r: Record, campaign_id: str) -> dict:
    return {
        "message_id": r.message_id, "campaign_id": campaign_id, "to": r.to,
        "message": r.body, "from": r.sender, "sender_type": "Alpha", "status": r.status,
        "data_coding": 0, "mccmnc": "25501", "cost": "0.050", "part": 1, "total_parts": 1,
        "sent_at": _fmt(r.accepted_at), "delivered_at": _fmt(r.delivered_at),
        "client_ref": r.client_ref, "callback_url": r.callback_url,
    }


def router(emu: Emulator) -> APIRouter:
    api = APIRouter()
    campaign_of: dict[str, str] = {}

    async def push(record: Record) -> None:
        await emu.report(record.callback_url, _row(record, campaign_of[record.message_id]))

    def refused(request: Request, send: bool) -> JSONResponse | None:
        failure = emu.gate(PROVIDER, account_of(request), emu.authorised(request), send=send)
        return _error(failure[0], ERRORS[failure[0]], failure[1]) if failure else None

    def record(body: dict, to: str, client_ref, callback_url, campaign_id: str, account: str) -> Record:
        rec = emu.accept(Record(
            provider=PROVIDER, message_id=str(uuid.uuid4()), to=str(to).lstrip("+"),
            sender=str(body["from"]), body=str(body["message"]), client_ref=client_ref,
            callback_url=callback_url, status="ENROUTE", account=account,
        ))
        campaign_of[rec.message_id] = campaign_id
        emu.settle_later(rec, "DELIVRD", "UNDELIV", push)
        return rec

    @api.post("/v1/message")
    async def send(request: Request):
        await emu.delay()
        if (answer := refused(request, True)) is not None:
            return answer
        try:
            body = await request.json()
        except ValueError:
            return _error(422, "The request body must be JSON.")
        missing = [k for k in ("from", "message", "to") if not body.get(k)]
        if missing:
            return _error(422, f"The {missing[0]} field is required.")
        if len(str(body["from"])) > 15:
            return _error(422, "The from field must not be greater than 15 characters.")
        if len(str(body["message"])) > 160:
            return _error(422, "The message field must not be greater than 160 characters.")
        if not valid_number(body["to"]):
            return _error(422, INVALID_NUMBER)
        campaign_id = str(uuid.uuid4())
        rec = record(body, body["to"], body.get("client_ref"), body.get("callback_url"),
                     campaign_id, account_of(request))
        await emu.answer_late()
        return {"success": True, "message_id": rec.message_id, "campaign_id": campaign_id}

    @api.post("/v1/messages")
    async def send_bulk(request: Request):
        await emu.delay()
        if (answer := refused(request, True)) is not None:
            return answer
        body = await request.json()
        recipients = body.get("recipients")
        if not body.get("from") or not body.get("message") or not isinstance(recipients, list):
            return _error(422, "The from, message and recipients fields are required.")
        if len(recipients) > 100_000:
            return _error(422, "The recipients field must not have more than 100000 items.")
        callback = body.get("callback_url")
        if callback is not None and not str(callback).startswith(("http://", "https://")):
            return _error(422, "Invalid callback URL provided")
        seen: set[str] = set()
        kept = []
        for item in recipients:
            to = str((item or {}).get("to", "")).lstrip("+")
            if to in seen or not valid_number(to):
                continue
            seen.add(to)
            kept.append(item)
        campaign_id = str(uuid.uuid4())
        for item in kept:
            record(body, item["to"], item.get("client_ref"), item.get("callback_url") or callback,
                   campaign_id, account_of(request))
        return {"success": True, "campaign_id": campaign_id, "recipients": len(kept),
                "duplicates_removed": len(recipients) - len(kept)}

    @api.get("/v1/get_message")
    async def get_message(request: Request, message_id: str | None = None, campaign_id: str | None = None):
        await emu.delay()
        if (answer := refused(request, False)) is not None:
            return answer
        if message_id:
            rows = [r for r in [emu.find(PROVIDER, message_id)] if r is not None]
        else:
            rows = [r for r in list(emu.records) if campaign_of.get(r.message_id) == campaign_id]
        if not rows:
            return _error(404, "Message(s) not found")
        return {"success": True, "data": [_row(r, campaign_of[r.message_id]) for r in rows]}

    @api.get("/v1/balance")
    async def balance(request: Request):
        if (answer := refused(request, False)) is not None:
            return answer
        return {"balance_updated": _fmt(time.time()).replace("-", "."), "currency_code": "EUR",
                "balance": 634.9288, "in_credit_limit": 1000}

    @api.get("/v1/sms-rates")
    async def sms_rates(request: Request, mccmnc: str):
        if (answer := refused(request, False)) is not None:
            return answer
        mcc = mccmnc[:3]
        if mcc not in RATES:
            return _error(404, "No SMS rate found for this destination.")
        return {"success": True, "rate": {"mcc": mcc, "mnc": mccmnc[3:], "mccmnc": mccmnc,
                                          "country": "", "rate": RATES[mcc],
                                          "rate_start_date": "2025-08-01 00:00:00",
                                          "rate_end_date": "2100-01-01 00:00:00"}}

    return api
