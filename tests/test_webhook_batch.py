"""The webhook group commit's own logic: grouping, per-request answers, one bad item alone.

The real path (herald api, PostgreSQL, concurrent copies of a report) is in test_reports.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from worker.api.webhook_batch import Batcher, Item


def item(n: int) -> Item:
    return Item(account="a", campaign_id=uuid.UUID(int=n), reports=[], payload={"n": n})


def run(batcher: Batcher, items: list[Item]) -> list:
    async def main():
        return await asyncio.gather(*(batcher.apply(i) for i in items), return_exceptions=True)

    return asyncio.run(main())


def test_requests_arriving_together_share_batches_and_each_gets_its_own_answer():
    batches: list[list[int]] = []

    def apply_batch(items: list[Item]) -> list[int]:
        time.sleep(0.02)  # a commit: requests arriving meanwhile form the next batch
        batches.append([i.payload["n"] for i in items])
        return [i.payload["n"] * 10 for i in items]

    answers = run(Batcher(apply_batch), [item(n) for n in range(200)])

    assert answers == [n * 10 for n in range(200)]
    assert sorted(n for b in batches for n in b) == list(range(200)), "every item applied once"
    assert len(batches) < 20, f"{len(batches)} batches for 200 concurrent requests"


def test_one_bad_item_fails_alone():
    calls: list[int] = []

    def apply_batch(items: list[Item]) -> list[int]:
        calls.append(len(items))
        if any(i.payload["n"] == 3 for i in items):
            raise ValueError("item 3 is bad")
        return [1 for _ in items]

    answers = run(Batcher(apply_batch), [item(n) for n in range(6)])

    assert [a for n, a in enumerate(answers) if n != 3] == [1] * 5
    assert isinstance(answers[3], ValueError)
    assert calls[0] == 6 and calls[1:] == [1] * 6, "the failed batch was retried item by item"


def test_a_lone_report_is_applied_in_a_batch_of_its_own():
    seen: list[int] = []
    batcher = Batcher(lambda items: (seen.append(len(items)), [7] * len(items))[1])
    assert run(batcher, [item(1)]) == [7]
    assert seen == [1] and batcher.flusher is None and not batcher.pending


@pytest.mark.parametrize("size", [1, 501])
def test_batches_never_exceed_the_maximum(size):
    seen: list[int] = []
    run(Batcher(lambda items: (seen.append(len(items)), [0] * len(items))[1]), [item(n) for n in range(size)])
    assert sum(seen) == size and max(seen) <= 500


def test_the_campaign_webhook_fast_path_answers_as_the_api_does(services):
    """POST /v1/webhooks/{account}/{campaign_id}/{token} is plain ASGI (worker/api/report_path.py):
    over real HTTP it applies reports and refuses bad ones with the API's statuses and details."""
    import uuid

    import httpx

    from campaigns.aggregate import campaign_report
    from campaigns.signing import account_webhook_url, webhook_url
    from tests.reporting import mark_sent, numbers, stored_campaign, tiko_row

    cid = stored_campaign(numbers(2))
    first, second = mark_sent(cid)
    url = webhook_url("tiko", str(cid))
    base, token = url.rsplit("/", 1)

    def post(target, **kwargs):
        answer = httpx.post(target, timeout=10, **kwargs)
        return answer.status_code, answer.json(), answer.headers["content-type"]

    assert post(url, json=tiko_row(first, "DELIVRD")) == (200, {"applied": 1}, "application/json")
    assert post(url, json=tiko_row(first, "DELIVRD")) == (200, {"applied": 0}, "application/json")
    assert post(f"{base}/{token[:-2]}xx", json=tiko_row(second, "DELIVRD"))[:2] == (
        401, {"detail": "invalid webhook token"})
    # The token binds the account: under another account's path it is worthless.
    other = webhook_url("tiko", str(uuid.uuid4()))
    assert post(other.replace("/tiko/", "/nope/", 1), json={})[:2] == (401, {"detail": "invalid webhook token"})
    assert post(url, content=b"{not json")[:2] == (422, {"detail": "the body must be JSON"})
    assert post(url, content=b"\xff\xfe")[:2] == (422, {"detail": "the body must be JSON"})
    assert post(url, json=[1])[:2] == (422, {"detail": "the body must be a JSON object"})
    assert post(url, json={})[0] == 422
    # Routes beside it are still FastAPI's: account webhooks, a missing token, other methods.
    assert post(account_webhook_url("tiko", "status"), json=tiko_row(second, "DELIVRD"))[:2] == (200, {"applied": 1})
    assert post(base, json={})[:2] == (401, {"detail": "missing webhook token"})
    wrong = httpx.get(url, timeout=10)
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    assert campaign_report(cid)["status"] == "completed"
