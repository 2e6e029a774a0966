"""API keys: every /v1 route refuses callers without a live key holding the method's scope."""

import json
import re
import subprocess

import httpx
import pytest
from click.testing import CliRunner
from fastapi.routing import APIRoute
from sqlalchemy import select

from campaigns import apikeys, db
from campaigns.errors import UnknownScope
from campaigns.models import ApiKey
from tests.conftest import PG_ADMIN, PG_DB
from worker.api.auth import required_scope
from worker.cli import main as cli
from worker.api.http import create_app

CAMPAIGN = {"from": "Herald", "message": "hello", "recipients": ["+447700900123"]}


def test_scope_follows_path_and_method():
    assert required_scope("/v1/campaigns", "GET") == "campaigns:read"
    assert required_scope("/v1/campaigns/x", "HEAD") == "campaigns:read"
    assert required_scope("/v1/campaigns", "POST") == "campaigns:write"
    assert required_scope("/v1/anything/new", "DELETE") == "campaigns:write"
    assert required_scope("/v1/webhooks/tiko/c/t", "POST") is None
    assert required_scope("/healthz", "GET") is None
    assert required_scope("/openapi.json", "GET") is None


def test_unknown_scope_is_refused():
    with pytest.raises(UnknownScope, match="campaigns:delete"):
        apikeys.create_key("x", ["campaigns:delete"])


def _bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_requests_without_a_good_key_are_refused(services, api_server):
    url = api_server.url
    _, read_only = apikeys.create_key("reader", [apikeys.READ])
    _, write_only = apikeys.create_key("writer", [apikeys.WRITE])
    revoked_info, revoked = apikeys.create_key("gone")
    apikeys.revoke_key(revoked_info.id)
    missing = f"{url}/v1/campaigns/00000000-0000-0000-0000-000000000000"

    for headers in ({}, {"Authorization": "Basic abc"}, _bearer("hk_not-a-real-key"), _bearer(revoked)):
        r = httpx.get(missing, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert httpx.post(f"{url}/v1/campaigns", json=CAMPAIGN, headers=headers).status_code == 401
    # An unauthenticated request is refused before its body is even parsed.
    assert httpx.post(f"{url}/v1/campaigns", content=b"{not json").status_code == 401

    assert httpx.post(f"{url}/v1/campaigns", json=CAMPAIGN, headers=_bearer(read_only)).status_code == 403
    r = httpx.get(missing, headers=_bearer(write_only))
    assert r.status_code == 403 and "campaigns:read" in r.json()["detail"]

    # The right scope passes the guard and reaches the route.
    assert httpx.get(missing, headers=_bearer(read_only)).status_code == 404
    r = httpx.post(f"{url}/v1/campaigns", json={"from": "Herald"}, headers=_bearer(write_only))
    assert r.status_code == 422
    # Webhooks answer to their URL token, health and the API document to anyone.
    r = httpx.post(f"{url}/v1/webhooks/tiko/00000000-0000-0000-0000-000000000000/bad", json={})
    assert r.status_code == 401 and r.json()["detail"] == "invalid webhook token"
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert "apiKey" in httpx.get(f"{url}/openapi.json").json()["components"]["securitySchemes"]


def test_the_fixture_client_is_authorised(api_client):
    r = api_client.post("/v1/campaigns", json={**CAMPAIGN, "recipients": ["+447700900123", "nope"]})
    assert r.status_code == 201, r.text
    assert api_client.get(f"/v1/campaigns/{r.json()['campaign_id']}").status_code == 200


def test_every_v1_route_is_guarded(services, api_server):
    """Routes added later under /v1 are covered without code of their own."""
    guarded = 0
    for route in create_app().routes:
        if not isinstance(route, APIRoute) or not route.path.startswith("/v1/"):
            continue
        if route.path.startswith("/v1/webhooks/"):
            continue
        path = re.sub(r"{[^}]+}", "00000000-0000-0000-0000-000000000000", route.path)
        for method in route.methods:
            r = httpx.request(method, api_server.url + path, json={})
            assert r.status_code == 401, (method, route.path, r.status_code)
            guarded += 1
    assert guarded >= 2


def test_keys_cli_shows_the_key_once_and_stores_only_its_hash(services):
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "billing", "--scope", "campaigns:read", "--json"])
    assert created.exit_code == 0, created.output
    made = json.loads(created.output)
    key = made["key"]
    assert made["scopes"] == ["campaigns:read"] and key.startswith("hk_") and len(key) > 40

    listed = runner.invoke(cli, ["keys", "list", "--json"])
    assert key not in listed.output
    assert [k["name"] for k in json.loads(listed.output)] == ["billing"]
    plain = runner.invoke(cli, ["keys", "list"])
    assert "billing" in plain.output and key not in plain.output

    with db.session() as s:
        row = s.scalar(select(ApiKey))
    assert row.key_hash == apikeys.hash_key(key) and len(row.key_hash) == 64
    # Nothing anywhere in the database holds the key: dump it all and look.
    dump = subprocess.run(["pg_dump", "--data-only", PG_ADMIN.rsplit("/", 1)[0] + f"/{PG_DB}"],
                          capture_output=True, text=True, check=True).stdout
    assert row.key_hash in dump and key not in dump and key[10:] not in dump

    assert apikeys.authenticate(key).name == "billing"
    revoked = runner.invoke(cli, ["keys", "revoke", str(made["id"]), "--json"])
    assert revoked.exit_code == 0 and json.loads(revoked.output)["revoked_at"]
    assert apikeys.authenticate(key) is None
    assert runner.invoke(cli, ["keys", "revoke", "999999"]).exit_code == 1
