"""Herald's HTTP ingress: campaign intake, status and control, and the providers' webhooks."""

from __future__ import annotations

import json
import uuid

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

import campaigns
from campaigns import db, lifecycle, services
from campaigns.errors import ConfigurationError, Forbidden, InvalidReport, InvalidTransition, NotFound, SubmissionError
from campaigns.listing import list_messages
from campaigns.optout import record_inbound
from campaigns.aggregate import campaign_report
from campaigns.reports import StatusReport, report_problem
from campaigns.schema import Receipt, ShapeError, Submission, check_shape
from campaigns.settings import get_settings
from campaigns.services import Tenant
from campaigns.signing import secret_fingerprint, valid_account_webhook_token, valid_webhook_token
from worker import metrics
from worker.app import app as celery_app
from worker.api import auth, health, intake as http_intake, limits
from worker.providers import get_provider
from worker.api.report_path import DeliveryReportPath
from worker.api.webhook_batch import Batcher, Item


_NOT_FOUND = {404: {"description": "no such campaign"}}
_CONTROL_ERRORS = {**_NOT_FOUND, 409: {"description": "the campaign's status does not allow this"}}
_IDEMPOTENCY = {409: {"description": "the idempotency key was used with another body; `detail` names the fields"}}


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

    async def _database_unavailable(_request: Request, _exc: Exception) -> JSONResponse:
        # Nothing was written (each request is one transaction); the caller retries.
        return auth.database_unavailable()

    for error in db.CONNECTION_ERRORS:
        app.add_exception_handler(error, _database_unavailable)

    # One 422 shape for both: {"detail": [{"loc": ["body", field, ...], "msg", "type"}]}, never
    # echoing the input (it may hold numbers or message text).
    @app.exception_handler(SubmissionError)
    async def _refused(_request: Request, exc: SubmissionError):
        return JSONResponse({"detail": [{"type": "submission_error", **e, "loc": ["body", *e["loc"]]} for e in exc.errors]},
                            status_code=http_intake.refused_status(exc))

    @app.exception_handler(RequestValidationError)
    async def _malformed(_request: Request, exc: RequestValidationError):
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Forbidden)
    async def _forbidden(_request: Request, exc: Forbidden):
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(InvalidTransition)
    async def _conflict(_request: Request, exc: InvalidTransition):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """Liveness: the process serves requests."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "the database or the broker is unreachable, or no live worker consumes a queue"}})
    def readyz() -> JSONResponse:
        """Readiness: the database and the broker answer, and a live worker consumes every queue."""
        ok, checks = health.readiness()
        # The fingerprint lets an operator (and `herald doctor`) see processes signing with different keys.
        return JSONResponse({"status": "ok" if ok else "unavailable", **checks,
                             "secret_fingerprint": secret_fingerprint()}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse,
             responses={404: {"description": "no such service"}})
    def prometheus_metrics(service: str | None = Query(None, pattern=services.NAME_PATTERN)) -> Response:
        """Prometheus metrics: state counted from the database and broker, plus worker events.
        ``?service=NAME``: only that service's series (each carries a ``service`` label anyway)."""
        sid = services.resolve(service) if service is not None else None
        return Response(generate_latest(metrics.registry(state_of=celery_app, service_id=sid)),
                        media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/campaigns", response_model=Receipt, status_code=201, responses={
        **_IDEMPOTENCY, 403: {"description": "`priority` is `high` and the key's service may not use it"}})
    def submit_campaign(submission: Submission, tenant: Tenant = Depends(auth.tenant)) -> Receipt:
        return campaigns.submit(submission, service=tenant.service_id)

    app.include_router(http_intake.router)

    # Every campaign route first checks the caller's service owns the campaign: another
    # service's campaign is a 404 exactly like a missing one.
    @app.get("/v1/campaigns/{campaign_id}", responses=_NOT_FOUND)
    def get_campaign(campaign_id: uuid.UUID, tenant: Tenant = Depends(auth.tenant)) -> dict:
        """The exact aggregate: counts per status, delivery rate, cost, latency, per provider and country."""
        return campaign_report(services.check_campaign(campaign_id, tenant))

    @app.post("/v1/campaigns/{campaign_id}/pause", responses=_CONTROL_ERRORS)
    def pause_campaign(campaign_id: uuid.UUID, tenant: Tenant = Depends(auth.tenant)) -> dict:
        """No new send starts; sends already at the provider finish. 409 unless running."""
        lifecycle.pause(services.check_campaign(campaign_id, tenant))
        return campaign_report(campaign_id)

    @app.post("/v1/campaigns/{campaign_id}/resume", responses=_CONTROL_ERRORS)
    def resume_campaign(campaign_id: uuid.UUID, tenant: Tenant = Depends(auth.tenant)) -> dict:
        """Continue a paused campaign; nothing already sent is sent again."""
        lifecycle.resume(services.check_campaign(campaign_id, tenant))
        return campaign_report(campaign_id)

    @app.post("/v1/campaigns/{campaign_id}/cancel", responses=_CONTROL_ERRORS)
    def cancel_campaign(campaign_id: uuid.UUID, tenant: Tenant = Depends(auth.tenant)) -> dict:
        """Queued messages become cancelled; sent ones are cancelled at providers that can."""
        lifecycle.cancel(services.check_campaign(campaign_id, tenant))
        return campaign_report(campaign_id)

    @app.get("/v1/campaigns/{campaign_id}/messages", responses=_NOT_FOUND)
    def campaign_messages(campaign_id: uuid.UUID, after: int = Query(0, ge=0, le=2**63 - 1),
                          limit: int = Query(100, ge=1, le=1000),
                          status: str | None = Query(None, max_length=16),
                          tenant: Tenant = Depends(auth.tenant)) -> dict:
        """One keyset page of messages (ids and statuses, no numbers); pass ``next_after`` as ``after``."""
        return list_messages(services.check_campaign(campaign_id, tenant), after=after, limit=limit, status=status)

    # Account-level webhooks come first: their fixed segment must win over a campaign id.
    @app.post("/v1/webhooks/{account}/status/{token}", include_in_schema=False)
    async def account_status_webhook(account: str, token: str, request: Request):
        if not valid_account_webhook_token(account, "status", token):
            raise _unauthorized(account, "status", "invalid webhook token")
        payload, reports = _reports(account, await request.body())
        return {"applied": await reports_batch.apply(Item(account, None, reports, payload))}

    @app.post("/v1/webhooks/{account}/incoming/{token}", include_in_schema=False)
    async def account_incoming_webhook(account: str, token: str, request: Request):
        if not valid_account_webhook_token(account, "incoming", token):
            raise _unauthorized(account, "incoming", "invalid webhook token")
        provider = _provider(account)
        parse = getattr(provider, "parse_inbound", None)
        if parse is None:
            raise HTTPException(404, "this provider sends no inbound messages")
        try:
            messages = parse(_json_object(await request.body()))
        except InvalidReport as exc:
            raise HTTPException(422, str(exc)) from None
        return {"suppressed": await run_in_threadpool(_record_inbound, account, messages)}

    @app.post("/v1/webhooks/{account}/{subject}", include_in_schema=False)
    def webhook_without_token(account: str, subject: str):
        raise _unauthorized(account, "report", "missing webhook token")

    # POST /v1/webhooks/{account}/{campaign_id}/{token}, served by DeliveryReportPath (report_path.py).
    async def delivery_report(account: str, campaign_id: str, token: str, body: bytes) -> dict:
        # Checked before the id is parsed: a bad token learns nothing, not even "bad id".
        if not valid_webhook_token(account, campaign_id, token):
            raise _unauthorized(account, "report", "invalid webhook token")
        payload, reports = _reports(account, body)
        return {"applied": await reports_batch.apply(Item(account, uuid.UUID(campaign_id), reports, payload))}

    app.add_middleware(DeliveryReportPath, handle=delivery_report)
    # Added last, so outermost: a body too large is refused first, on every path.
    app.add_middleware(limits.BodyLimitMiddleware)
    return app


