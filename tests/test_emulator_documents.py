"""The emulators against the providers' own documents, over real HTTP.

- The project's copies of the OpenAPI documents are valid OpenAPI 3.0.
- Every request a document refuses gets that provider's documented 4xx (table per provider),
  and the refusal never echoes the number or text back.
- No answer, and no pushed report, carries a field outside its document.
"""

from __future__ import annotations

import copy
import time

import httpx
import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from worker.emulator import Knobs
from worker.emulator.documents import FILES, document, response_schema
from worker.emulator.process import EmulatorProcess

AUTH = {"Authorization": "Bearer test-token"}
WRONG = {"Authorization": "Bearer wrong"}
NUMBER = "+447400123456"
TEXT = "Your code is 1234"
TIKO_SEND = {"from": "Herald", "message": TEXT, "to": NUMBER.lstrip("+"), "client_ref": "1"}
MOB_SEND = {"message": TEXT, "recipient_number": NUMBER}


@pytest.fixture(scope="module")
def emu():
    with EmulatorProcess(Knobs(report_delay_ms=50)) as process:
        yield process


@pytest.fixture(scope="module")
def http(emu):
    with httpx.Client(base_url=emu.url, timeout=10) as client:
        yield client


@pytest.mark.parametrize("provider", sorted(FILES))
def test_the_documents_are_valid_openapi(provider):
    validate(document(provider))


