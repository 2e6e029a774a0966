"""HTTP routes for intake beyond ``POST /v1/campaigns``: the suppression list and the
TikoSMS-compatible bulk endpoint, so a client written for TikoSMS can point at Herald unchanged.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

import campaigns
from campaigns import suppressions
from campaigns.errors import Forbidden, IdempotencyMismatch, NotPermitted, SubmissionError
from campaigns.schema import InvalidSample
from campaigns.services import Tenant
from worker.api import auth

router = APIRouter()
_ADMIN_ONLY = {403: {"description": "`global` needs an admin key"}}


def refused_status(exc: SubmissionError) -> int:
    """A refused submission's HTTP status: 409 an idempotency key reused with another body, 403 a
    field asking for what the service is not granted (``priority``), 422 anything else."""
    return 409 if isinstance(exc, IdempotencyMismatch) else 403 if isinstance(exc, NotPermitted) else 422


class SuppressionsIn(BaseModel):
    numbers: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=100_000)
    default_region: str | None = Field(default=None, min_length=2, max_length=2)
    reason: str | None = Field(default=None, max_length=500)
    global_list: bool = Field(default=False, alias="global",
                              description="the global list every service honours (admin keys only)")


_GLOBAL = Query(False, alias="global", description="the global list every service honours (editing needs admin)")


def _list_of(tenant: Tenant, global_list: bool, editing: bool) -> int | None:
    """The suppression list a request means: its service's own, or (admin only, to edit) the global one."""
    if not global_list:
        return tenant.service_id
    if editing and not tenant.admin:
        raise Forbidden("only an admin key edits the global suppression list")
    return None


class SuppressionsChanged(BaseModel):
    changed: int = Field(description="numbers added (or removed)")
    unchanged: int = Field(description="numbers already on (or not on) the list")
    invalid: list[InvalidSample]


class SuppressionOut(BaseModel):
    phone: str
    reason: str | None
    created_at: str


class SuppressionPage(BaseModel):
    suppressions: list[SuppressionOut]
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


@router.get("/v1/suppressions", response_model=SuppressionPage)
def list_suppressions(after: Annotated[str | None, Query(max_length=64)] = None,
                      limit: Annotated[int, Query(ge=1, le=10_000)] = 1000, global_list: bool = _GLOBAL,
                      tenant: Tenant = Depends(auth.tenant)) -> SuppressionPage:
    page = suppressions.entries(service_id=_list_of(tenant, global_list, False), after=after, limit=limit)
    return SuppressionPage(
        suppressions=[SuppressionOut(phone=e.phone, reason=e.reason, created_at=e.created_at.isoformat())
                      for e in page],
        next=page[-1].phone if len(page) == limit else None,
    )


@router.post("/v1/suppressions", response_model=SuppressionsChanged, responses=_ADMIN_ONLY)
def add_suppressions(body: SuppressionsIn, tenant: Tenant = Depends(auth.tenant)) -> SuppressionsChanged:
    """Opt numbers out of this service; they are normalised like recipients (national ones need default_region)."""
    change = suppressions.add(body.numbers, service_id=_list_of(tenant, body.global_list, True),
                              region=body.default_region, reason=body.reason)
    return SuppressionsChanged(**vars(change))


@router.delete("/v1/suppressions/{number}", response_model=SuppressionsChanged,
               responses={404: {"description": "the number is not on the suppression list"}, **_ADMIN_ONLY})
def remove_suppression(number: Annotated[str, Path(max_length=64)],
                       default_region: Annotated[str | None, Query(min_length=2, max_length=2)] = None,
                       global_list: bool = _GLOBAL, tenant: Tenant = Depends(auth.tenant)) -> SuppressionsChanged:
    change = suppressions.remove([number], service_id=_list_of(tenant, global_list, True), region=default_region)
    if change.invalid:
        # The documented 422 shape, like every other 422.
        raise HTTPException(422, [{"loc": ["path", "number"], "msg": change.invalid[0].reason,
                                   "type": "invalid_number"}])
    if not change.changed:
        raise HTTPException(404, "the number is not on the suppression list")
    return SuppressionsChanged(**vars(change))


@router.post("/v1/messages", tags=["TikoSMS compatible"], responses={422: {
    "description": "TikoSMS's error shape: `{success: false, error, errors}`",
    "content": {"application/json": {"schema": {"type": "object", "properties": {
        "success": {"type": "boolean"}, "error": {"type": "string"}, "errors": {"type": "array"}}}}}}})
async def tiko_bulk(request: Request) -> JSONResponse:
    """TikoSMS's bulk send: ``{from, message, recipients: [{to, client_ref}], callback_url,
    scheduled_at, concurrency}`` → ``{success, campaign_id, recipients, duplicates_removed}``.
    Any other Herald submission field is accepted too; errors answer 422 ``{success: false, error}``.
    """
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"success": False, "error": "the body must be JSON"}, status_code=422)
    if not isinstance(body, dict):
        return JSONResponse({"success": False, "error": "the body must be a JSON object"}, status_code=422)
    try:
        receipt = await run_in_threadpool(partial(campaigns.submit, body, service=auth.tenant(request).service_id))
    except SubmissionError as exc:
        first = exc.errors[0]
        error = ".".join(map(str, first["loc"])) + ": " + first["msg"] if first["loc"] else first["msg"]
        return JSONResponse({"success": False, "error": error, "errors": exc.errors}, status_code=refused_status(exc))
    return JSONResponse({"success": True, "campaign_id": receipt.campaign_id,
                         "recipients": receipt.accepted, "duplicates_removed": receipt.duplicates})
