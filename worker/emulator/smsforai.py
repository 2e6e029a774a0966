"""SMS for AI emulator (seed 004): ``/sms/send``, ``/sms/{id}``, ``/sms``, ``/balance``, ``/countries``.

Bearer token auth. Errors as the document's table: 401, 402 credits, 403 permission, 422
validation, 429 rate limit (``Retry-After``), 500 gateway failure; bodies ``{"message": ...}``.
Statuses ``sent`` → ``delivered``/``failed`` after the report delay; nothing is pushed.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import phonenumbers
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from worker.emulator.app import Emulator, Record, account_of, json_or_empty, valid_number

PROVIDER = "smsforai"
ERRORS = {401: "Unauthenticated.", 402: "Insufficient credits to send SMS.",
          403: "Token lacks the required permission: sms:send", 429: "Rate limit exceeded (per-minute).",
          500: "SMS gateway failure"}
COUNTRIES = [
    {"country_code": "US", "country_name": "United States", "dial_code": "+1", "price_usd": 0.01},
    {"country_code": "GB", "country_name": "United Kingdom", "dial_code": "+44", "price_usd": 0.04},
    {"country_code": "DE", "country_name": "Germany", "dial_code": "+49", "price_usd": 0.07},
]
PRICES = {c["country_code"]: c["price_usd"] for c in COUNTRIES}


def _error(status: int, message: str, retry_after: float = 0, errors: dict | None = None) -> JSONResponse:
    headers = {"Retry-After": str(int(retry_after))} if status == 429 else None
    body = {"message": message, **({"errors": errors} if errors else {})}
    return JSONResponse(body, status_code=status, headers=headers)


def _row(r: Record) -> dict:
    at = datetime.fromtimestamp(r.delivered_at, timezone.utc).isoformat() if r.delivered_at else None
    return {"id": r.seq, "status": r.status, "to": r.to, "body": r.body, "price_usd": r.price,
            "delivered_at": at if r.status == "delivered" else None}


def router(emu: Emulator) -> APIRouter:
    api = APIRouter()

    def refused(request: Request, send: bool) -> JSONResponse | None:
        failure = emu.gate(PROVIDER, account_of(request), emu.authorised(request), send=send)
        return _error(failure[0], ERRORS[failure[0]], failure[1]) if failure else None

    @api.get("")
    async def info():
        return {"api": "SMS for AI", "version": "1.0", "status": "ok"}

    @api.post("/sms/send")
    async def send(request: Request):
        await emu.delay()
        if (answer := refused(request, True)) is not None:
            return answer
        body = await json_or_empty(request)
        to, text = str(body.get("to") or ""), str(body.get("body") or "")
        if not to.startswith("+") or not valid_number(to):
            return _error(422, "The to field must be a valid E.164 number.",
                          errors={"to": ["The to field must be a valid E.164 number."]})
        if not text or len(text) > 1600:
            return _error(422, "The body field is required and may not exceed 1600 characters.",
                          errors={"body": ["invalid"]})
        region = phonenumbers.region_code_for_number(phonenumbers.parse(to))
        rec = emu.accept(Record(
            provider=PROVIDER, message_id=str(uuid.uuid4()), to=to, sender=str(body.get("sender_id") or ""),
            body=text, client_ref=None, callback_url=None, status="sent", account=account_of(request),
            price=PRICES.get(region, 0.05),
        ))
        emu.by_id[str(rec.seq)] = rec  # looked up by its numeric id
        emu.settle_later(rec, "delivered", "failed")
        await emu.answer_late()
        return {"id": rec.seq, "status": "sent", "to": to, "price_usd": rec.price,
                "nvia_message_id": rec.message_id[:8]}

    @api.get("/sms")
    async def list_sms(request: Request, status: str | None = None):
        if (answer := refused(request, False)) is not None:
            return answer
        rows = [_row(r) for r in list(emu.records)
                if r.provider == PROVIDER and (status is None or r.status == status)]
        return {"data": rows, "links": {}, "meta": {"total": len(rows)}}

    @api.get("/sms/{sms_id}")
    async def get_sms(sms_id: str, request: Request):
        await emu.delay()
        if (answer := refused(request, False)) is not None:
            return answer
        rec = emu.find(PROVIDER, sms_id)
        if rec is None:
            return _error(404, "Not found.")
        return _row(rec)

    @api.get("/balance")
    async def balance(request: Request):
        if (answer := refused(request, False)) is not None:
            return answer
        return {"credits_usd": 12.345678}

    @api.get("/countries")
    async def countries(request: Request):
        if (answer := refused(request, False)) is not None:
            return answer
        return COUNTRIES

    @api.get("/me")
    async def me(request: Request):
        if (answer := refused(request, False)) is not None:
            return answer
        return {"token": {"id": 1, "name": "Emulator", "permissions": ["sms:send"]},
                "user": {"name": "Emulator", "email": "emulator@example.com", "credits": 12.345678}}

    return api