# (provider path, method, URL, request kwargs, documented status)
REFUSED = [
    # TikoSMS (422 is its validation answer, 403 no rate, 404 nothing found)
    ("tikosms", "post", "/tikosms/v1/message", {"json": {**TIKO_SEND, "to": 447400123456}}, 422),
    ("tikosms", "post", "/tikosms/v1/message", {"json": {**TIKO_SEND, "client_ref": 7}}, 422),
    ("tikosms", "post", "/tikosms/v1/message", {"json": {**TIKO_SEND, "from": "A" * 16}}, 422),
    ("tikosms", "post", "/tikosms/v1/message", {"json": {**TIKO_SEND, "message": "x" * 161}}, 422),
    ("tikosms", "post", "/tikosms/v1/message", {"json": {k: v for k, v in TIKO_SEND.items() if k != "to"}}, 422),
    ("tikosms", "post", "/tikosms/v1/message", {"content": b"to=447400123456"}, 422),
    ("tikosms", "post", "/tikosms/v1/message", {"json": {**TIKO_SEND, "to": "447400"}}, 422),
    ("tikosms", "post", "/tikosms/v1/message", {"json": {**TIKO_SEND, "to": "79161234567"}}, 403),
    ("tikosms", "post", "/tikosms/v1/message", {"json": {**TIKO_SEND, "callback_url": "ftp://x"}}, 422),
    ("tikosms", "post", "/tikosms/v1/messages",
     {"json": {"from": "Herald", "message": TEXT, "recipients": [{"client_ref": "1"}]}}, 422),
    ("tikosms", "post", "/tikosms/v1/messages",
     {"json": {"from": "Herald", "message": TEXT, "recipients": [NUMBER]}}, 422),
    ("tikosms", "post", "/tikosms/v1/messages",
     {"json": {"from": "Herald", "message": TEXT, "recipients": [{"to": 447400123456}]}}, 422),
    ("tikosms", "post", "/tikosms/v1/messages",
     {"json": {"from": "Herald", "message": TEXT, "recipients": [{"to": NUMBER}], "concurrency": 101}}, 422),
    ("tikosms", "post", "/tikosms/v1/messages", {"content": b"not json"}, 422),
    ("tikosms", "get", "/tikosms/v1/get_message", {}, 404),
    ("tikosms", "get", "/tikosms/v1/get_message", {"params": {"message_id": "x" * 256}}, 422),
    ("tikosms", "get", "/tikosms/v1/get_messages", {"params": {"campaign_id": "not-a-uuid"}}, 422),
    ("tikosms", "get", "/tikosms/v1/get_messages",
     {"params": {"campaign_id": "6ff8f7f6-1eb3-3525-be4a-3932c805afed"}}, 404),
    ("tikosms", "get", "/tikosms/v1/sms-rates", {}, 422),
    ("tikosms", "get", "/tikosms/v1/balance", {"headers": WRONG}, 401),
    # MobSMS (422 validation and "No active device available", 404 no such message)
    ("mobsms", "post", "/mobsms/api/sms", {"json": {"message": TEXT, "phone": NUMBER}}, 422),
    ("mobsms", "post", "/mobsms/api/sms", {"json": {**MOB_SEND, "recipient_number": 447400123456}}, 422),
    ("mobsms", "post", "/mobsms/api/sms", {"json": {**MOB_SEND, "my_id": 42}}, 422),
    ("mobsms", "post", "/mobsms/api/sms", {"json": {**MOB_SEND, "message": "x" * 1601}}, 422),
    ("mobsms", "post", "/mobsms/api/sms", {"json": {**MOB_SEND, "price": -1}}, 422),
    ("mobsms", "post", "/mobsms/api/sms", {"json": {**MOB_SEND, "recipient_number": NUMBER.lstrip("+")}}, 422),
    ("mobsms", "post", "/mobsms/api/sms", {"content": b"{not json"}, 422),
    ("mobsms", "post", "/mobsms/api/sms/bulk", {"json": {"message": TEXT}}, 422),
    ("mobsms", "post", "/mobsms/api/sms/bulk", {"json": {"message": TEXT, "recipients": [{"name": "Ali"}]}}, 422),
    ("mobsms", "post", "/mobsms/api/sms/bulk", {"json": {"message": TEXT, "recipients": [447400123456]}}, 422),
    ("mobsms", "get", "/mobsms/api/sms", {"params": {"page": "first"}}, 422),
    ("mobsms", "get", "/mobsms/api/sms/999999999", {}, 404),
    ("mobsms", "put", "/mobsms/api/webhooks", {"json": {"webhook_url_status": 5}}, 422),
    ("mobsms", "get", "/mobsms/api/balance", {"headers": WRONG}, 401),
    # AikData (the document lists 401 only; 400 for a body it refuses is assumed)
    ("aikdata", "post", "/aikdata/v1/sms/send", {"json": {"to": 15551234567, "body": TEXT}}, 400),
    ("aikdata", "post", "/aikdata/v1/sms/send", {"json": {"to": "+15551234567", "body": TEXT, "from": 1}}, 400),
    ("aikdata", "post", "/aikdata/v1/sms/send", {"content": b"not json"}, 400),
    ("aikdata", "post", "/aikdata/v1/sms/send", {"json": {"to": "+44123", "body": TEXT}}, 400),
    ("aikdata", "post", "/aikdata/v1/sms/send", {"json": {"to": NUMBER, "body": TEXT}, "headers": WRONG}, 401),
    # SMS for AI (422 validation, as its table says)
    ("smsforai", "post", "/smsforai/api/v1/sms/send", {"json": {"to": NUMBER.lstrip("+"), "body": TEXT}}, 422),
    ("smsforai", "post", "/smsforai/api/v1/sms/send", {"json": {"to": 447400123456, "body": TEXT}}, 422),
    ("smsforai", "post", "/smsforai/api/v1/sms/send", {"json": {"to": NUMBER, "body": "x" * 1601}}, 422),
    ("smsforai", "post", "/smsforai/api/v1/sms/send", {"json": {"to": NUMBER, "body": TEXT, "sender_id": "My App!"}}, 422),
    ("smsforai", "post", "/smsforai/api/v1/sms/send", {"content": b"not json"}, 422),
    ("smsforai", "get", "/smsforai/api/v1/sms", {"params": {"status": "queued"}}, 422),
    ("smsforai", "get", "/smsforai/api/v1/balance", {"headers": WRONG}, 401),
    # Laravel gateway (400 invalid number, 401 credentials or key)
    ("laravel", "post", "/laravel/v1/sms/send",
     {"data": {"username": "test-user", "password": "test-pass", "numbers": "12345", "message_body": TEXT}}, 400),
    ("laravel", "post", "/laravel/v1/sms/send",
     {"data": {"username": "test-user", "password": "wrong", "numbers": "0712345678", "message_body": TEXT}}, 401),
    ("laravel", "post", "/laravel/api/v2/sms/send", {"json": {"numbers": "0712345678", "message_body": TEXT}}, 401),
    ("laravel", "get", "/laravel/api/v2/account/balance", {}, 401),
]


