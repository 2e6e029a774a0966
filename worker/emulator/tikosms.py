"""TikoSMS emulator (seed 002): paths, bodies, statuses and error bodies as documented.

Delivery reports are pushed to the message's ``callback_url`` as one ``get_message`` data row.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone

import phonenumbers
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from worker.emulator.app import Emulator, Record

PROVIDER = "tikosms"


def _fmt(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ts else None


def _error(status: int, error: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": error}, status_code=status)


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

    async def report_later(record: Record) -> None:
        await asyncio.sleep(emu.knobs.report_delay_ms / 1000)
        record.status = "DELIVRD" if emu.final_status() else "UNDELIV"
        record.delivered_at = time.time()
        if record.callback_url and emu.knobs.push_reports:
            await emu.report(record.callback_url, _row(record, campaign_of[record.message_id]))

    @api.post("/v1/message")
    async def send(request: Request):
        emu.log_request(PROVIDER, "/v1/message")
        await emu.delay()
        if not emu.authorised(request):
            return _error(401, "User not authenticated")
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
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse("+" + str(body["to"]).lstrip("+")))
        except phonenumbers.NumberParseException:
            valid = False
        if not valid:
            return _error(422, "Oops! We couldn't find this number in any country on Earth. Mind giving it another look?")
        if emu.roll(emu.knobs.fail_5xx):
            return _error(500, "Server Error")
        record = emu.accept(Record(
            provider=PROVIDER, message_id=str(uuid.uuid4()), to=str(body["to"]),
            sender=str(body["from"]), body=str(body["message"]), client_ref=body.get("client_ref"),
            callback_url=body.get("callback_url"), status="ENROUTE",
        ))
        campaign_id = str(uuid.uuid4())
        campaign_of[record.message_id] = campaign_id
        asyncio.get_running_loop().create_task(report_later(record))
        return {"success": True, "message_id": record.message_id, "campaign_id": campaign_id}

    @api.get("/v1/get_message")
    async def get_message(request: Request, message_id: str | None = None, campaign_id: str | None = None):
        emu.log_request(PROVIDER, "/v1/get_message")
        await emu.delay()
        if not emu.authorised(request):
            return _error(401, "User not authenticated")
        if message_id:
            rows = [emu.by_id[message_id]] if message_id in emu.by_id else []
        else:
            rows = [r for r in list(emu.records) if campaign_of.get(r.message_id) == campaign_id]
        if not rows:
            return _error(404, "Message(s) not found")
        return {"success": True, "data": [_row(r, campaign_of[r.message_id]) for r in rows]}

    @api.get("/v1/balance")
    async def balance(request: Request):
        if not emu.authorised(request):
            return _error(401, "User not authenticated")
        return {"balance_updated": _fmt(time.time()).replace("-", "."), "currency_code": "EUR",
                "balance": 634.9288, "in_credit_limit": 1000}

    return api
