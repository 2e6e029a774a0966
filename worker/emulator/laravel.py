"""Laravel SMS gateway emulator (seed 001): v1 form credentials and v2 API key.

- ``POST /v1/sms/send``: ``numbers`` (comma separated), ``message_body``, ``username``,
  ``password`` as form or URL parameters. 400 ``{"error": "Invalid phone number format."}``,
  401 ``{"error": "Unauthorized."}``.
- ``POST /api/v2/sms/send`` and ``GET /api/v2/account/balance`` with ``X-API-Key`` or ``api_key``;
  401 ``{"error": "API key is required", ...}``. Every v2 answer carries ``x-ratelimit-*``.
No ids, no reports, no lookup: the gateway only says it took the message.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from worker.emulator.app import Emulator, Record, account_of, valid_number

PROVIDER = "laravel"
LIMIT = 60
ERRORS = {401: "Unauthorized.", 402: "Insufficient balance.", 403: "Forbidden.",
          429: "Too Many Attempts.", 500: "Server Error"}


def router(emu: Emulator) -> APIRouter:
    api = APIRouter()

    def answer(status: int, body: dict, retry_after: float = 0) -> JSONResponse:
        headers = {"x-ratelimit-limit": str(LIMIT), "x-ratelimit-remaining": str(0 if status == 429 else LIMIT - 1)}
        if status == 429:
            headers["retry-after"] = str(int(retry_after))
        return JSONResponse(body, status_code=status, headers=headers)

    def take(request: Request, numbers: str, text: str) -> JSONResponse:
        numbers_list = [n.strip() for n in str(numbers or "").split(",") if n.strip()]
        if not numbers_list or not text:
            return answer(422, {"error": "The numbers and message_body fields are required."})
        if not all(valid_number(n) for n in numbers_list):
            return answer(400, {"error": "Invalid phone number format."})
        for number in numbers_list:
            emu.accept(Record(provider=PROVIDER, message_id=str(uuid.uuid4()), to=number, sender="",
                              body=text, client_ref=None, callback_url=None, status="accepted",
                              account=account_of(request)))
        return answer(200, {"success": True, "message": "Message sent successfully."})

    @api.post("/v1/sms/send")
    async def send_v1(request: Request):
        await emu.delay()
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        fields = {**dict(request.query_params), **form}
        known = emu.knobs.users.get(str(fields.get("username", "")))
        authorised = known is not None and known == fields.get("password")
        failure = emu.gate(PROVIDER, account_of(request), authorised, send=True)
        if failure:
            return answer(failure[0], {"error": ERRORS[failure[0]]}, failure[1])
        result = take(request, fields.get("numbers", ""), fields.get("message_body", ""))
        if result.status_code == 200:
            await emu.answer_late()
        return result

    def key_failure(request: Request, send: bool) -> JSONResponse | None:
        key = request.headers.get("x-api-key") or request.query_params.get("api_key")
        if not key:
            return answer(401, {"error": "API key is required",
                                "help": "Provide X-API-Key header or api_key parameter"})
        failure = emu.gate(PROVIDER, account_of(request), key in emu.knobs.tokens, send=send)
        if failure:
            body = {"error": "Invalid or expired API key"} if failure[0] == 401 else {"error": ERRORS[failure[0]]}
            return answer(failure[0], body, failure[1])
        return None

    @api.post("/api/v2/sms/send")
    async def send_v2(request: Request):
        await emu.delay()
        if (refused := key_failure(request, True)) is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            body = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        result = take(request, body.get("numbers", ""), body.get("message_body", ""))
        if result.status_code == 200:
            await emu.answer_late()
        return result

    @api.get("/api/v2/account/balance")
    async def balance(request: Request):
        if (refused := key_failure(request, False)) is not None:
            return refused
        return answer(200, {"balance": 250.0, "currency": "KES"})

    return api
