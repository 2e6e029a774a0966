"""The four interfaces, each for real, give the same receipt for the same input.

Python ``campaigns.submit``; the Celery task by name through a real worker subprocess and the
Redis result backend; HTTP against a running server; ``herald submit FILE`` as a subprocess.
"""

import json
import os
import subprocess
import sys

import pytest

import campaigns
from campaigns import suppressions
from campaigns.errors import SubmissionError
from tests.conftest import ROOT

RECIPIENTS = [
    {"to": "07400 123456", "name": "Ann", "client_ref": "a"},
    {"to": "+44 7400 123456", "name": "Ann again"},       # duplicate after normalisation
    {"to": "+254 712 345 678", "name": "Wanjiru"},
    {"to": "07400 654321", "name": "Bob"},                 # opted out below
    {"to": "call me", "name": "Junk"},                     # invalid
    {"to": "07400 111222"},                                # no name: invalid for this template
    {"number": "+380 50 123 4567", "name": "Олена"},       # UCS-2: its own segment count
]
SPEC = {"from": "Herald", "message": "Hi {name}, your code is 1234", "default_region": "GB"}


def _comparable(receipt: dict) -> dict:
    return {k: v for k, v in receipt.items() if k != "campaign_id"}


def _cli(env, *args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, check=check)


