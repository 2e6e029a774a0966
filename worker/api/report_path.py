"""The campaign delivery-report webhook served as plain ASGI, beside the FastAPI app.

A provider pushes one request per report, so this is the API's hottest route by far: Starlette's
routing, dependency solving and response classes cost about 200 µs of CPU per request, ten times
what reading and checking the report costs. This middleware answers
``POST /v1/webhooks/{account}/{campaign_id}/{token}`` itself, with the same handler and the same
answers (401, 404, 422 and 503 with a ``detail``); every other request goes on to FastAPI.
Webhooks are not in the OpenAPI document either way, so the API stays one document.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException  # also what fastapi.HTTPException subclasses

from campaigns import db

PREFIX = ("", "v1", "webhooks")
ACCOUNT_SUBJECTS = {"status", "incoming"}  # /v1/webhooks/{account}/status|incoming/{token}: FastAPI's

Handler = Callable[[str, str, str, bytes], Awaitable[dict]]


class DeliveryReportPath:
    def __init__(self, app, handle: Handler):
        self.app, self.handle = app, handle

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            parts = scope["path"].split("/")
            if len(parts) == 6 and tuple(parts[:3]) == PREFIX and parts[4] not in ACCOUNT_SUBJECTS \
                    and all(parts[3:]):
                if scope["method"] != "POST":
                    await _answer(send, 405, {"detail": "Method Not Allowed"}, [(b"allow", b"POST")])
                    return
                await self._serve(parts[3], parts[4], parts[5], receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, account: str, campaign_id: str, token: str, receive, send) -> None:
        headers = []
        try:
            body = await _body(receive)
            if body is None:
                return  # the client went away
            status, answer = 200, await self.handle(account, campaign_id, token, body)
        except HTTPException as exc:  # the handler's answers, and the body limit's 413
            status, answer = exc.status_code, {"detail": exc.detail}
        except db.CONNECTION_ERRORS:
            # Nothing was written (the batch is one transaction); the provider retries.
            status, answer = 503, {"detail": "the database is unavailable; retry shortly"}
            headers.append((b"retry-after", b"1"))
        await _answer(send, status, answer, headers)


async def _body(receive) -> bytes | None:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _answer(send, status: int, answer: dict, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(answer, separators=(",", ":")).encode()
    headers = [*headers, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
