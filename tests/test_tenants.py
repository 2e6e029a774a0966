"""Two services share one Herald: each sees only its own rows, through HTTP, with a real worker
sending through the emulator. Another service's campaign answers exactly like a missing one."""

import json
import uuid

import httpx
import pytest
from click.testing import CliRunner

from campaigns import apikeys, services as tenants
from campaigns.errors import SubmissionError
from tests.conftest import wait_for
from worker.cli import main as cli

CAMPAIGN = {"from": "Herald", "message": "hello", "default_region": "GB",
            "recipients": ["07400 123456", "07400 123457"]}
MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def two_services(services, api_server):
    """Clients for services `alpha` and `beta`, and an admin client (a key of `default`)."""
    tenants.create("alpha")
    tenants.create("beta")
    clients = {}
    for name, service, scopes in (("alpha", "alpha", apikeys.SCOPES), ("beta", "beta", apikeys.SCOPES),
                                  ("admin", "default", (apikeys.ADMIN,))):
        key = apikeys.create_key(name, scopes, service=service)[1]
        clients[name] = httpx.Client(base_url=api_server.url, headers={"Authorization": f"Bearer {key}"},
                                     timeout=20)
    yield clients
    for client in clients.values():
        client.close()


def _submit(client, **extra) -> dict:
    answer = client.post("/v1/campaigns", json={**CAMPAIGN, **extra})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_another_services_campaign_answers_like_a_missing_one(two_services, start_worker):
    alpha, beta, admin = two_services["alpha"], two_services["beta"], two_services["admin"]
    start_worker("--pool", "threads", "--concurrency", "4")
    mine = _submit(alpha)["campaign_id"]

    for path in ("", "/messages"):
        theirs, missing = beta.get(f"/v1/campaigns/{mine}{path}"), beta.get(f"/v1/campaigns/{MISSING}{path}")
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["detail"].replace(mine, MISSING) == missing.json()["detail"]
    for action in ("pause", "resume", "cancel"):
        theirs, missing = beta.post(f"/v1/campaigns/{mine}/{action}"), beta.post(f"/v1/campaigns/{MISSING}/{action}")
        assert theirs.status_code == missing.status_code == 404, action
        assert theirs.json()["detail"].replace(mine, MISSING) == missing.json()["detail"]

    # Beta's attempts changed nothing: alpha's campaign runs to its end; admin sees it too.
    report = wait_for(lambda: (r := alpha.get(f"/v1/campaigns/{mine}").json())["status"] == "completed" and r,
                      timeout=90, message="alpha's campaign to complete")
    assert report["counts"]["cancelled"] == 0 and report["accepted"] == 2
    assert admin.get(f"/v1/campaigns/{mine}").json()["campaign_id"] == mine
    assert len(admin.get(f"/v1/campaigns/{mine}/messages").json()["messages"]) == 2

    # Admin may steer any service's campaign.
    other = _submit(beta, scheduled_at="2099-01-01T00:00:00Z")["campaign_id"]
    assert admin.post(f"/v1/campaigns/{other}/cancel").json()["status"] == "cancelled"


def test_idempotency_keys_are_per_service_and_a_changed_body_is_refused(two_services):
    alpha, beta = two_services["alpha"], two_services["beta"]
    first = _submit(alpha, idempotency_key="order-1", scheduled_at="2099-01-01T00:00:00Z")
    # The same key in another service is another campaign, never alpha's receipt.
    theirs = _submit(beta, idempotency_key="order-1", scheduled_at="2099-01-01T00:00:00Z")
    assert theirs["campaign_id"] != first["campaign_id"]
    assert beta.get(f"/v1/campaigns/{first['campaign_id']}").status_code == 404
    # Same key, same body: the first receipt. Same key, another body: 409 naming what differs.
    assert _submit(alpha, idempotency_key="order-1", scheduled_at="2099-01-01T00:00:00Z") == first
    changed = alpha.post("/v1/campaigns", json={**CAMPAIGN, "idempotency_key": "order-1", "message": "other",
                                                "scheduled_at": "2099-01-01T00:00:00Z"})
    assert changed.status_code == 409
    assert [e["loc"] for e in changed.json()["detail"]] == [["body", "message"]]
    assert first["campaign_id"] not in changed.text
    empty = alpha.post("/v1/campaigns", json={**CAMPAIGN, "idempotency_key": ""})
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "idempotency_key"]