def _unauthorized(account: str, webhook: str, detail: str) -> HTTPException:
    metrics.webhook_unauthorized(account, webhook)
    return HTTPException(401, detail)


def _provider(account: str):
    try:
        return get_provider(account)
    except ConfigurationError:
        raise HTTPException(404, "unknown provider account") from None


def _json_object(body: bytes) -> dict:
    """The webhook body as a JSON object, within its limits (413 too many items, 422 otherwise).

    Parsed and checked before any transaction starts: a large body never holds the database."""
    settings = get_settings()
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise HTTPException(422, "the body must be JSON") from None
    if not isinstance(payload, dict):
        raise HTTPException(422, "the body must be a JSON object")
    try:
        check_shape(payload, max_depth=settings.json_max_depth, max_items=settings.webhook_max_reports)
    except ShapeError as exc:
        raise HTTPException(413 if exc.too_large else 422,
                            [{"loc": ["body", *exc.path], "msg": str(exc), "type": "body_shape"}]) from None
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
    if len(reports) > get_settings().webhook_max_reports:
        raise HTTPException(413, f"at most {get_settings().webhook_max_reports:,} reports in one body")
    for n, report in enumerate(reports):
        if problem := report_problem(report):
            raise HTTPException(422, [{"loc": ["body", "reports", n, problem[0]], "msg": problem[1],
                                       "type": "invalid_report"}])
        if not report.raw_status:
            raise HTTPException(422, f"report {n} has no status")
        if report.message_id is None and not report.provider_message_id:
            raise HTTPException(422, f"report {n} names no message")
    return payload, reports


def _record_inbound(account: str, messages) -> int:
    with db.session() as s:
        return record_inbound(s, account, messages)
