"""The emulators push reports like a provider: only a 2xx answer takes a report; anything else is
retried with backoff and logged with its status, so a broken webhook shows in tests."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.conftest import wait_for
from worker.emulator import Emulator, Knobs, create_app
from worker.emulator.app import PUSH_ATTEMPTS
from worker.api.serving import ServerThread

TOKEN = "secret-webhook-token"


@pytest.fixture
def webhook():
    """A webhook answering each report with the next status of ``answers`` (then 200)."""
    app = FastAPI()
    state = {"answers": [], "bodies": []}

    @app.post("/hook/{token}")
    async def hook(token: str, request: Request):
        state["bodies"].append(await request.json())
        status = state["answers"].pop(0) if state["answers"] else 200
        return JSONResponse({}, status_code=status)

    with ServerThread(app) as server:
        server.state = state
        yield server


@pytest.fixture
def emulator():
    emu = Emulator(Knobs(report_delay_ms=10))
    with ServerThread(create_app(emu)) as server:
        server.emu = emu
        yield server


def send(emulator, webhook) -> None:
    answer = httpx.post(f"{emulator.url}/tikosms/v1/message", headers={"Authorization": "Bearer test-token"},
                        json={"from": "Herald", "message": "hi", "to": "447400123456",
                              "callback_url": f"{webhook.url}/hook/{TOKEN}"})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("refusal", [401, 404, 302, 500])
def test_a_report_not_taken_is_retried_and_logged_with_its_status(emulator, webhook, caplog, refusal):
    webhook.state["answers"] = [refusal, refusal]
    with caplog.at_level(logging.WARNING, logger="worker.emulator"):
        send(emulator, webhook)
        wait_for(lambda: emulator.emu.reports_pushed == 1, timeout=10, message="the report taken at last")

    assert len(webhook.state["bodies"]) == 3  # two refusals, then a 2xx
    assert emulator.emu.push_answers == {refusal: 2} and emulator.emu.reports_failed == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "worker.emulator"]
    assert len(lines) == 2 and all(f"answered {refusal}" in line for line in lines)
    assert TOKEN not in caplog.text


def test_a_webhook_that_never_takes_it_fails_the_report(emulator, webhook):
    webhook.state["answers"] = [401] * PUSH_ATTEMPTS
    send(emulator, webhook)
    wait_for(lambda: emulator.emu.reports_failed == 1, timeout=15, message="the report given up")

    assert emulator.emu.reports_pushed == 0
    assert len(webhook.state["bodies"]) == PUSH_ATTEMPTS
    assert httpx.get(f"{emulator.url}/_emulator/stats").json()["push_answers"] == {"401": PUSH_ATTEMPTS}


def test_a_2xx_is_taken_at_once(emulator, webhook):
    webhook.state["answers"] = [204]
    send(emulator, webhook)
    wait_for(lambda: emulator.emu.reports_pushed == 1, timeout=10, message="the report taken")
    assert len(webhook.state["bodies"]) == 1 and not emulator.emu.push_answers
