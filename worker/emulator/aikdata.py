"""AikData emulator (seed 000, ``specs/aikdata.json``): ``POST /send``, ``GET /messages/{id}``, Bearer token.

Requests are checked against the document. It lists only 200 and 401 and shows no error body;
the rest is assumed: other failures answer ``{"error": ...}`` with the usual code, a body the
document refuses or a number that cannot be one answers 400. Nothing is pushed: the status moves
from ``queued`` to ``delivered``/``failed`` after the report delay.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import phonenumbers
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from worker.emulator.app import Emulator, Record, account_of, checked, parse_number

PROVIDER = "aikdata"
ERRORS = {401: "Unauthorized", 402: "Insufficient credits", 403: "Forbidden",
          429: "Too Many Requests", 500: "Internal Server Error"}


def _error(status: int, error: str, retry_after: float = 0) -> JSONResponse:
    headers = {"Retry-After": str(int(retry_after))} if status == 429 else None
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def possible_number(raw: str) -> bool:
    """The document's own example, +15551234567, is a possible number but not an assigned one:
    only what cannot be a number at all is refused (an assumption; the document names no rule)."""
    number = parse_number(raw)
    return number is not None and phonenumbers.is_possible_number(number)


def router(emu: Emulator) -> APIRouter:
    api = APIRouter()

    def refused(request: Request, send: bool) -> JSONResponse | None:
        failure = emu.gate(PROVIDER, account_of(request), emu.authorised(request), send=send)
        return _error(failure[0], ERRORS[failure[0]], failure[1]) if failure else None

    @api.post("/send")
    async def send(request: Request):
        await emu.delay()
        if (answer := refused(request, True)) is not None:
            return answer
        body, problem = await checked(request, PROVIDER, "/send")
        if problem is None and (not body.get("to") or not body.get("body")):
            problem = "to and body are required"  # the schema marks nothing required; a send needs both
        if problem is not None:
            return _error(400, problem)
        if not possible_number(body["to"]):
            return _error(400, "invalid phone number")
        rec = emu.accept(Record(
            provider=PROVIDER, message_id=f"msg_{uuid.uuid4().hex[:12]}", to=body["to"],
            sender=body.get("from") or "", body=body["body"], client_ref=None,
            callback_url=None, status="queued", account=account_of(request),
        ))
        emu.settle_later(rec, "delivered", "failed")
        await emu.answer_late()
        return {"id": rec.message_id, "to": rec.to, "status": "queued"}

    @api.get("/messages/{message_id}")
    async def get_message(message_id: str, request: Request):
        await emu.delay()
        if (answer := refused(request, False)) is not None:
            return answer
        rec = emu.find(PROVIDER, message_id)
        if rec is None:
            return _error(404, "Not found")
        at = datetime.fromtimestamp(rec.delivered_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") \
            if rec.delivered_at and rec.status == "delivered" else None
        return {"id": rec.message_id, "status": rec.status, "delivered_at": at}

    return api
