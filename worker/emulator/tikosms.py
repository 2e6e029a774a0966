"""TikoSMS emulator (seed 002, ``specs/tikosms.yaml``): paths, bodies, statuses and errors as documented.

Every request is checked against the document first; what it refuses answers 422 with
``{"success": false, "error": ...}`` (the document's 422 shape; the words are Laravel's, an
assumption). Single (``/v1/message``) and bulk (``/v1/messages``) sends; reports pushed to
``callback_url`` as one ``get_message`` data row; ``get_message``, ``get_messages``, ``balance``
and ``sms-rates`` answer lookups. A destination without a rate in ``sms-rates`` answers 403.
"""

from __future__ import annotations

import functools
import time
import uuid
from datetime import datetime, timezone

import phonenumbers
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from worker.emulator.app import Emulator, Record, account_of, admitted, parse_number
from worker.providers.tikosms import MCC

PROVIDER = "tikosms"
INVALID_NUMBER = "Oops! We couldn't find this number in any country on Earth. Mind giving it another look?"
NO_RATE = "No SMS rate is available for this destination for your account. Please contact sales team."
ERRORS = {401: "User not authenticated", 402: "Insufficient balance", 403: NO_RATE,
          429: "Too Many Attempts.", 500: "Server Error"}
# sms-rates by MCC. Destinations not listed (Russia, Japan, ...) have no rate: 403 on send.
COST = "0.050"  # each row's cost, as the document's example row has it
RATES = {"234": "0.045000", "255": "0.045000", "262": "0.060000", "310": "0.010000",
         "639": "0.030000", "404": "0.020000", "724": "0.040000", "434": "0.050000"}


