"""SMS for AI emulator (seed 004, prose only): ``/sms/send``, ``/sms/{id}``, ``/sms``, ``/balance``,
``/countries``, ``/me`` and the public ``/``.

Bearer token auth. Errors as the document's table: 401 token, 402 credits, 403 permission, 422
validation, 429 rate limit "per-minute or per-day", 500 gateway failure. The document shows no
error body and no header: bodies are Laravel's ``{"message": ...}`` (an assumption) and a 429
carries no ``Retry-After`` (as documented). Statuses ``sent`` → ``delivered``/``failed`` after the
report delay; nothing is pushed.
"""

from __future__ import annotations

import re
import time
import uuid

import phonenumbers
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from worker.emulator.app import Emulator, Record, account_of, json_body, parse_number

PROVIDER = "smsforai"
ERRORS = {401: "Unauthenticated.", 402: "Insufficient credits to send SMS.",
          403: "Token lacks the required permission: sms:send", 429: "Rate limit exceeded (per-minute).",
          500: "SMS gateway failure"}
PER_DAY = "Rate limit exceeded (per-day)."  # the document's words, "per-minute or per-day"
COUNTRIES = [
    {"country_code": "US", "country_name": "United States", "dial_code": "+1", "price_usd": 0.01},
    {"country_code": "GB", "country_name": "United Kingdom", "dial_code": "+44", "price_usd": 0.04},
    {"country_code": "DE", "country_name": "Germany", "dial_code": "+49", "price_usd": 0.07},
]
PRICES = {c["country_code"]: c["price_usd"] for c in COUNTRIES}
LIST_STATUSES = ("sent", "delivered", "failed")
PER_PAGE = 15  # Laravel's default page size (the document names none)


def _error(status: int, message: str, errors: dict | None = None) -> JSONResponse:
    body = {"message": message, **({"errors": errors} if errors else {})}
    return JSONResponse(body, status_code=status)


def _invalid(field: str, message: str) -> JSONResponse:
    return _error(422, message, {field: [message]})


def _row(r: Record) -> dict:
    """A message as the send answer shows it. GET /sms/{id} shows `{ id, status, to, ... }`: the
    rest is assumed to be the send answer's other fields (conversion_url only when asked for)."""
    row = {"id": r.seq, "status": r.status, "to": r.to, "price_usd": r.price,
           "nvia_message_id": r.message_id[:8]}
    if r.callback_url:  # the conversion URL, kept where the record keeps a URL
        row["conversion_url"] = r.callback_url
    return row


def router(emu: Emulator) -> APIRouter:
    api = APIRouter()
    sent_today: dict[tuple[str, int], int] = {}  # (account, UTC day) -> sends accepted

    def refused(request: Request, send: bool) -> JSONResponse | None:
        failure = emu.gate(PROVIDER, account_of(request), emu.authorised(request), send=send)
        return _error(failure[0], ERRORS[failure[0]]) if failure else None

    def quota_spent(account: str) -> bool:
        quota = emu.knobs.smsforai_daily_quota
        return bool(quota) and sent_today.get((account, int(time.time() // 86400)), 0) >= quota

    @api.get("")
    async def info():
        return {"api": "SMS for AI", "version": "1.0", "status": "ok"}

    @api.post("/sms/send")
    async def send(request: Request):
        await emu.delay()
        if (answer := refused(request, True)) is not None:
            return answer
        account = account_of(request)
        if quota_spent(account):
            return _error(429, PER_DAY)
        body = await json_body(request)
        if not isinstance(body, dict):
            return _error(422, "The request body must be a JSON object.")
        to, text, sender = body.get("to"), body.get("body"), body.get("sender_id")
        number = parse_number(to) if isinstance(to, str) and to.startswith("+") else None
        if number is None or not phonenumbers.is_valid_number(number):
            return _invalid("to", "The to field must be a valid E.164 number.")
        if not isinstance(text, str) or not text:
            return _invalid("body", "The body field is required.")
        if len(text) > 1600:
            return _invalid("body", "The body field must not be greater than 1600 characters.")
        if sender is not None and not (isinstance(sender, str) and re.fullmatch(r"[A-Za-z0-9]+", sender)):
            return _invalid("sender_id", "The sender id field must only contain letters and numbers.")
        conversion = body.get("include_conversion_url", False)
        if not isinstance(conversion, bool):
            return _invalid("include_conversion_url", "The include conversion url field must be true or false.")
        key = (account, int(time.time() // 86400))
        sent_today[key] = sent_today.get(key, 0) + 1
        message_id = str(uuid.uuid4())
        rec = emu.accept(Record(
            provider=PROVIDER, message_id=message_id, to=to, sender=sender or "", body=text,
            client_ref=None, callback_url=f"https://www.smsforai.com/c/{message_id[:12]}" if conversion else None,
            status="sent", account=account,
            price=PRICES.get(phonenumbers.region_code_for_number(number), 0.05),
        ))
        emu.by_id[str(rec.seq)] = rec  # looked up by its numeric id
        emu.settle_later(rec, "delivered", "failed")
        await emu.answer_late()
        return _row(rec)

    @api.get("/sms")
    async def list_sms(request: Request):
        if (answer := refused(request, False)) is not None:
            return answer
        status = request.query_params.get("status")
        if status is not None and status not in LIST_STATUSES:
            return _invalid("status", "The selected status is invalid.")
        try:
            page = max(int(request.query_params.get("page") or 1), 1)
        except ValueError:
            return _invalid("page", "The page field must be an integer.")
        account = account_of(request)
        rows = [_row(r) for r in reversed(list(emu.records))
                if r.provider == PROVIDER and r.account == account and (status is None or r.status == status)]
        last = max((len(rows) + PER_PAGE - 1) // PER_PAGE, 1)
        # The document shows `{ "data": [...], "links": { ... }, "meta": { ... } }` and "pagination":
        # what links and meta hold is assumed to be Laravel's resource pagination.
        return {"data": rows[(page - 1) * PER_PAGE: page * PER_PAGE],
                "links": {"first": "?page=1", "last": f"?page={last}",
                          "prev": f"?page={page - 1}" if page > 1 else None,
                          "next": f"?page={page + 1}" if page < last else None},
                "meta": {"current_page": page, "last_page": last, "per_page": PER_PAGE, "total": len(rows)}}

    @api.get("/sms/{sms_id}")
    async def get_sms(sms_id: str, request: Request):
        await emu.delay()
        if (answer := refused(request, False)) is not None:
            return answer
        rec = emu.find(PROVIDER, sms_id)
        if rec is None or not sms_id.isdigit():
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