@pytest.mark.parametrize("provider, method, url, kwargs, status", REFUSED,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSED)])
def test_what_the_document_refuses_gets_its_documented_4xx(http, provider, method, url, kwargs, status):
    before = len(http.get("/_emulator/records").json()["records"])
    answer = http.request(method, url, **{"headers": AUTH, **kwargs})

    assert answer.status_code == status, answer.text
    assert answer.json()  # a JSON error body, not a framework's 500 page
    assert NUMBER.lstrip("+") not in answer.text and TEXT not in answer.text
    assert len(http.get("/_emulator/records").json()["records"]) == before, "a refused request sent nothing"


@pytest.mark.parametrize("provider, url, body", [
    ("aikdata", "/aikdata/v1/sms/send", {"to": "+15551234567", "body": "Your verification code is 123456",
                                         "from": "AikData"}),  # the document's own example
    ("tikosms", "/tikosms/v1/message", {"from": "MySender", "message": "Your OTP is 1234", "to": "380501234567",
                                        "callback_url": "https://yourdomain.com/sms-callback",
                                        "client_ref": "invoice-10294"}),
    ("mobsms", "/mobsms/api/sms", {"message": "Your code is 1234", "recipient_number": "+998901234567",
                                   "device_id": "active", "price": 39, "my_id": "order-42"}),
    ("smsforai", "/smsforai/api/v1/sms/send", {"to": "+12025551234", "body": "Hello!", "sender_id": "MyApp",
                                               "include_conversion_url": True}),
])
def test_the_documents_own_examples_are_accepted(http, provider, url, body):
    answer = http.post(url, json=body, headers=AUTH)
    assert answer.status_code in (200, 201), answer.text


