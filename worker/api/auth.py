"""Who may call the HTTP API. Every ``/v1`` route needs an API key with the method's scope.

The check is ASGI middleware keyed on the path, not a per-route dependency, so a route added
anywhere under ``/v1`` is covered without writing auth code, and an unauthenticated request is
refused before its body is read. Provider webhooks (``/v1/webhooks/...``) are authenticated by
their signed URL tokens instead; health, metrics and the API documents are open.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from campaigns import apikeys, db
from campaigns.services import Tenant

PROTECTED = "/v1/"
OPEN_UNDER_PROTECTED = ("/v1/webhooks/",)
_READ_METHODS = {"GET", "HEAD", "OPTIONS"}


def required_scope(path: str, method: str) -> str | None:
    """The scope a request needs, or None when it needs no API key."""
    if not path.startswith(PROTECTED) or path.startswith(OPEN_UNDER_PROTECTED):
        return None
    return apikeys.READ if method.upper() in _READ_METHODS else apikeys.WRITE


def _refuse(status: int, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="herald"'} if status == 401 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def check(authorization: str | None, scope: str) -> tuple[JSONResponse | None, apikeys.KeyInfo | None]:
    """A refusal (401 no or bad key, 403 missing scope), or the caller's key."""
    kind, _, key = (authorization or "").partition(" ")
    if kind.lower() != "bearer" or not key.strip():
        return _refuse(401, "an API key is required: Authorization: Bearer <key>"), None
    info = db.retry_once(apikeys.authenticate, key.strip())
    if info is None:
        return _refuse(401, "unknown or revoked API key"), None
    if scope not in info.scopes and apikeys.ADMIN not in info.scopes:
        return _refuse(403, f"this API key lacks the {scope} scope"), None
    return None, info


def database_unavailable() -> JSONResponse:
    """The database cannot be reached (it restarts, or is down): come back shortly."""
    return JSONResponse({"detail": "the database is unavailable; retry shortly"}, status_code=503,
                        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})


DATABASE_RETRY_AFTER_S = 1


class ApiKeyMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            needed = required_scope(scope["path"], scope["method"])
            if needed is not None:
                try:
                    refusal, info = await run_in_threadpool(check, Headers(scope=scope).get("authorization"), needed)
                except db.CONNECTION_ERRORS:  # still down after one retry
                    refusal, info = database_unavailable(), None
                if refusal is not None:
                    await refusal(scope, receive, send)
                    return
                scope.setdefault("state", {})["api_key_id"] = info.id
                scope["state"]["tenant"] = info.tenant
        await self.app(scope, receive, send)


def tenant(request: Request) -> Tenant:
    """The service a /v1 request acts for (a FastAPI dependency; the middleware put it there)."""
    return request.state.tenant


def install(app: FastAPI) -> None:
    """Guard ``app`` and describe the guard in its OpenAPI document."""
    app.add_middleware(ApiKeyMiddleware)

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = {"apiKey": {
                "type": "http", "scheme": "bearer",
                "description": "an API key from `herald keys create`; GET needs campaigns:read, "
                               "other methods campaigns:write"}}
            for path, operations in doc.get("paths", {}).items():
                for method, operation in operations.items():
                    scope = required_scope(path, method)
                    if scope is None:
                        continue
                    operation["security"] = [{"apiKey": [scope]}]
                    operation.setdefault("responses", {}).update({
                        "401": {"description": "no API key, or an unknown or revoked one"},
                        "403": {"description": f"the API key lacks the {scope} scope"},
                    })
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi
