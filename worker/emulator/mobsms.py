"""MobSMS emulator (seed 003, ``specs/mobsms.yaml``): send (single, bulk), get, list, outbox, cancel;
devices, account, balance and webhooks.

Every request is checked against the document first; what it refuses answers 422 with the
document's error shape ``{"success": false, "message": ...}`` (the words are Laravel's, an
assumption). Each answer carries the fields its operation's schema shows and no other:
``my_id`` appears on message rows only with the ``mobsms_echo_my_id`` knob. Messages start
``pending`` and become ``delivered``/``failed`` after the report delay; then
``{"event": "status", "data": <the message as GET /api/sms/{id} shows it>, "timestamp": ...}``
is POSTed to the message's ``callback_url`` and to the account's status webhook.
402 (no credit) is answered as the document's 422 "No active device available".
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime, timezone

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from worker.emulator.app import Emulator, Record, account_of, admitted, valid_number

PROVIDER = "mobsms"
PRICE = 100
PER_PAGE = 50
ERRORS = {403: "This action is unauthorized.", 429: "Too Many Attempts.", 500: "Server Error"}
NOT_FOUND = {"message": "No query results for model [SmsMessage]."}


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000Z") if ts else None


def _error(status: int, message: str, retry_after: float = 0) -> JSONResponse:
    headers = {"Retry-After": str(int(retry_after))} if status == 429 else None
    return JSONResponse({"success": False, "message": message}, status_code=status, headers=headers)


def _done_at(r: Record) -> str | None:
    return _iso(r.delivered_at) if r.status in ("delivered", "failed") else None


def router(emu: Emulator) -> APIRouter:
    api = APIRouter()
    webhooks: dict[str, dict] = {}  # account -> {webhook_url_incoming, webhook_url_status}

    def mine(r: Record, row: dict) -> dict:
        if emu.knobs.mobsms_echo_my_id:
            row["my_id"] = r.client_ref
        return row

    def sent_row(r: Record) -> dict:  # POST /api/sms's data
        return mine(r, {"id": r.seq, "message_id": r.message_id, "recipient_number": r.to,
                        "status": r.status, "price": PRICE, "is_charged": r.status == "delivered",
                        "direction": "outbound", "callback_url": r.callback_url})

    def one_row(r: Record) -> dict:  # GET /api/sms/{id}'s data, and the callback's
        return mine(r, {"id": r.seq, "message_id": r.message_id, "recipient_number": r.to,
                        "status": r.status, "price": PRICE, "is_charged": r.status == "delivered",
                        "sent_at": _done_at(r),
                        "delivered_at": _iso(r.delivered_at) if r.status == "delivered" else None,
                        "error_message": "Generic failure" if r.status == "failed" else None,
                        "callback_url": r.callback_url})

    def list_row(r: Record) -> dict:  # GET /api/sms's rows
        return mine(r, {"id": r.seq, "message_id": r.message_id, "recipient_number": r.to,
                        "sender_number": "+998901234567", "message": r.body, "direction": "outbound",
                        "status": r.status, "price": PRICE, "is_charged": r.status == "delivered",
                        "sent_at": _done_at(r),
                        "delivered_at": _iso(r.delivered_at) if r.status == "delivered" else None,
                        "created_at": _iso(r.accepted_at)})

    def outbox_row(r: Record) -> dict:
        return mine(r, {"id": r.seq, "recipient_number": r.to, "message": r.body, "status": r.status,
                        "price": PRICE, "is_charged": r.status == "delivered", "created_at": _iso(r.accepted_at)})

    def bulk_row(r: Record) -> dict:
        return mine(r, {"id": r.seq, "message_id": r.message_id, "recipient_number": r.to,
                        "status": r.status, "price": PRICE, "is_charged": False, "direction": "outbound"})

    async def push(record: Record) -> None:
        event = {"event": "status", "data": one_row(record), "timestamp": _iso(record.delivered_at)}
        if record.callback_url:
            await emu.report(record.callback_url, event)
        # Assumed: the account's status webhook gets the same body as a message's callback_url.
        status_hook = webhooks.get(record.account, {}).get("webhook_url_status")
        if status_hook:
            await emu.report(status_hook, event)

    def refused(request: Request, send: bool) -> JSONResponse | None:
        failure = emu.gate(PROVIDER, account_of(request), emu.authorised(request), send=send)
        if failure is None:
            return None
        if failure[0] == 401:
            # Not in the document: Laravel Sanctum's own answer to a bad token (an assumption).
            return JSONResponse({"message": "Unauthenticated."}, status_code=401)
        if failure[0] == 402:
            return _error(422, "No active device available")
        return _error(failure[0], ERRORS[failure[0]], failure[1])

    admit = functools.partial(admitted, emu, provider=PROVIDER, refused=refused, error=_error)

    def lookup(key: str) -> Record | None:
        if key.isdigit():
            index = int(key) - 1
            rec = emu.records[index] if 0 <= index < len(emu.records) else None
            return rec if rec is not None and rec.provider == PROVIDER else None
        return emu.find(PROVIDER, key)

    def take(request: Request, number: str, text: str, my_id, callback_url) -> Record:
        rec = emu.accept(Record(
            provider=PROVIDER, message_id=str(uuid.uuid4()), to=number, sender="", body=text,
            client_ref=my_id, callback_url=callback_url, status="pending",
            account=account_of(request), price=PRICE,
        ))
        emu.settle_later(rec, "delivered", "failed", push)
        return rec

    @api.post("/api/sms")
    async def send(request: Request):
        body, answer = await admit(request, "/api/sms", send=True)
        if answer is not None:
            return answer
        if not body["recipient_number"].startswith("+") or not valid_number(body["recipient_number"]):
            return _error(422, "The recipient number field format is invalid.")
        rec = take(request, body["recipient_number"], body["message"], body.get("my_id"),
                   body.get("callback_url"))
        await emu.answer_late()
        return JSONResponse({"success": True, "message": "SMS queued for sending", "data": sent_row(rec)},
                            status_code=201)

    @api.post("/api/sms/bulk")
    async def send_bulk(request: Request):
        body, answer = await admit(request, "/api/sms/bulk", send=True)
        if answer is not None:
            return answer
        recipients = [r if isinstance(r, dict) else {"number": r} for r in body["recipients"]]
        for i, r in enumerate(recipients):
            if not r["number"].startswith("+") or not valid_number(r["number"]):
                return _error(422, f"The recipients.{i} field format is invalid.")
        taken = [take(request, r["number"], body["message"].replace("{name}", r.get("name") or ""),
                      body.get("my_id"), None) for r in recipients]
        return JSONResponse({"success": True, "data": [bulk_row(r) for r in taken],
                             "message": "Bulk SMS queued for sending"}, status_code=201)

    def page_of(request: Request, rows: list[dict]) -> dict:
        page = int(request.query_params.get("page") or 1)
        return {"current_page": page, "data": rows[(page - 1) * PER_PAGE: page * PER_PAGE],
                "per_page": PER_PAGE, "total": len(rows)}

    def outbound(request: Request, status: str | None = None) -> list[Record]:
        """This account's messages, newest first, as the document says its history is."""
        account = account_of(request)
        return [r for r in reversed(list(emu.records))
                if r.provider == PROVIDER and r.account == account and (status is None or r.status == status)]

    @api.get("/api/sms")
    async def list_messages(request: Request):
        _, answer = await admit(request, "/api/sms")
        if answer is not None:
            return answer
        # Every message here is outbound (the emulator receives none) from one device.
        if request.query_params.get("direction", "outbound") != "outbound":
            return {"success": True, "data": page_of(request, [])}
        rows = [list_row(r) for r in outbound(request, request.query_params.get("status"))]
        return {"success": True, "data": page_of(request, rows)}

    @api.get("/api/sms/outbox")
    async def outbox(request: Request):
        await emu.delay()
        if (answer := refused(request, False)) is not None:
            return answer
        return {"success": True, "data": page_of(request, [outbox_row(r) for r in outbound(request)])}

    @api.get("/api/sms/{key}")
    async def get_message(key: str, request: Request):
        await emu.delay()
        if (answer := refused(request, False)) is not None:
            return answer
        rec = lookup(key)
        if rec is None:
            return JSONResponse(NOT_FOUND, status_code=404)
        return {"success": True, "data": one_row(rec)}

    @api.post("/api/sms/{key}/cancel")
    async def cancel(key: str, request: Request):
        if (answer := refused(request, False)) is not None:
            return answer
        rec = lookup(key)
        if rec is None:
            return JSONResponse(NOT_FOUND, status_code=404)
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

    async def overview(request: Request):
        if (answer := refused(request, False)) is not None:
            return answer
        sent = outbound(request)
        return {"success": True, "data": {
            "user": {"id": 1, "name": "Emulator", "email": "emulator@example.com", "balance": 5000,
                     "sms_rate": PRICE},
            "stats": {"total_sent": len(sent),
                      "total_delivered": sum(r.status == "delivered" for r in sent),
                      "total_failed": sum(r.status == "failed" for r in sent),
                      "total_pending": sum(r.status == "pending" for r in sent)}}}

    api.add_api_route("/api/account", overview, methods=["GET"])
    api.add_api_route("/api/balance", overview, methods=["GET"])  # the document gives both one answer

    @api.get("/api/webhooks")
    async def get_webhooks(request: Request):
        if (answer := refused(request, False)) is not None:
            return answer
        # Only the URLs set: the document types them as strings, never null.
        return {"success": True, "data": dict(webhooks.get(account_of(request), {}))}

    @api.put("/api/webhooks")
    async def put_webhooks(request: Request):
        body, answer = await admit(request, "/api/webhooks")
        if answer is not None:
            return answer
        urls = webhooks.setdefault(account_of(request), {})
        for key in ("webhook_url_incoming", "webhook_url_status"):
            if body.get(key):
                urls[key] = body[key]
            elif key in body:
                urls.pop(key, None)  # null or "" removes it
        return {"success": True, "data": dict(urls), "message": "Webhooks updated successfully"}

    return api

