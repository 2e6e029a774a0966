"""Fair, prioritised dispatch (issue 15): a bounded window per campaign, refilled from the
database; priority classes drained in order. Real PostgreSQL, Redis, `celery worker` subprocesses
and an emulator of each test's own (its request log is what the assertions read).
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest
import redis as redis_lib
from sqlalchemy import select

from campaigns import db, intake, lifecycle, messages, pacing
from campaigns.aggregate import campaign_report
from campaigns.models import Campaign
from campaigns.schema import CampaignSpec
from campaigns.statuses import MessageStatus
from tests.conftest import FLEET, wait_for
from tests.test_dispatch_faults import (
    SWEEPING, emulator_counts, herald_env, progressed, rows, statuses, submit, unique_numbers, wait_final,
    workers,  # noqa: F401  (the fixture)
)
from worker import queues
from worker.send import fanout
from worker.emulator import Knobs
from worker.emulator.process import EmulatorProcess

pytestmark = FLEET


# -- the rule -----------------------------------------------------------------------------

def test_the_window_is_the_smallest_of_the_cap_and_what_the_limits_let_run():
    assert pacing.window_size(64) == pacing.Window(64, pacing.WINDOW_FULL)
    assert pacing.window_size(64, concurrency=1) == pacing.Window(1, pacing.CONCURRENCY)
    assert pacing.window_size(64, max_in_flight=10, concurrency=20) == pacing.Window(10, pacing.CONCURRENCY)
    # 20/s within the throttle's 0.5 s inline wait, plus the burst.
    assert pacing.window_size(64, rate_per_s=20, burst=2) == pacing.Window(12, pacing.RATE)
    assert pacing.window_size(64, rate_per_s=0.1) == pacing.Window(2, pacing.RATE)
    assert pacing.window_size(0) == pacing.Window(1, pacing.WINDOW_FULL)


def test_only_a_window_bound_by_its_own_concurrency_follows_on():
    assert pacing.follows_on(pacing.window_size(64, concurrency=1), 1)
    assert pacing.follows_on(pacing.window_size(64, concurrency=5, max_in_flight=10), 5)
    assert not pacing.follows_on(pacing.window_size(64), None)
    # Bound by what other campaigns share (an account's in-flight limit, a rate), or by the cap.
    assert not pacing.follows_on(pacing.window_size(64, concurrency=20, max_in_flight=10), 20)
    assert not pacing.follows_on(pacing.window_size(64, concurrency=20, rate_per_s=4), 20)
    assert not pacing.follows_on(pacing.window_size(64, concurrency=100), 100)


# -- helpers ------------------------------------------------------------------------------

def overlap_peak(emu: EmulatorProcess) -> int:
    """The most send requests the emulator was serving at once (arrival to answer)."""
    events = []
    for arrived, _provider, path, _status, _account, answered in emu.records()["requests"]:
        if path.endswith("/message"):
            events += [(arrived, 1), (answered, -1)]
    peak = current = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        current += step
        peak = max(peak, current)
    return peak


class BrokerSampler:
    """The longest the given send queue got, sampled every 10 ms while the test runs."""

    def __init__(self, url: str, queue: str):
        self.client, self.queue, self.peak = redis_lib.Redis.from_url(url), queue, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, self.client.llen(self.queue))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def by_campaign(emu: EmulatorProcess, *cids: str) -> dict[str, list[float]]:
    """Acceptance times at the emulator, per campaign (the client_ref is the message id)."""
    owner = {ref: cid for cid in cids for ref in rows(cid)}
    out: dict[str, list[float]] = {cid: [] for cid in cids}
    for r in emu.records()["records"]:
        if r["client_ref"] in owner:
            out[owner[r["client_ref"]]].append(r["accepted_at"])
    return {cid: sorted(ts) for cid, ts in out.items()}


def window_of(cid: str) -> dict:
    return campaign_report(cid)["window"]


# -- the window ---------------------------------------------------------------------------

def test_a_campaign_never_has_more_than_its_window_out(services, workers):
    n, window = 300, 6
    with EmulatorProcess(Knobs(latency_ms=40, report_delay_ms=20)) as emu:
        workers(2, herald_env(emu, dispatch_window=window))  # 2 x 8 threads: room for more than 6
        with BrokerSampler(services["HERALD_BROKER_URL"], queues.SEND) as broker:
            cid = submit(unique_numbers(n, seed=21), services["HERALD_BROKER_URL"])
            seen = []
            wait_for(lambda: seen.append(window_of(cid)) or progressed(cid) >= n // 2, timeout=60,
                     interval=0.02, message="half the campaign sent")
            final = wait_final(cid, n, timeout=90)
        sent = emulator_counts(emu)
        peak = overlap_peak(emu)

    assert set(final.values()) == {MessageStatus.DELIVERED}
    assert sorted(sent.values()) == [1] * n  # every recipient exactly once, across ~100 refills
    assert peak <= window, f"{peak} sends at the provider at once, window {window}"
    assert peak >= window - 2, "the window was not used: refills lag"
    assert broker.peak <= window
    assert max(w["in_flight"] for w in seen if w) <= window
    assert {w["size"] for w in seen if w and w["size"]} == {window}  # None until the first refill


def test_a_concurrency_limited_campaign_publishes_only_what_may_run(services, workers):
    n = 40
    with EmulatorProcess(Knobs(latency_ms=30, report_delay_ms=20)) as emu:
        fleet = workers(1, herald_env(emu))
        with BrokerSampler(services["HERALD_BROKER_URL"], queues.SEND) as broker:
            cid = submit(unique_numbers(n, seed=22), services["HERALD_BROKER_URL"], concurrency=2)
            seen = []
            wait_for(lambda: seen.append(window_of(cid)) or progressed(cid) >= n // 2, timeout=60,
                     interval=0.02, message="half the campaign sent")
            wait_final(cid, n, timeout=60)
        peak = overlap_peak(emu)
    log = fleet[0].log.read_text()

    assert peak <= 2 and broker.peak <= 2
    # Nothing the limit refused went back to the queue: every send ran once and was granted.
    assert "Retry in" not in log
    assert "concurrency" in {w["waiting"] for w in seen if w}


# -- following on (in this process: the send is a stand-in, the refills are real) -----------

def _sent(message_id: int) -> None:
    """What a send does to the row: claimed, then taken by the provider."""
    assert messages.claim(message_id) is not None
    messages.record_sent(message_id, "tiko", f"p{message_id}", "sent", None)


def test_the_token_carrier_sends_a_concurrency_1_campaign_s_next_messages_itself(services):
    receipt = intake.submit(CampaignSpec.model_validate(
        {"from": "Herald", "message": "Code 1234", "default_region": "GB", "concurrency": 1}),
        unique_numbers(5, seed=29))
    cid = receipt.campaign_id
    ids = sorted(int(ref) for ref in rows(cid))
    published, scheduled, here = [], [], []
    first = fanout.refill(cid, lambda *a: published.append(a), scheduled.append)
    assert published == [([ids[0]], queues.SEND, first.token, cid)] and first.token.carrier == ids[0]
    _sent(ids[0])

    def boom(message_id, queue, campaign_id):
        assert campaign_id == cid
        here.append(message_id)
        if len(here) == 3:
            raise RuntimeError("the worker's database went away")
        _sent(message_id)

    with pytest.raises(RuntimeError):
        fanout.follow_on(cid, first.token.seq, lambda *a: published.append(a), scheduled.append, boom, 5.0)
    # Sent here, one after the other, none published; the one whose send raised went back to the
    # broker carrying the live token, so the chain goes on from there.
    assert here == ids[1:4]
    (back, queue, token, _), = published[1:]
    assert back == [ids[3]] and queue == queues.SEND and token.carrier == ids[3]
    with db.session() as s:
        assert token.seq == s.get(Campaign, uuid.UUID(cid)).window_seq
    assert scheduled == []

    # Without a budget it publishes as before, the token on the send.
    _sent(ids[3])
    fanout.follow_on(cid, token.seq, lambda *a: published.append(a), scheduled.append, boom, 0.0)
    assert published[-1][0] == [ids[4]] and published[-1][2] is None  # the last: no token left
    assert here == ids[1:4]


def test_a_published_send_claims_without_waiting_for_its_refill(services):
    # A send's claim, once sent to PostgreSQL, commits even if its worker dies meanwhile: had it to
    # wait for the refill's row locks, a kill in that wait would leave a claimed message never sent.
    receipt = intake.submit(CampaignSpec.model_validate(
        {"from": "Herald", "message": "Code 1234", "default_region": "GB"}), unique_numbers(5, seed=31))
    cid = receipt.campaign_id
    claimed = []

    def publish(ids, *_):  # a worker takes the first send while the refill is still publishing
        worker = threading.Thread(target=lambda: claimed.append(messages.claim(ids[0])), daemon=True)
        worker.start()
        worker.join(5)
        assert claimed, "the claim waited for the refill"

    assert fanout.refill(cid, publish, lambda token: None).published == 5
    assert claimed[0].id == min(int(ref) for ref in rows(cid))


def test_a_refill_that_cannot_publish_gives_its_window_back(services):
    receipt = intake.submit(CampaignSpec.model_validate(
        {"from": "Herald", "message": "Code 1234", "default_region": "GB"}), unique_numbers(5, seed=37))
    cid = receipt.campaign_id
    with db.session() as s:
        before = s.get(Campaign, uuid.UUID(cid))
        checkpoint, seq = before.fanout_checkpoint, before.window_seq

    def broker_down(*_):
        raise ConnectionError("the broker went away")

    with pytest.raises(ConnectionError):
        fanout.refill(cid, broker_down, lambda token: None)
    with db.session() as s:
        after = s.get(Campaign, uuid.UUID(cid))
        assert (after.fanout_checkpoint, after.window_seq) == (checkpoint, seq + 1)
    published = []
    assert fanout.refill(cid, lambda ids, *_: published.extend(ids), lambda token: None).published == 5
    assert published == sorted(int(ref) for ref in rows(cid))


# -- fair share and priority ---------------------------------------------------------------

def test_a_concurrency_1_campaign_follows_on_instead_of_queueing_behind_a_large_one(services, workers):
    large_n, window, latency_ms = 4000, 128, 50
    with EmulatorProcess(Knobs(latency_ms=latency_ms, report_delay_ms=20)) as emu:
        # 8 threads: the window keeps a queue. A budget no loaded machine exhausts in 10 sends.
        workers(1, herald_env(emu, dispatch_window=window, follow_on_s=5))
        url = services["HERALD_BROKER_URL"]
        large = submit(unique_numbers(large_n, seed=27), url)
        wait_for(lambda: progressed(large) >= 300, timeout=60, interval=0.05, message="the large one sending")
        small = submit(unique_numbers(10, seed=28), url, concurrency=1)
        wait_final(small, 10, timeout=60)
        times = by_campaign(emu, large, small)
        sent = emulator_counts(emu)
        lifecycle.cancel(large)

    ours = times[small]
    assert len(ours) == 10 and all(sent[ref] == 1 for ref in rows(small))
    # Between two of its sends, how many of the large campaign's reached the provider. A send
    # published to the queue waits behind the large window's queued part (at least half the
    # window less the 8 running: 56); one sent by the thread that finished the one before it,
    # only behind what the 7 other threads finish meanwhile.
    between = [sum(a < t < b for t in times[large]) for a, b in zip(ours, ours[1:])]
    followed = [n for n in between if n < window // 4]
    assert len(followed) >= 7, f"large sends between its sends: {between}"
    assert sum(between) > 0, "the large campaign stood still meanwhile"

def test_a_small_campaign_interleaves_with_a_large_one(services, workers):
    large_n, window = 3000, 32
    with EmulatorProcess(Knobs(latency_ms=50, report_delay_ms=20)) as emu:
        workers(1, herald_env(emu, dispatch_window=window))
        url = services["HERALD_BROKER_URL"]
        large = submit(unique_numbers(large_n, seed=23), url)
        wait_for(lambda: progressed(large) >= 200, timeout=60, interval=0.05, message="the large one sending")
        small = submit(unique_numbers(10, seed=24), url)
        small_at = time.time()
        wait_final(small, 10, timeout=30)
        left = statuses(large).get(MessageStatus.QUEUED, 0)
        times = by_campaign(emu, large, small)
        lifecycle.cancel(large)

    assert left > large_n // 2, "the small campaign waited for most of the large one"
    # Its sends reached the provider before the large campaign's window (all of it) had drained.
    ahead = [t for t in times[large] if small_at < t < times[small][0]]
    # The window published when the small one arrived, and at most one refill that raced its
    # submission (submitted through the broker, so not at one instant): never the campaign.
    assert len(ahead) <= 2 * window, f"{len(ahead)} of the large campaign's sends went first"


def test_higher_priority_classes_are_consumed_first(services, start_worker):
    with EmulatorProcess(Knobs(latency_ms=5, report_delay_ms=20)) as emu:
        env = herald_env(emu)
        url = services["HERALD_BROKER_URL"]
        # Fan-out only: every window waits in its queue.
        fanning = start_worker("-Q", queues.DEFAULT, "--pool", "threads", "--concurrency", "2", env=env)
        cids = {p: submit(unique_numbers(20, seed=30 + i), url, priority=p)
                for i, p in enumerate(["bulk", "normal", "high"])}
        client = redis_lib.Redis.from_url(url)
        wait_for(lambda: all(client.llen(queues.send_queue(p)) == 20 for p in cids), timeout=30,
                 message="three windows published")
        fanning.stop()
        # One thread, one task at a time: the order it takes them is the order it runs them.
        start_worker("--pool", "threads", "--concurrency", "1", "--prefetch-multiplier", "1", env=env)
        for cid in cids.values():
            wait_final(cid, 20, timeout=60)
        times = by_campaign(emu, *cids.values())

    order = sorted((t, p) for p, cid in cids.items() for t in times[cid])
    classes = [p for _, p in order]
    assert classes == ["high"] * 20 + ["normal"] * 20 + ["bulk"] * 20


def test_high_priority_is_a_permission_of_the_service(services, api_server, start_worker):
    from click.testing import CliRunner

    from campaigns import apikeys, services as tenants
    from campaigns.errors import SubmissionError
    from worker.app import app
    from worker.cli import main as cli

    tenants.create("plain")
    tenants.create("urgent", high_priority=True)
    http = {name: httpx.Client(base_url=api_server.url, timeout=20, headers={
        "Authorization": f"Bearer {apikeys.create_key(name, service=name)[1]}"}) for name in ("plain", "urgent")}
    # Scheduled far ahead: nothing is published, so the broker stays empty for later tests.
    body = {"from": "Herald", "message": "Code 1234", "recipients": ["+447400123456"],
            "scheduled_at": "2099-01-01T00:00:00Z", "priority": "high"}

    def refused_over_http(name: str) -> bool:
        answer = http[name].post("/v1/campaigns", json=body)
        if answer.status_code == 201:
            return False
        assert answer.status_code == 403, answer.text
        assert [e["loc"] for e in answer.json()["detail"]] == [["body", "priority"]]
        return True

    assert refused_over_http("plain")
    tiko = http["plain"].post("/v1/messages", json=body)
    assert tiko.status_code == 403 and tiko.json()["errors"][0]["loc"] == ["priority"]
    assert http["plain"].post("/v1/campaigns", json={**body, "priority": "urgent"}).status_code == 422
    with db.session() as s:
        assert s.scalar(select(Campaign.id)) is None  # refused submissions store nothing
    assert http["plain"].post("/v1/campaigns", json={**body, "priority": "normal"}).status_code == 201
    assert not refused_over_http("urgent")

    # The broker's interface asks the same of the service it names.
    start_worker("--pool", "threads", "--concurrency", "2")
    with pytest.raises(SubmissionError) as caught:
        app.send_task("campaigns.submit", kwargs={**body, "service": "plain"}).get(timeout=60)
    assert caught.value.errors[0]["loc"] == ["priority"]
    receipt = app.send_task("campaigns.submit", kwargs={**body, "service": "urgent"}).get(timeout=60)
    assert campaign_report(receipt["campaign_id"])["priority"] == "high"

    # Granted and withdrawn from the CLI, for an existing service.
    runner = CliRunner()
    granted = runner.invoke(cli, ["services", "set", "plain", "--high-priority", "--json"])
    assert granted.exit_code == 0 and json.loads(granted.output)["high_priority"] is True
    assert not refused_over_http("plain")
    assert runner.invoke(cli, ["services", "set", "plain", "--no-high-priority"]).exit_code == 0
    assert refused_over_http("plain")
    assert runner.invoke(cli, ["services", "set", "nobody", "--high-priority"]).exit_code == 1
    listed = {s["name"]: s["high_priority"]
              for s in json.loads(runner.invoke(cli, ["services", "list", "--json"]).output)}
    assert listed == {"default": False, "plain": False, "urgent": True}
    for client in http.values():
        client.close()


# -- crashes and steering during refills -----------------------------------------------------

def test_exactly_once_per_recipient_with_workers_killed_mid_refill(services, workers):
    n, kills, window = 800, 3, 16
    with EmulatorProcess(Knobs(latency_ms=20, report_delay_ms=20)) as emu:
        env = herald_env(emu, dispatch_window=window, **SWEEPING)
        fleet = workers(2, env, "-B")
        cid = submit(unique_numbers(n, seed=25), services["HERALD_BROKER_URL"])
        points = sorted(random.Random().sample(range(n // 10, n * 8 // 10), kills))
        for point in points:
            wait_for(lambda: progressed(cid) >= point, timeout=120, interval=0.02,
                     message=f"{point} messages through")
            assert progressed(cid) < n, "the campaign finished before the kill"
            for w in fleet:
                w.kill()  # SIGKILL: refills, their tokens and prefetched sends die with them
            fleet = workers(2, env, "-B")
        final = wait_final(cid, n, timeout=150)
        sent = emulator_counts(emu)

    doubled = {ref: c for ref, c in sent.items() if c > 1}
    assert not doubled, f"sent more than once: {doubled}"
    unknown = [ref for ref, st in final.items() if st == MessageStatus.UNKNOWN]
    assert [ref for ref, st in final.items() if st != MessageStatus.UNKNOWN and sent[ref] != 1] == []
    assert set(Counter(final.values())) <= {MessageStatus.DELIVERED, MessageStatus.UNKNOWN}
    assert len(unknown) <= kills * window


def test_pause_resume_and_cancel_during_refills(services, workers):
    n, window = 1500, 16
    with EmulatorProcess(Knobs(latency_ms=20, report_delay_ms=20)) as emu:
        workers(2, herald_env(emu, dispatch_window=window))
        cid = submit(unique_numbers(n, seed=26), services["HERALD_BROKER_URL"])
        wait_for(lambda: progressed(cid) >= 200, timeout=60, interval=0.02, message="200 through")

        lifecycle.pause(cid)
        time.sleep(1.0)  # sends already at the provider finish
        frozen = len(emu.records()["records"])
        time.sleep(1.5)
        assert len(emu.records()["records"]) == frozen, "sends went on while paused"
        assert window_of(cid)["waiting"] == "paused"

        lifecycle.resume(cid)
        wait_for(lambda: len(emu.records()["records"]) >= frozen + 300, timeout=60, interval=0.02,
                 message="sending again after resume")
        lifecycle.cancel(cid)
        time.sleep(1.0)
        stopped = len(emu.records()["records"])
        time.sleep(1.5)
        after = len(emu.records()["records"])
        sent = emulator_counts(emu)
        final = statuses(cid)

    assert after == stopped, "sends went on after cancel"
    assert frozen + 300 <= stopped < n
    assert max(sent.values()) == 1
    assert final.get(MessageStatus.CANCELLED, 0) == n - stopped
    assert final.get(MessageStatus.QUEUED, 0) == 0 and final.get(MessageStatus.SENDING, 0) == 0
    assert campaign_report(cid)["window"] is None
    with db.session() as s:
        assert s.get(Campaign, uuid.UUID(cid)).window_seq > 10  # it really ran on refills