def _write_csv(path, rows):
    lines = ["to,name,client_ref"] + [f"{r.get('to') or r.get('number')},{r.get('name', '')},{r.get('client_ref', '')}"
                                      for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_four_interfaces_return_the_same_receipt(services, start_worker, api_client, tmp_path):
    from worker.app import app

    suppressions.add(["07400 654321"], service_id=1, region="GB")
    submission = {**SPEC, "recipients": RECIPIENTS}

    python = campaigns.submit(submission).model_dump(mode="json")

    start_worker("--pool", "threads", "--concurrency", "2")
    celery = app.send_task("campaigns.submit", kwargs={**submission, "service": "default"}).get(timeout=60)

    response = api_client.post("/v1/campaigns", json=submission)
    assert response.status_code == 201, response.text
    http = response.json()

    csv_file, jsonl_file = tmp_path / "r.csv", tmp_path / "r.jsonl"
    _write_csv(csv_file, RECIPIENTS)
    jsonl_file.write_text("".join(json.dumps(r) + "\n" for r in RECIPIENTS), encoding="utf-8")
    flags = ["--from", SPEC["from"], "--message", SPEC["message"], "--region", "GB", "--json"]
    cli_csv = json.loads(_cli(services, "submit", str(csv_file), *flags).stdout)
    cli_jsonl = json.loads(_cli(services, "submit", str(jsonl_file), *flags).stdout)

    assert python["submitted"] == 7 and python["accepted"] == 3
    assert (python["duplicates"], python["suppressed"], python["invalid"]) == (1, 1, 2)
    assert [r["reason"] for r in python["invalid_reasons"]] == ["not a phone number", "missing template field 'name'"]
    # Two GSM-7 parts of one segment each, and one UCS-2 message of one segment.
    assert python["segments"] == 3 and python["estimated_cost"] == "0.15"
    for other in (celery, http, cli_csv, cli_jsonl):
        assert _comparable(other) == _comparable(python)
    ids = {r["campaign_id"] for r in (python, celery, http, cli_csv, cli_jsonl)}
    assert len(ids) == 5

    # The same idempotency key through every interface: the first campaign's receipt, unchanged.
    keyed = {**submission, "idempotency_key": "order-77"}
    first = campaigns.submit(keyed).model_dump(mode="json")
    assert app.send_task("campaigns.submit", kwargs={**keyed, "service": "default"}).get(timeout=60) == first
    assert api_client.post("/v1/campaigns", json=keyed).json() == first
    assert json.loads(_cli(services, "submit", str(csv_file), *flags, "--idempotency-key", "order-77").stdout) == first

    # A refusal reaches the Celery caller as SubmissionError with its field paths.
    result = app.send_task("campaigns.submit", kwargs={"service": "default", "from": "", "message": "Hi",
                                                           "recipients": []})
    with pytest.raises(SubmissionError) as caught:
        result.get(timeout=60)
    assert {tuple(e["loc"]) for e in caught.value.errors} == {("from",), ("recipients",)}


def test_http_422_names_every_bad_field(services, api_client):
    bad = {"from": "x" * 40, "message": "", "recipients": ["+447400123456", 7], "concurrency": 500,
           "send_window": {"start": "9am", "end": "20:00"}}
    response = api_client.post("/v1/campaigns", json=bad)
    assert response.status_code == 422
    locs = {tuple(e["loc"]) for e in response.json()["detail"]}
    assert {("body", "from"), ("body", "message"), ("body", "concurrency"),
            ("body", "send_window", "start")} <= locs
    assert any(loc[:3] == ("body", "recipients", 1) for loc in locs)
    assert "input" not in response.text, "the 422 never echoes the input back"

    # Refusals decided by intake have the same shape.
    response = api_client.post("/v1/campaigns",
                          json={**SPEC, "recipients": ["+447400123456"], "provider": "nope"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "provider"]


def test_too_many_recipients_names_the_limit_everywhere(services, api_client, tmp_path):
    from campaigns.settings import configure, get_settings

    configure(get_settings().model_copy(update={"max_recipients": 3}))
    numbers = ["+447400123451", "+447400123452", "+447400123453", "+447400123454"]
    response = api_client.post("/v1/campaigns", json={**SPEC, "recipients": numbers})
    assert response.status_code == 422
    assert response.json()["detail"] == [{"loc": ["body", "recipients"], "type": "too_many_recipients",
                                          "msg": "a campaign holds at most 3 recipients (HERALD_MAX_RECIPIENTS)"}]

    file = tmp_path / "many.txt"
    file.write_text("\n".join(numbers) + "\n")
    done = _cli({**services, "HERALD_MAX_RECIPIENTS": "3"}, "submit", str(file), "--from", "H", "--message", "x",
                check=False)
    assert done.returncode != 0
    assert "at most 3 recipients (HERALD_MAX_RECIPIENTS)" in done.stderr
    assert "recipients:" in done.stderr


def test_tikosms_compatible_bulk_endpoint(services, api_client):
    body = {"from": "MyBrand", "message": "Big sale today!", "scheduled_at": "2099-08-12 10:00:00",
            "recipients": [{"to": "380501234567", "client_ref": "order-1"},
                           {"to": "+380501234567", "client_ref": "order-2"},
                           {"to": "+254712345678"}], "concurrency": 20}
    response = api_client.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    # "380501234567" has no + and no region: TikoSMS reads it as international, Herald does not guess.
    assert (data["success"], data["recipients"], data["duplicates_removed"]) == (True, 2, 0)
    report = api_client.get(f"/v1/campaigns/{data['campaign_id']}").json()
    assert report["status"] == "scheduled"

    response = api_client.post("/v1/messages", json={**body, "concurrency": 0})
    assert response.status_code == 422
    assert response.json()["success"] is False and response.json()["error"].startswith("concurrency:")


def test_suppressions_over_http_and_cli(services, api_client):
    url = "/v1/suppressions"
    added = api_client.post(url, json={"numbers": ["07400 123456", "+44 7400 123456", "nonsense"],
                                  "default_region": "GB", "reason": "STOP"}).json()
    assert added == {"changed": 1, "unchanged": 0, "invalid": [{"position": 2, "reason": "not a phone number"}]}

    done = _cli(services, "suppress", "add", "+254 712 345 678", "0712 345 679", "--region", "KE", "--json")
    assert json.loads(done.stdout)["changed"] == 2
    listed = api_client.get(url).json()
    assert [e["phone"] for e in listed["suppressions"]] == ["+254712345678", "+254712345679", "+447400123456"]
    assert listed["suppressions"][2]["reason"] == "STOP" and listed["next"] is None
    assert [json.loads(line)["phone"] for line in _cli(services, "suppress", "list", "--json").stdout.splitlines()] \
        == ["+254712345678", "+254712345679", "+447400123456"]

    assert api_client.delete(f"{url}/%2B447400123456").status_code == 200
    assert api_client.delete(f"{url}/%2B447400123456").status_code == 404
    removed = json.loads(_cli(services, "suppress", "remove", "+254712345678", "--json").stdout)
    assert removed["changed"] == 1
    assert [e.phone for e in suppressions.entries(service_id=1)] == ["+254712345679"]

    receipt = campaigns.submit({**SPEC, "message": "Hi", "default_region": "KE",
                                "recipients": ["0712 345 679", "0712 345 678"]})
    assert (receipt.accepted, receipt.suppressed) == (1, 1)
