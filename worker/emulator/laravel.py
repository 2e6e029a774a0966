"""Laravel SMS gateway emulator (seed 001, HTML prose): v1 form credentials and v2 API key.

- ``POST /v1/sms/send``: ``numbers`` (comma separated), ``message_body``, ``username``,
  ``password`` as form or URL parameters. 400 ``{"error": "Invalid phone number format."}``,
  401 ``{"error": "Unauthorized."}``.
- ``GET|POST /api/v2/sms/send`` and ``GET /api/v2/account/balance`` with ``X-API-Key`` or
  ``api_key``; 401 ``{"error": "API key is required", "help": ...}``. v2 answers carry
  ``x-ratelimit-limit: 60`` and ``x-ratelimit-remaining``, as the document's examples do.
No ids, no reports, no lookup: the gateway only says it took the message.

What the document leaves open, each an assumption: the success body (the document shows none:
an empty object), the v2 send body (the Swagger page it links is not in the document: the v1
fields, as JSON or form), the balance answer, the number rule (``laravel_number_format`` knob:
the examples are national, ``0701234567``), and 422 for a missing field.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from worker.emulator.app import Emulator, Record, account_of, json_body, valid_number

PROVIDER = "laravel"
LIMIT = 60
ERRORS = {401: "Unauthorized.", 402: "Insufficient balance.", 403: "Forbidden.",
          429: "Too Many Attempts.", 500: "Server Error"}


def _form(raw: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}


def router(emu: Emulator) -> APIRouter:
    api = APIRouter()

    def answer(status: int, body: dict, retry_after: float = 0, v2: bool = True) -> JSONResponse:
        headers = {}
        if v2:
            headers = {"x-ratelimit-limit": str(LIMIT),
                       "x-ratelimit-remaining": str(0 if status == 429 else LIMIT - 1)}
        if status == 429:
            headers["retry-after"] = str(int(retry_after))
        return JSONResponse(body, status_code=status, headers=headers)

    def number_ok(number: str) -> bool:
        form = emu.knobs.laravel_number_format
        if number.startswith("+"):
            return form != "national" and valid_number(number)
        return form != "e164" and valid_number(number, emu.knobs.laravel_region)

    def take(request: Request, numbers, text, v2: bool) -> JSONResponse:
        if not isinstance(numbers, str) or not isinstance(text, str):
            return answer(422, {"error": "The numbers and message_body fields are required."}, v2=v2)
        numbers_list = [n.strip() for n in numbers.split(",") if n.strip()]
        if not numbers_list or not text:
            return answer(422, {"error": "The numbers and message_body fields are required."}, v2=v2)
        if not all(number_ok(n) for n in numbers_list):
            return answer(400, {"error": "Invalid phone number format."}, v2=v2)
        for number in numbers_list:
            emu.accept(Record(provider=PROVIDER, message_id=str(uuid.uuid4()), to=number, sender="",
                              body=text, client_ref=None, callback_url=None, status="accepted",
                              account=account_of(request)))
        return answer(200, {}, v2=v2)

    @api.post("/v1/sms/send")
    async def send_v1(request: Request):
        await emu.delay()
        fields = {**dict(request.query_params), **_form(await request.body())}
        known = emu.knobs.users.get(fields.get("username", ""))
        authorised = known is not None and known == fields.get("password")
        failure = emu.gate(PROVIDER, account_of(request), authorised, send=True)
        if failure:
            return answer(failure[0], {"error": ERRORS[failure[0]]}, failure[1], v2=False)
        result = take(request, fields.get("numbers"), fields.get("message_body"), v2=False)
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
            # A wrong or expired key's words are not in the document (keys do expire).
            body = {"error": "Invalid or expired API key"} if failure[0] == 401 else {"error": ERRORS[failure[0]]}
            return answer(failure[0], body, failure[1])
        return None

    @api.api_route("/api/v2/sms/send", methods=["GET", "POST"])
    async def send_v2(request: Request):
        await emu.delay()
        if (refused := key_failure(request, True)) is not None:
            return refused
        body = await json_body(request)
        if not isinstance(body, dict):
            raw = await request.body()
            body = _form(raw) if raw and request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded") else {}
        fields = {**dict(request.query_params), **body}
        result = take(request, fields.get("numbers"), fields.get("message_body"), v2=True)
        if result.status_code == 200:
            await emu.answer_late()
        return result

    @api.get("/api/v2/account/balance")
    async def balance(request: Request):
        if (refused := key_failure(request, False)) is not None:
            return refused
        return answer(200, {"balance": 250.0, "currency": "KES"})

    return api