def _fmt(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ts else None


def _error(status: int, error: str, retry_after: float = 0) -> JSONResponse:
    headers = {"Retry-After": str(int(retry_after))} if status == 429 else None
    # The document's 401 (on /v1/balance) has no `success`; its other errors have one.
    body = {"error": error} if status == 401 else {"success": False, "error": error}
    return JSONResponse(body, status_code=status, headers=headers)


def mcc_of(to: str) -> str | None:
    number = parse_number(to)
    if number is None or not phonenumbers.is_valid_number(number):
        return None
    return MCC.get(phonenumbers.region_code_for_number(number), "")


def _row(r: Record, campaign_id: str) -> dict:
    mcc = mcc_of(r.to) or ""
    return {
        "message_id": r.message_id, "campaign_id": campaign_id, "to": r.to,
        "message": r.body, "from": r.sender, "sender_type": "Alpha", "status": r.status,
        "data_coding": 0, "mccmnc": f"{mcc}01", "cost": COST, "part": 1,
        "total_parts": 1, "sent_at": _fmt(r.accepted_at), "delivered_at": _fmt(r.delivered_at),
        "client_ref": r.client_ref, "callback_url": r.callback_url,
    }


def _callback_ok(url) -> bool:
    return url is None or str(url).startswith(("http://", "https://"))


def router(emu: Emulator) -> APIRouter:
    api = APIRouter()
    campaign_of: dict[str, str] = {}
    campaigns: dict[str, dict] = {}  # campaign_id -> its get_messages row

    async def push(record: Record) -> None:
        if record.callback_url:
            await emu.report(record.callback_url, _row(record, campaign_of[record.message_id]))

    def refused(request: Request, send: bool) -> JSONResponse | None:
        failure = emu.gate(PROVIDER, account_of(request), emu.authorised(request), send=send)
        return _error(failure[0], ERRORS[failure[0]], failure[1]) if failure else None

    admit = functools.partial(admitted, emu, provider=PROVIDER, refused=refused, error=_error)

    def open_campaign(body: dict) -> str:
        campaign_id = str(uuid.uuid4())
        at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        campaigns[campaign_id] = {"campaign_id": campaign_id, "sender": body["from"],
                                  "message": body["message"], "recipients": 0,
                                  "created_at": at, "updated_at": at}
        return campaign_id

    def record(body: dict, to: str, client_ref, callback_url, campaign_id: str, account: str) -> Record:
        rec = emu.accept(Record(
            provider=PROVIDER, message_id=str(uuid.uuid4()), to=to.lstrip("+"),
            sender=body["from"], body=body["message"], client_ref=client_ref,
            callback_url=callback_url, status="ENROUTE", account=account,
        ))
        campaign_of[rec.message_id] = campaign_id
        campaigns[campaign_id]["recipients"] += 1
        emu.settle_later(rec, "DELIVRD", "UNDELIV", push)
        return rec

    @api.post("/v1/message")
    async def send(request: Request):
        body, answer = await admit(request, "/v1/message", send=True)
        if answer is not None:
            return answer
        mcc = mcc_of(body["to"])
        if mcc is None:
            return _error(422, INVALID_NUMBER)
        if mcc not in RATES:
            return _error(403, NO_RATE)
        # The document shows this 422 on the bulk send; assumed to hold for the single one too.
        if not _callback_ok(body.get("callback_url")):
            return _error(422, "Invalid callback URL provided")
        campaign_id = open_campaign(body)
        rec = record(body, body["to"], body.get("client_ref"), body.get("callback_url"),
                     campaign_id, account_of(request))
        await emu.answer_late()
        return {"success": True, "message_id": rec.message_id, "campaign_id": campaign_id}

    @api.post("/v1/messages")
    async def send_bulk(request: Request):
        body, answer = await admit(request, "/v1/messages", send=True)
        if answer is not None:
            return answer
        callback = body.get("callback_url")
        if not _callback_ok(callback) or not all(_callback_ok(r.get("callback_url")) for r in body["recipients"]):
            return _error(422, "Invalid callback URL provided")
        seen: set[str] = set()
        kept, duplicates = [], 0
        for item in body["recipients"]:
            to = item["to"].lstrip("+")
            if to in seen:
                duplicates += 1
                continue
            seen.add(to)
            # Assumed: a recipient the single send would refuse (no such number, no rate) is
            # skipped, and counted neither as a recipient nor as a duplicate.
            if mcc_of(to) in RATES:
                kept.append(item)
        campaign_id = open_campaign(body)
        for item in kept:
            record(body, item["to"], item.get("client_ref"), item.get("callback_url") or callback,
                   campaign_id, account_of(request))
        return {"success": True, "campaign_id": campaign_id, "recipients": len(kept),
                "duplicates_removed": duplicates}

    @api.get("/v1/get_message")
    async def get_message(request: Request):
        _, answer = await admit(request, "/v1/get_message")
        if answer is not None:
            return answer
        message_id, campaign_id = request.query_params.get("message_id"), request.query_params.get("campaign_id")
        if message_id:
            rows = [r for r in [emu.find(PROVIDER, message_id)] if r is not None]
        elif campaign_id:
            rows = [r for r in list(emu.records) if campaign_of.get(r.message_id) == campaign_id]
        else:
            rows = []  # neither id: the document's answer for finding nothing
        if not rows:
            return _error(404, "Message(s) not found")
        return {"success": True, "data": [_row(r, campaign_of[r.message_id]) for r in rows]}

    @api.get("/v1/get_messages")
    async def get_messages(request: Request):
        _, answer = await admit(request, "/v1/get_messages")
        if answer is not None:
            return answer
        wanted = request.query_params.get("campaign_id")
        rows = [dict(c) for c in list(campaigns.values()) if wanted is None or c["campaign_id"] == wanted]
        if wanted is not None and not rows:
            return _error(404, "Campaign not found")
        return {"success": True, "campaigns": rows}

    @api.get("/v1/balance")
    async def balance(request: Request):
        if (answer := refused(request, False)) is not None:
            return answer
        return {"balance_updated": _fmt(time.time()).replace("-", "."), "currency_code": "EUR",
                "balance": 634.9288, "in_credit_limit": 1000}

    @api.get("/v1/sms-rates")
    async def sms_rates(request: Request):
        _, answer = await admit(request, "/v1/sms-rates")
        if answer is not None:
            return answer
        mccmnc = request.query_params["mccmnc"]
        mcc = mccmnc[:3]
        if mcc not in RATES:
            return _error(404, "No SMS rate found for this destination.")
        return {"success": True, "rate": {"mcc": mcc, "mnc": mccmnc[3:], "mccmnc": mccmnc,
                                          "country": "", "rate": RATES[mcc],
                                          "rate_start_date": "2025-08-01 00:00:00",
                                          "rate_end_date": "2100-01-01 00:00:00"}}

    return api