def _strict(schema: dict) -> dict:
    """The schema with no property beyond those it names, at every level."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def _documented(provider: str, method: str, path: str, status: int) -> dict:
    """The operation's schema for this status; a status it does not list must still have the shape
    the document gives that status elsewhere (TikoSMS's 401 is shown on /v1/balance only)."""
    schema = response_schema(provider, method, path, status)
    if schema is None:
        for other_path, item in document(provider)["paths"].items():
            for other_method in item:
                if other_method in ("get", "post", "put", "delete"):
                    schema = schema or response_schema(provider, other_method, other_path, status)
    assert schema is not None, f"{provider} answers {status} on {method.upper()} {path}, which no part of its document shows"
    return schema


def _conforms(provider: str, method: str, path: str, answer: httpx.Response) -> None:
    schema = _documented(provider, method, path, answer.status_code)
    if "properties" not in schema and "items" not in schema:  # AikData shows examples only
        example = schema["example"]
        assert set(answer.json()) <= set(example), f"fields outside the document: {set(answer.json()) - set(example)}"
        for key, value in answer.json().items():
            assert value is None or type(value) is type(example[key]), key
        return
    errors = [e.message for e in OAS30Validator(_strict(schema)).iter_errors(answer.json())]
    assert not errors, f"{method.upper()} {path} {answer.status_code}: {errors}"


def test_every_tikosms_answer_and_report_is_in_its_document(http, receiver):
    p = "tikosms"
    hook = f"{receiver.url}/hook"
    sent = http.post("/tikosms/v1/message", json={**TIKO_SEND, "callback_url": hook}, headers=AUTH)
    _conforms(p, "post", "/v1/message", sent)
    for body in ({**TIKO_SEND, "to": "79161234567"}, {**TIKO_SEND, "to": "447400"}):
        _conforms(p, "post", "/v1/message", http.post("/tikosms/v1/message", json=body, headers=AUTH))
    _conforms(p, "post", "/v1/message", http.post("/tikosms/v1/message", json=TIKO_SEND, headers=WRONG))
    bulk = http.post("/tikosms/v1/messages", headers=AUTH, json={
        "from": "Herald", "message": TEXT, "recipients": [{"to": "447400123401"}, {"to": "447400123401"}]})
    assert bulk.json()["duplicates_removed"] == 1
    _conforms(p, "post", "/v1/messages", bulk)
    _conforms(p, "post", "/v1/messages", http.post("/tikosms/v1/messages", headers=AUTH, json={
        "from": "Herald", "message": TEXT, "recipients": [{"to": NUMBER}], "callback_url": "nope"}))
    message_id = sent.json()["message_id"]
    for params in ({"message_id": message_id}, {"campaign_id": sent.json()["campaign_id"]}, {"message_id": "none"}):
        _conforms(p, "get", "/v1/get_message", http.get("/tikosms/v1/get_message", params=params, headers=AUTH))
    for params in ({}, {"campaign_id": bulk.json()["campaign_id"]}, {"campaign_id": "6ff8f7f6-1eb3-3525-be4a-3932c805afed"}):
        _conforms(p, "get", "/v1/get_messages", http.get("/tikosms/v1/get_messages", params=params, headers=AUTH))
    _conforms(p, "get", "/v1/balance", http.get("/tikosms/v1/balance", headers=AUTH))
    _conforms(p, "get", "/v1/balance", http.get("/tikosms/v1/balance", headers=WRONG))
    for mccmnc in ("234", "25001"):
        _conforms(p, "get", "/v1/sms-rates", http.get("/tikosms/v1/sms-rates", params={"mccmnc": mccmnc}, headers=AUTH))

    report = _wait_for_report(receiver, message_id)
    row_schema = response_schema(p, "get", "/v1/get_message", 200)["properties"]["data"]["items"]
    assert not list(OAS30Validator(_strict(row_schema)).iter_errors(report))


def test_every_mobsms_answer_and_report_is_in_its_document(http, receiver):
    p = "mobsms"
    hook = f"{receiver.url}/hook"
    sent = http.post("/mobsms/api/sms", json={**MOB_SEND, "callback_url": hook, "my_id": "9"}, headers=AUTH)
    _conforms(p, "post", "/api/sms", sent)
    _conforms(p, "post", "/api/sms", http.post("/mobsms/api/sms", json={"message": TEXT}, headers=AUTH))
    _conforms(p, "post", "/api/sms/bulk", http.post("/mobsms/api/sms/bulk", headers=AUTH, json={
        "message": "Hi {name}", "recipients": [NUMBER, {"number": "+447400123402", "name": "Ali"}]}))
    row_id = sent.json()["data"]["id"]
    for key in (row_id, sent.json()["data"]["message_id"]):
        _conforms(p, "get", "/api/sms/{id}", http.get(f"/mobsms/api/sms/{key}", headers=AUTH))
    _conforms(p, "get", "/api/sms/{id}", http.get("/mobsms/api/sms/999999999", headers=AUTH))
    for params in ({}, {"direction": "outbound", "status": "pending", "page": 1}, {"direction": "inbound"}):
        _conforms(p, "get", "/api/sms", http.get("/mobsms/api/sms", params=params, headers=AUTH))
    _conforms(p, "get", "/api/sms/outbox", http.get("/mobsms/api/sms/outbox", headers=AUTH))
    for path in ("/api/account", "/api/balance", "/api/devices", "/api/webhooks"):
        _conforms(p, "get", path, http.get(f"/mobsms{path}", headers=AUTH))
    _conforms(p, "put", "/api/webhooks", http.put("/mobsms/api/webhooks", headers=AUTH,
                                                  json={"webhook_url_incoming": "https://example.com/in"}))
    cancel_me = http.post("/mobsms/api/sms", json=MOB_SEND, headers=AUTH).json()["data"]["id"]
    for _ in range(2):  # cancelled, then "Only pending messages can be cancelled"
        _conforms(p, "post", "/api/sms/{id}/cancel", http.post(f"/mobsms/api/sms/{cancel_me}/cancel", headers=AUTH))

    report = _wait_for_report(receiver, sent.json()["data"]["message_id"])
    callback = document(p)["paths"]["/api/sms"]["post"]["callbacks"]["status"]["{$request.body#/callback_url}"]
    schema = callback["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert not list(OAS30Validator(_strict(schema)).iter_errors(report))
    assert "9" not in {str(v) for v in report["data"].values()}, "my_id is echoed nowhere the document shows"


def test_mobsms_my_id_knob_adds_that_field_and_no_other(emu, http):
    emu.set_knobs(Knobs(report_delay_ms=50, mobsms_echo_my_id=True))
    try:
        data = http.post("/mobsms/api/sms", json={**MOB_SEND, "my_id": "77"}, headers=AUTH).json()["data"]
    finally:
        emu.set_knobs(Knobs(report_delay_ms=50))
    documented = response_schema("mobsms", "post", "/api/sms", 201)["properties"]["data"]["properties"]
    assert set(data) - set(documented) == {"my_id"} and data["my_id"] == "77"


def test_aikdata_answers_are_in_its_document(http):
    sent = http.post("/aikdata/v1/sms/send", json={"to": NUMBER, "body": TEXT}, headers=AUTH)
    _conforms("aikdata", "post", "/send", sent)
    _conforms("aikdata", "get", "/messages/{id}", http.get(f"/aikdata/v1/sms/messages/{sent.json()['id']}", headers=AUTH))


# The prose documents' answers, field by field as they show them (and as each emulator's
# docstring marks what is assumed).
PROSE = {
    ("smsforai", "post", "/smsforai/api/v1/sms/send"): {"id", "status", "to", "price_usd", "nvia_message_id", "conversion_url"},
    ("smsforai", "get", "/smsforai/api/v1/balance"): {"credits_usd"},
    ("smsforai", "get", "/smsforai/api/v1/me"): {"token", "user"},
    ("smsforai", "get", "/smsforai/api/v1/sms"): {"data", "links", "meta"},
    ("smsforai", "get", "/smsforai/api/v1"): {"api", "version", "status"},
    ("laravel", "post", "/laravel/v1/sms/send"): set(),
    ("laravel", "post", "/laravel/api/v2/sms/send"): set(),
}


def test_prose_providers_answer_only_what_their_documents_show(http):
    for (provider, method, url), fields in PROSE.items():
        kwargs = {"headers": AUTH}
        if url.endswith("/sms/send") and provider == "smsforai":
            kwargs["json"] = {"to": NUMBER, "body": TEXT, "include_conversion_url": True}
        elif url.endswith("v1/sms/send"):
            kwargs = {"data": {"username": "test-user", "password": "test-pass", "numbers": "0712345678",
                               "message_body": TEXT}}
        elif url.endswith("v2/sms/send"):
            kwargs = {"headers": {"X-API-Key": "test-token"}, "json": {"numbers": "0712345678", "message_body": TEXT}}
        answer = http.request(method, url, **kwargs)
        assert answer.status_code == 200, (url, answer.text)
        assert set(answer.json()) <= fields, (url, set(answer.json()) - fields)
    sent = http.post("/smsforai/api/v1/sms/send", json={"to": NUMBER, "body": TEXT}, headers=AUTH).json()
    assert "conversion_url" not in sent  # only when asked for
    assert set(http.get(f"/smsforai/api/v1/sms/{sent['id']}", headers=AUTH).json()) <= PROSE[
        ("smsforai", "post", "/smsforai/api/v1/sms/send")]
    countries = http.get("/smsforai/api/v1/countries", headers=AUTH).json()
    assert all(set(c) == {"country_code", "country_name", "dial_code", "price_usd"} for c in countries)
    v2 = http.get("/laravel/api/v2/account/balance", headers={"X-API-Key": "test-token"})
    assert v2.headers["x-ratelimit-limit"] == "60"
    v1 = http.post("/laravel/v1/sms/send", data={"username": "x", "password": "y"})
    assert v1.json() == {"error": "Unauthorized."}


def _wait_for_report(receiver, message_id: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for body in list(receiver.bodies):
            if message_id in str(body):
                return body
        time.sleep(0.05)
    raise AssertionError("no report was pushed")
