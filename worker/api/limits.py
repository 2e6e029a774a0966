"""Size limits on every door, checked before a body is held in memory.

ASGI middleware, so every route is covered without code of its own: a declared Content-Length
over the limit is refused at once, and a body streamed without one is counted as it arrives and
refused (413) the moment it passes the limit. Limits per door: provider webhooks
(HERALD_WEBHOOK_MAX_BYTES), campaign intake (HERALD_INTAKE_MAX_BYTES, sized for
HERALD_MAX_RECIPIENTS by default), everything else (HERALD_REQUEST_MAX_BYTES).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from campaigns.settings import Settings, get_settings

WEBHOOKS = "/v1/webhooks/"
INTAKE = ("/v1/campaigns", "/v1/messages")
BYTES_PER_RECIPIENT = 256


def body_limit(settings: Settings, path: str) -> int:
    """The largest body a request to ``path`` may carry."""
    if path.startswith(WEBHOOKS):
        return settings.webhook_max_bytes
    if path in INTAKE:
        return settings.intake_max_bytes or settings.max_recipients * BYTES_PER_RECIPIENT + 65536
    return settings.request_max_bytes


def _too_large(limit: int) -> str:
    return f"the request body exceeds {limit:,} bytes"


class BodyLimitMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(get_settings(), scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await JSONResponse({"detail": _too_large(limit)}, status_code=413,
                               headers={"Connection": "close"})(scope, receive, send)
            return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException: FastAPI passes it through its body parsing as a 413.
                    raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counted, send)
