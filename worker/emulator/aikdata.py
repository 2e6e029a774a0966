"""AikData emulator (seed 000): ``POST /send`` and ``GET /messages/{id}`` with a Bearer token.

The document lists only 200 and 401; other failures answer ``{"error": ...}`` with the usual code.
Nothing is pushed: status moves from ``queued`` to ``delivered``/``failed`` after the report delay.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from worker.emulator.app import Emulator, Record, account_of, json_or_empty, valid_number

PROVIDER = "aikdata"
ERRORS = {401: "Unauthorized", 402: "Insufficient credits", 403: "Forbidden",
          429: "Too Many Requests", 500: "Internal Server Error"}


def _error(status: int, error: str, retry_after: float = 0) -> JSONResponse:
    headers = {"Retry-After": str(int(retry_after))} if status == 429 else None
    return JSONResponse({"error": error}, status_code=status, headers=headers)


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
        body = await json_or_empty(request)
        if not body.get("to") or not body.get("body"):
            return _error(400, "to and body are required")
        if not valid_number(body["to"]):
            return _error(400, "invalid phone number")
        rec = emu.accept(Record(
            provider=PROVIDER, message_id=f"msg_{uuid.uuid4().hex[:12]}", to=str(body["to"]),
            sender=str(body.get("from") or ""), body=str(body["body"]), client_ref=None,
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
