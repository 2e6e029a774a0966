"""Hostile input gets a specific 4xx naming the field, never a 500, and changes nothing; callback
URLs cannot be turned against the host's own network."""

from __future__ import annotations

import http.server
import json
import socket
import threading

import httpx
import pytest
from sqlalchemy import func, select

from campaigns import callbacks, db
from campaigns.models import Callback, Campaign, DeliveryReport
from campaigns.settings import configure, get_settings
from campaigns.signing import webhook_url
from tests.reporting import mark_sent, numbers, stored_campaign, tiko_row

BASE = {"from": "Herald", "message": "hello", "recipients": ["+447400123456"]}


@pytest.mark.parametrize("field, value", [
    ("max_cost", 99999999.9999999),
    ("max_cost", "NaN"),
    ("scheduled_at", "9999-12-31T23:59:59-05:00"),
    ("idempotency_key", ""),
    ("idempotency_key", "k" * 256),
    ("provider", "p" * 65),
    ("callback_url", "file:///etc/passwd"),
    ("callback_url", "gopher://127.0.0.1:70/_x"),
    ("callback_url", "http://"),
    ("callback_url", "https://example.com/" + "a" * 3000),
    ("metadata", {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {}}}}}}}}}}),
])
def test_bad_campaign_fields_get_422_with_their_path(api_client, field, value):
    answer = api_client.post("/v1/campaigns", json={**BASE, field: value})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][:2] == ["body", field]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Campaign)) == 0


@pytest.mark.parametrize("raw", [
    b'{"from": "H", "message": "hi \\ud800", "recipients": ["+447400123456"]}',   # lone surrogate
    b'{"from": "H", "message": "hi", "recipients": [{"to": "+447400123456", "name": "\\udfff"}]}',
    b'{"from": "H", "message": "hi", "recipients": ["+447400123456"], "metadata": {"\\ud800": 1}}',
    b'[' * 100_000 + b']' * 100_000,                                                    # deep nesting
])
def test_unstorable_or_deep_bodies_get_4xx(api_client, raw):
    answer = api_client.post("/v1/campaigns", content=raw, headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text


@pytest.mark.parametrize("params", [{"after": 2**63}, {"after": -1}, {"status": "s" * 17}, {"limit": 10**6}])
def test_bad_listing_parameters_get_422(api_client, params):
    cid = api_client.post("/v1/campaigns", json={**BASE, "scheduled_at": "2099-01-01T00:00:00Z"}).json()["campaign_id"]
    answer = api_client.get(f"/v1/campaigns/{cid}/messages", params=params)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"][0] == "query"


@pytest.mark.parametrize("change, field", [
    ({"cost": "NaN"}, "cost"),
    ({"cost": "1e309"}, "cost"),
    ({"cost": "99999999999"}, "cost"),
    ({"status": "D" * 100}, "raw_status"),
    ({"status": "DELIV\ud800"}, "status"),  # refused by the body check, at its JSON path
    ({"message_id": "m" * 200, "client_ref": None}, "provider_message_id"),
    ({"client_ref": str(2**63)}, "message_id"),
    ({"delivered_at": "9999-12-31T23:59:59-05:00"}, "at"),
])
def test_bad_report_values_get_422_naming_the_field_and_store_nothing(services, change, field):
    cid = stored_campaign(numbers(1))
    [mid] = mark_sent(cid)
    row = {**tiko_row(mid, "DELIVRD"), **change}
    # json.dumps escapes a lone surrogate as \\ud800, as a hostile client would send it.
    answer = httpx.post(webhook_url("tiko", str(cid)), content=json.dumps(row).encode(),
                        headers={"content-type": "application/json"}, timeout=10)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][-1] == field
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(DeliveryReport)) == 0


def test_a_recipient_whose_text_no_account_can_carry_is_rejected_with_the_reason(api_client):
    # TikoSMS (the tests' only account) takes 160 characters per message.
    answer = api_client.post("/v1/campaigns", json={
        "from": "Herald", "message": "Hi {name}",
        "recipients": [{"to": "+447400123456", "name": "x" * 10_000}, {"to": "+447400123457", "name": "Ann"}]})
    assert answer.status_code == 201, answer.text
    receipt = answer.json()
    assert (receipt["accepted"], receipt["invalid"]) == (1, 1)
    assert receipt["invalid_reasons"][0] == {
        "position": 0, "reason": "the rendered message has 10,003 characters; no provider account of its route "
                                 "takes more than 160"}


