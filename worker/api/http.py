"""Herald's HTTP ingress: campaign intake, status and control, and the providers' webhooks."""

from __future__ import annotations

import json
import uuid

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

import campaigns
from campaigns import db, lifecycle
from campaigns.errors import ConfigurationError, InvalidReport, InvalidTransition, NotFound, SubmissionError
from campaigns.listing import list_messages
from campaigns.optout import record_inbound
from campaigns.aggregate import campaign_report
from campaigns.reports import StatusReport
from campaigns.schema import Receipt, Submission
from campaigns.signing import valid_account_webhook_token, valid_webhook_token
from worker import metrics
from worker.app import app as celery_app
from worker.api import auth, health, intake as http_intake
from worker.providers import get_provider
from worker.api.report_path import DeliveryReportPath
from worker.api.webhook_batch import Batcher, Item


_NOT_FOUND = {404: {"description": "no such campaign"}}
_CONTROL_ERRORS = {**_NOT_FOUND, 409: {"description": "the campaign's status does not allow this"}}


def create_served_app() -> FastAPI:
    """`herald api`'s factory: each worker process sets up Herald's logging, then the app."""
    from worker.logs import setup_logging

    setup_logging()
    return create_app()


def create_app() -> FastAPI:
    app = FastAPI(title="Herald", version="0.1.0",
                  description="Bulk SMS campaign dispatch: intake, status and delivery reports.")
    auth.install(app)
    reports_batch = Batcher()  # delivery reports arriving together are applied together

    @app.exception_handler(OperationalError)
    async def _database_unavailable(_request: Request, _exc: OperationalError) -> JSONResponse:
        # Nothing was written (each request is one transaction); the caller retries.
        return JSONResponse({"detail": "the database is unavailable; retry shortly"}, status_code=503,
                            headers={"Retry-After": "1"})

    # One 422 shape for both: {"detail": [{"loc": ["body", field, ...], "msg", "type"}]}, never
    # echoing the input (it may hold numbers or message text).
    @app.exception_handler(SubmissionError)
    async def _refused(_request: Request, exc: SubmissionError):
        return JSONResponse({"detail": [{"type": "submission_error", **e, "loc": ["body", *e["loc"]]} for e in exc.errors]},
                            status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _malformed(_request: Request, exc: RequestValidationError):
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(InvalidTransition)
    async def _conflict(_request: Request, exc: InvalidTransition):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """Liveness: the process serves requests."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "the database or the broker is unreachable"}})
    def readyz() -> JSONResponse:
        """Readiness: the database and the broker answer."""
        ok, checks = health.readiness()
        return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def prometheus_metrics() -> Response:
        """Prometheus metrics: state counted from the database and broker, plus worker events."""
        return Response(generate_latest(metrics.registry(state_of=celery_app)), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/campaigns", response_model=Receipt, status_code=201)
    def submit_campaign(submission: Submission) -> Receipt:
        return campaigns.submit(submission)

    app.include_router(http_intake.router)

    @app.get("/v1/campaigns/{campaign_id}", responses=_NOT_FOUND)
    def get_campaign(campaign_id: uuid.UUID) -> dict:
        """The exact aggregate: counts per status, delivery rate, cost, latency, per provider and country."""
        return campaign_report(campaign_id)

    @app.post("/v1/campaigns/{campaign_id}/pause", responses=_CONTROL_ERRORS)
    def pause_campaign(campaign_id: uuid.UUID) -> dict:
        """No new send starts; sends already at the provider finish. 409 unless running."""
        lifecycle.pause(campaign_id)
        return campaign_report(campaign_id)

    @app.post("/v1/campaigns/{campaign_id}/resume", responses=_CONTROL_ERRORS)
    def resume_campaign(campaign_id: uuid.UUID) -> dict:
        """Continue a paused campaign; nothing already sent is sent again."""
        lifecycle.resume(campaign_id)
        return campaign_report(campaign_id)

    @app.post("/v1/campaigns/{campaign_id}/cancel", responses=_CONTROL_ERRORS)
    def cancel_campaign(campaign_id: uuid.UUID) -> dict:
        """Queued messages become cancelled; sent ones are cancelled at providers that can."""
        lifecycle.cancel(campaign_id)
        return campaign_report(campaign_id)

    @app.get("/v1/campaigns/{campaign_id}/messages", responses=_NOT_FOUND)
    def campaign_messages(campaign_id: uuid.UUID, after: int = Query(0, ge=0),
                          limit: int = Query(100, ge=1, le=1000), status: str | None = None) -> dict:
        """One keyset page of messages (ids and statuses, no numbers); pass ``next_after`` as ``after``."""
        return list_messages(campaign_id, after=after, limit=limit, status=status)

    # Account-level webhooks come first: their fixed segment must win over a campaign id.
    @app.post("/v1/webhooks/{account}/status/{token}", include_in_schema=False)
    async def account_status_webhook(account: str, token: str, request: Request):
        if not valid_account_webhook_token(account, "status", token):
            raise HTTPException(401, "invalid webhook token")
        payload, reports = _reports(account, await request.body())
        return {"applied": await reports_batch.apply(Item(account, None, reports, payload))}

    @app.post("/v1/webhooks/{account}/incoming/{token}", include_in_schema=False)
    async def account_incoming_webhook(account: str, token: str, request: Request):
        if not valid_account_webhook_token(account, "incoming", token):
            raise HTTPException(401, "invalid webhook token")
        provider = _provider(account)
        parse = getattr(provider, "parse_inbound", None)
        if parse is None:
            raise HTTPException(404, "this provider sends no inbound messages")
        try:
            messages = parse(_json_object(await request.body()))
        except InvalidReport as exc:
            raise HTTPException(422, str(exc)) from None
        return {"suppressed": await run_in_threadpool(_record_inbound, messages)}

    @app.post("/v1/webhooks/{account}/{subject}", include_in_schema=False)
    def webhook_without_token(account: str, subject: str):
        raise HTTPException(401, "missing webhook token")

    # POST /v1/webhooks/{account}/{campaign_id}/{token}, served by DeliveryReportPath (report_path.py).
    async def delivery_report(account: str, campaign_id: str, token: str, body: bytes) -> dict:
        # Checked before the id is parsed: a bad token learns nothing, not even "bad id".
        if not valid_webhook_token(campaign_id, token):
            raise HTTPException(401, "invalid webhook token")
        payload, reports = _reports(account, body)
        return {"applied": await reports_batch.apply(Item(account, uuid.UUID(campaign_id), reports, payload))}

    app.add_middleware(DeliveryReportPath, handle=delivery_report)

    return app


def _provider(account: str):
    try:
        return get_provider(account)
    except ConfigurationError:
        raise HTTPException(404, "unknown provider account") from None


def _json_object(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except ValueError:
        raise HTTPException(422, "the body must be JSON") from None
    if not isinstance(payload, dict):
        raise HTTPException(422, "the body must be a JSON object")
    return payload


def _reports(account: str, body: bytes) -> tuple[dict, list[StatusReport]]:
    """The body's reports, each naming a message and a status, or 422 before anything is stored."""
    provider = _provider(account)
    payload = _json_object(body)
    try:
        reports = provider.parse_report(payload)
    except (InvalidReport, ValueError, TypeError, KeyError) as exc:
        raise HTTPException(422, f"not a {account} report: {exc}") from None
    if not reports:
        raise HTTPException(422, "no report in the body")
    for n, report in enumerate(reports):
        if not report.raw_status:
            raise HTTPException(422, f"report {n} has no status")
        if report.message_id is None and not report.provider_message_id:
            raise HTTPException(422, f"report {n} names no message")
    return payload, reports


def _record_inbound(messages) -> int:
    with db.session() as s:
        return record_inbound(s, messages)
