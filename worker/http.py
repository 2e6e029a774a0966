"""Herald's HTTP ingress: campaign intake and status, and the providers' delivery-report webhooks."""

from __future__ import annotations

import uuid

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import campaigns
from campaigns import db
from campaigns.errors import ConfigurationError, NotFound, SubmissionError
from campaigns.reports import apply_report, campaign_report, close_if_finished
from campaigns.schema import Receipt, Submission
from campaigns.signing import valid_webhook_token
from worker import auth
from worker.providers import get_provider


def create_app() -> FastAPI:
    app = FastAPI(title="Herald", version="0.1.0",
                  description="Bulk SMS campaign dispatch: intake, status and delivery reports.")
    auth.install(app)

    @app.exception_handler(SubmissionError)
    async def _refused(_request: Request, exc: SubmissionError):
        return JSONResponse({"detail": exc.errors}, status_code=422)

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/v1/campaigns", response_model=Receipt, status_code=201)
    def submit_campaign(submission: Submission) -> Receipt:
        return campaigns.submit(submission)

    @app.get("/v1/campaigns/{campaign_id}")
    def get_campaign(campaign_id: uuid.UUID) -> dict:
        return campaign_report(campaign_id)

    @app.post("/v1/webhooks/{account}/{campaign_id}/{token}", include_in_schema=False)
    async def delivery_report(account: str, campaign_id: uuid.UUID, token: str, request: Request):
        if not valid_webhook_token(str(campaign_id), token):
            raise HTTPException(401, "invalid webhook token")
        try:
            payload = await request.json()
        except ValueError:
            raise HTTPException(422, "the body must be JSON") from None
        if not isinstance(payload, dict):
            raise HTTPException(422, "the body must be a JSON object")
        try:
            provider = get_provider(account)
        except ConfigurationError:
            raise HTTPException(404, "unknown provider account") from None
        reports = provider.parse_report(payload)
        if not reports:
            raise HTTPException(422, "no report in the body")
        moved = await run_in_threadpool(_apply, account, campaign_id, reports, payload)
        return {"applied": moved}

    return app


def _apply(account: str, campaign_id: uuid.UUID, reports: list, payload: dict) -> int:
    # Stored and applied in one transaction before the 2xx: an acknowledged report is never lost.
    with db.session() as s:
        moved = sum(apply_report(s, account, r, payload) for r in reports)
    if moved:
        # Checked after our commit: of two last reports committing together, the later sees both.
        with db.session() as s:
            close_if_finished(s, campaign_id)
    return moved
