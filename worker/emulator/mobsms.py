"""MobSMS emulator (seed 003): ``/api/sms`` send, get, list, cancel; devices and account.

Messages start ``pending`` and become ``delivered``/``failed`` after the report delay; then
``{"event": "status", "data": {...message...}, "timestamp": ...}`` is POSTed to the message's
``callback_url``. ``my_id`` is echoed on every message row. Errors use Laravel's
``{"success": false, "message": ...}``; 402 is answered as 422 "No active device available".
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from worker.emulator.app import Emulator, Record, account_of, json_or_empty, valid_number

PROVIDER = "mobsms"
PRICE = 100
PER_PAGE = 50
ERRORS = {401: "Unauthenticated.", 403: "This action is unauthorized.",
          429: "Too Many Attempts.", 500: "Server Error"}


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000Z") if ts else None


def _error(status: int, message: str, retry_after: float = 0) -> JSONResponse:
    headers = {"Retry-After": str(int(retry_after))} if status == 429 else None
    return JSONResponse({"success": False, "message": message}, status_code=status, headers=headers)


def _row(r: Record) -> dict:
    return {
        "id": r.seq, "message_id": r.message_id, "recipient_number": r.to, "message": r.body,
        "direction": "outbound", "status": r.status, "price": PRICE, "is_charged": r.status == "delivered",
        "sent_at": _iso(r.accepted_at), "delivered_at": _iso(r.delivered_at) if r.status == "delivered" else None,
        "created_at": _iso(r.accepted_at), "error_message": "Generic failure" if r.status == "failed" else None,
        "callback_url": r.callback_url, "my_id": r.client_ref,
    }


def router(emu: Emulator) -> APIRouter:
    api = APIRouter()

    async def push(record: Record) -> None:
        await emu.report(record.callback_url, {"event": "status", "data": _row(record),
                                             "timestamp": _iso(record.delivered_at)})

    def refused(request: Request, send: bool) -> JSONResponse | None:
        failure = emu.gate(PROVIDER, account_of(request), emu.authorised(request), send=send)
        if failure is None:
            return None
        if failure[0] == 402:
            return _error(422, "No active device available")
        return _error(failure[0], ERRORS[failure[0]], failure[1])

    def lookup(key: str) -> Record | None:
        if key.isdigit():
            index = int(key) - 1
            rec = emu.records[index] if 0 <= index < len(emu.records) else None
            return rec if rec is not None and rec.provider == PROVIDER else None
        return emu.find(PROVIDER, key)

    @api.post("/api/sms")
    async def send(request: Request):
        await emu.delay()
        if (answer := refused(request, True)) is not None:
            return answer
        body = await json_or_empty(request)
        number = body.get("recipient_number") or body.get("phone")
        text = body.get("message")
        if not text or not number:
            return _error(422, "The message and recipient number fields are required.")
        if len(str(text)) > 1600:
            return _error(422, "The message field must not be greater than 1600 characters.")
        if not str(number).startswith("+") or not valid_number(number):
            return _error(422, "The recipient number field format is invalid.")
        rec = emu.accept(Record(
            provider=PROVIDER, message_id=str(uuid.uuid4()), to=str(number), sender="",
            body=str(text), client_ref=body.get("my_id"), callback_url=body.get("callback_url"),
            status="pending", account=account_of(request), price=PRICE,
        ))
        emu.settle_later(rec, "delivered", "failed", push)
        await emu.answer_late()
        return JSONResponse({"success": True, "message": "SMS queued for sending", "data": _row(rec)},
                            status_code=201)

    @api.get("/api/sms")
    async def list_messages(request: Request, status: str | None = None, page: int = 1):
        await emu.delay()
        if (answer := refused(request, False)) is not None:
            return answer
        rows = [r for r in reversed(list(emu.records))
                if r.provider == PROVIDER and (status is None or r.status == status)]
        chunk = rows[(page - 1) * PER_PAGE: page * PER_PAGE]
        return {"success": True, "data": {"current_page": page, "data": [_row(r) for r in chunk],
                                          "per_page": PER_PAGE, "total": len(rows)}}

    @api.get("/api/sms/{key}")
    async def get_message(key: str, request: Request):
        await emu.delay()
        if (answer := refused(request, False)) is not None:
            return answer
        rec = lookup(key)
        if rec is None:
            return JSONResponse({"message": "No query results for model [SmsMessage]."}, status_code=404)
        return {"success": True, "data": _row(rec)}

    @api.post("/api/sms/{key}/cancel")
    async def cancel(key: str, request: Request):
        if (answer := refused(request, False)) is not None:
            return answer
        rec = lookup(key)
        if rec is None:
            return JSONResponse({"message": "No query results for model [SmsMessage]."}, status_code=404)
        if rec.status != "pending":
            return _error(422, "Only pending messages can be cancelled")
        rec.status = "cancelled"
        return {"success": True, "data": {"id": rec.seq, "status": "cancelled"},
                "message": "SMS cancelled successfully"}

    @api.get("/api/devices")
    async def devices(request: Request):
        if (answer := refused(request, False)) is not None:
            return answer
        return {"success": True, "data": [{
            "id": 5, "device_id": "abc123", "device_name": "Pixel 7", "phone_number": "+998901234567",
            "is_active": True, "is_default": True, "sms_rate": PRICE, "send_delay_seconds": 0,
            "default_sim_slot": 0}]}

    @api.get("/api/account")
    async def account(request: Request):
        if (answer := refused(request, False)) is not None:
            return answer
        sent = [r for r in list(emu.records) if r.provider == PROVIDER]
        return {"success": True, "data": {
            "user": {"id": 1, "name": "Emulator", "email": "emulator@example.com", "balance": 5000,
                     "sms_rate": PRICE},
            "stats": {"total_sent": len(sent),
                      "total_delivered": sum(r.status == "delivered" for r in sent),
                      "total_failed": sum(r.status == "failed" for r in sent),
                      "total_pending": sum(r.status == "pending" for r in sent)}}}

    return api