def test_suppression_lists_are_per_service_and_only_admin_edits_the_global_one(two_services):
    alpha, beta, admin = two_services["alpha"], two_services["beta"], two_services["admin"]
    url = "/v1/suppressions"
    assert alpha.post(url, json={"numbers": ["07400 123456"], "default_region": "GB"}).json()["changed"] == 1
    assert [e["phone"] for e in alpha.get(url).json()["suppressions"]] == ["+447400123456"]
    assert beta.get(url).json()["suppressions"] == []
    assert beta.delete(f"{url}/%2B447400123456").status_code == 404  # not on beta's list
    held = dict(scheduled_at="2099-01-01T00:00:00Z")
    assert _submit(alpha, **held)["suppressed"] == 1
    assert _submit(beta, **held)["suppressed"] == 0

    # The global list: read by anyone, edited only by admin, honoured by every service.
    refused = alpha.post(url, json={"numbers": ["07400 123457"], "default_region": "GB", "global": True})
    assert refused.status_code == 403
    assert alpha.delete(f"{url}/%2B447400123457", params={"global": "true"}).status_code == 403
    assert admin.post(url, json={"numbers": ["07400 123457"], "default_region": "GB", "global": True}).status_code == 200
    assert [e["phone"] for e in beta.get(url, params={"global": "true"}).json()["suppressions"]] == ["+447400123457"]
    assert beta.get(url).json()["suppressions"] == []
    assert _submit(alpha, **held)["suppressed"] == 2
    assert _submit(beta, **held)["suppressed"] == 1


def test_the_celery_task_names_its_service(two_services, start_worker, services):
    from worker.app import app

    start_worker("--pool", "threads", "--concurrency", "2")
    body = {**CAMPAIGN, "scheduled_at": "2099-01-01T00:00:00Z"}
    for missing in ({}, {"service": ""}, {"service": "nobody"}):
        with pytest.raises(SubmissionError) as caught:
            app.send_task("campaigns.submit", kwargs={**body, **missing}).get(timeout=60)
        assert caught.value.errors[0]["loc"] == ["service"]
    receipt = app.send_task("campaigns.submit", kwargs={**body, "service": "beta"}).get(timeout=60)
    assert two_services["beta"].get(f"/v1/campaigns/{receipt['campaign_id']}").status_code == 200
    assert two_services["alpha"].get(f"/v1/campaigns/{receipt['campaign_id']}").status_code == 404


def _series(client, **params) -> list[tuple[str, dict, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    answer = client.get("/metrics", params=params)
    assert answer.status_code == 200, answer.text
    return [(sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(answer.text) for sample in family.samples]


def test_metrics_carry_and_filter_by_service(two_services):
    """No worker runs: both campaigns stay running with their messages queued."""
    alpha, beta = two_services["alpha"], two_services["beta"]
    mine = _submit(alpha)["campaign_id"]
    theirs = _submit(beta, recipients=["07400 123456", "07400 123457", "07400 123458"])["campaign_id"]

    every = _series(alpha)
    queued = {(labels["campaign_id"], labels["service"]): v for name, labels, v in every
              if name == "herald_campaign_messages" and labels["status"] == "queued"}
    assert queued == {(mine, "alpha"): 2, (theirs, "beta"): 3}
    by_service = {labels["service"]: v for name, labels, v in every
                  if name == "herald_messages" and labels["status"] == "queued"}
    assert by_service == {"alpha": 2, "beta": 3}
    assert {labels["service"] for name, labels, _ in every if name == "herald_campaign_progress"} == {"alpha", "beta"}

    only = _series(beta, service="alpha")
    assert only and all(labels["service"] == "alpha" for _, labels, _ in only), only
    assert {labels["campaign_id"] for _, labels, _ in only if "campaign_id" in labels} == {mine}
    assert {name for name, _, _ in only} >= {"herald_messages", "herald_campaigns", "herald_campaign_window"}
    assert beta.get("/metrics", params={"service": "nobody"}).status_code == 404
    assert beta.get("/metrics", params={"service": "Not a name\u0000"}).status_code == 422


def test_services_and_keys_from_the_cli(services, api_server):
    runner = CliRunner()
    made = runner.invoke(cli, ["services", "create", "gamma", "--json"])
    assert made.exit_code == 0, made.output
    assert runner.invoke(cli, ["services", "create", "gamma"]).exit_code == 1
    listed = json.loads(runner.invoke(cli, ["services", "list", "--json"]).output)
    assert [s["name"] for s in listed] == ["default", "gamma"]
    key = json.loads(runner.invoke(cli, ["keys", "create", "g", "--service", "gamma", "--json"]).output)
    assert key["service_id"] == json.loads(made.output)["id"]
    assert runner.invoke(cli, ["keys", "create", "x", "--service", "nope"]).exit_code == 1
    client = httpx.Client(base_url=api_server.url, headers={"Authorization": f"Bearer {key['key']}"})
    cid = client.post("/v1/campaigns", json={**CAMPAIGN, "scheduled_at": "2099-01-01T00:00:00Z"}).json()["campaign_id"]
    only = json.loads(runner.invoke(cli, ["campaigns", "--service", "gamma", "--json"]).output)
    assert [c["campaign_id"] for c in only] == [cid]
    assert json.loads(runner.invoke(cli, ["campaigns", "--service", "default", "--json"]).output) == []
    uuid.UUID(cid)
