"""The emulators' one ASGI app: every provider's router under its own prefix, and the test door."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request

from worker.emulator import aikdata, documents, laravel, mobsms, smsforai, tikosms
from worker.emulator.app import Emulator, Knobs, account_of

PREFIXES = ("aikdata", "laravel", "mobsms", "smsforai", "tikosms")


class _CountInFlight:
    """Plain ASGI middleware (cheap): counts requests being served per path."""

    def __init__(self, app, emulator: Emulator):
        self.app, self.emulator = app, emulator

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        with self.emulator.in_flight(scope["path"]):
            await self.app(scope, receive, send)


def create_app(emulator: Emulator | None = None) -> FastAPI:
    emulator = emulator or Emulator()
    documents.prepare()
    app = FastAPI(title="Herald provider emulators")
    app.state.emulator = emulator
    app.include_router(aikdata.router(emulator), prefix="/aikdata/v1/sms")
    app.include_router(laravel.router(emulator), prefix="/laravel")
    app.include_router(mobsms.router(emulator), prefix="/mobsms")
    app.include_router(smsforai.router(emulator), prefix="/smsforai/api/v1")
    app.include_router(tikosms.router(emulator), prefix="/tikosms")

    app.add_middleware(_CountInFlight, emulator=emulator)

    @app.middleware("http")
    async def log_requests(request: Request, call_next):
        # Logged on arrival time, with the status answered: tests read timing from here.
        arrived = time.time()
        response = await call_next(request)
        provider, _, path = request.url.path.lstrip("/").partition("/")
        if provider in PREFIXES:
            emulator.log_request(provider, "/" + path, response.status_code, account_of(request), arrived)
        return response

    @app.get("/_emulator/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/_emulator/records")
    def records() -> dict:
        return emulator.snapshot()

    @app.get("/_emulator/stats")
    def stats() -> dict:
        return emulator.stats()

    @app.post("/_emulator/release")
    async def release(to: str | None = None, keep: bool = False) -> dict:
        return {"released": await emulator.release(to, keep)}

    @app.delete("/_emulator/held")
    def drop_held(keep: int = 0) -> dict:
        return {"dropped": emulator.drop_held(keep)}

    @app.put("/_emulator/knobs")
    def set_knobs(knobs: Knobs) -> Knobs:
        emulator.knobs = knobs
        return knobs

    return app