class _Receiver(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []
    hosts: list[str] = []
    redirect_to: str | None = None

    def do_POST(self):  # noqa: N802 - http.server's name
        type(self).hits.append(self.path)
        type(self).hosts.append(self.headers.get("host"))
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/redirect" and self.redirect_to:
            self.send_response(307)
            self.send_header("Location", self.redirect_to)
        else:
            self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.hits, _Receiver.hosts = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _deliver(urls: list[str], allow_private: bool) -> dict[str, str | None]:
    previous = get_settings()
    configure(previous.model_copy(update={"callback_allow_private": allow_private}))
    try:
        cid = stored_campaign(numbers(len(urls), seed=21))
        with db.session() as s:
            from campaigns.models import Message
            ids = sorted(s.scalars(select(Message.id).where(Message.campaign_id == cid)))
            for mid, url in zip(ids, urls):
                callbacks.queue_message_callback(s, cid, mid, url)
        with httpx.Client() as client:
            callbacks.deliver_due(client)
        with db.session() as s:
            return dict(s.execute(select(Callback.url, Callback.last_error)).all())
    finally:
        configure(previous)


def test_callbacks_never_reach_private_addresses(services, receiver):
    port = receiver.rsplit(":", 1)[1]
    inward = [f"{receiver}/loopback", f"http://localhost:{port}/name", f"http://[::1]:{port}/v6",
              "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "http://224.0.0.1/",
              "http://0.0.0.0/", f"http://[::ffff:127.0.0.1]:{port}/mapped"]
    errors = _deliver(inward, allow_private=False)
    assert _Receiver.hits == []
    assert all(e and "non-public" in e for e in errors.values()), errors


def test_redirects_are_not_followed(services, receiver):
    _Receiver.redirect_to = f"{receiver}/inner"
    errors = _deliver([f"{receiver}/redirect"], allow_private=True)
    assert _Receiver.hits == ["/redirect"]  # the redirect's target was never contacted
    assert errors[f"{receiver}/redirect"] == "answered 307"


PUBLIC = "93.184.216.34"


def test_a_name_that_rebinds_after_the_check_never_reaches_the_inside(services, receiver, monkeypatch):
    """DNS rebinding: the name answers a public address when checked, then loopback. The request
    goes to the address that was checked; the loopback listener is never contacted."""
    port = int(receiver.rsplit(":", 1)[1])
    real_lookup, real_connect = socket.getaddrinfo, socket.create_connection
    lookups, connects = [], []

    def rebinding_lookup(host, *args, **kwargs):
        if host != "rebind.herald.test":
            return real_lookup(host, *args, **kwargs)
        lookups.append(host)
        answer = PUBLIC if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (answer, port))]

    def connect(address, *args, **kwargs):
        if address[0] == PUBLIC:  # where the checked address leads: refused here, not on the internet
            connects.append(address)
            raise ConnectionRefusedError(111, "refused by the test")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_lookup)
    monkeypatch.setattr(socket, "create_connection", connect)
    errors = _deliver([f"http://rebind.herald.test:{port}/rebound"], allow_private=False)
    assert _Receiver.hits == []
    assert lookups == ["rebind.herald.test"] and connects == [(PUBLIC, port)]
    assert errors == {f"http://rebind.herald.test:{port}/rebound": "transport failure (ConnectError)"}


def test_a_callback_by_name_is_delivered_to_its_checked_address_with_its_host(services, receiver):
    """HERALD_CALLBACK_ALLOW_PRIVATE=true: `localhost` is resolved once and connected to by address
    (trying ::1, then 127.0.0.1, where the receiver listens); the receiver sees the name."""
    port = receiver.rsplit(":", 1)[1]
    errors = _deliver([f"http://localhost:{port}/named"], allow_private=True)
    assert errors == {f"http://localhost:{port}/named": None}
    assert _Receiver.hits == ["/named"] and _Receiver.hosts == [f"localhost:{port}"]


def test_a_pinned_https_request_checks_the_certificate_against_the_name():
    url, headers, extensions = callbacks.pinned("https://hooks.example.com:8443/x?y=1", "2001:db8::1")
    assert str(url) == "https://[2001:db8::1]:8443/x?y=1"
    assert headers == {"host": "hooks.example.com:8443"} and extensions == {"sni_hostname": "hooks.example.com"}
    url, headers, extensions = callbacks.pinned("http://hooks.example.com/x", "203.0.113.9")
    assert (str(url), headers, extensions) == ("http://203.0.113.9/x", {"host": "hooks.example.com"}, {})


def test_the_recipients_callback_url_must_be_http(api_client):
    answer = api_client.post("/v1/campaigns", json={**BASE, "recipients": [
        {"to": "+447400123456", "callback_url": "file:///etc/passwd"},
        {"to": "+447400123457", "callback_url": "gopher://x/"}]})
    assert answer.status_code == 201, answer.text
    assert answer.json()["invalid"] == 2 and answer.json()["accepted"] == 0
