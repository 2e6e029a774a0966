"""One contract for both throttles: Redis-backed (shared by workers) and in-process (embedded).

Time is passed in explicitly, so these run on a simulated clock.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import redis as redis_lib

from campaigns.settings import ProviderAccount, Settings
from tests.conftest import REDIS_BASE, REDIS_DB, _unavailable
from worker.send.throttle import Limits, MemoryThrottle, Quota, Rate, RedisThrottle, Semaphore, limits_for

T0 = 1_800_000_000.0


@pytest.fixture(params=["memory", "redis"])
def throttle(request):
    if request.param == "memory":
        yield MemoryThrottle()
        return
    client = redis_lib.Redis.from_url(f"{REDIS_BASE}/{REDIS_DB}", socket_connect_timeout=3)
    try:
        client.ping()
    except redis_lib.RedisError as exc:
        _unavailable("Redis", exc)
    prefix = f"herald:test:{uuid.uuid4().hex}:"
    yield RedisThrottle(client, prefix=prefix)
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)


def rate(per_s: float, burst: int = 1, inline: float = 0.5) -> Limits:
    return Limits(rates=(Rate("p", per_s, burst),), inline_wait_s=inline)


def test_sends_never_exceed_the_rate_in_any_second(throttle):
    # Given callers arriving every 10 ms for 10 s against 20/s, when each sends at its granted time
    sends = []
    t = T0
    while t < T0 + 10:
        d = throttle.acquire(rate(20), now=t)
        if d.granted:
            assert d.wait <= 0.5 + 1e-6
            sends.append(t + d.wait)
        t += 0.01
    # then no one-second window holds more than rate + burst, and the rate is met
    sends.sort()
    assert max(sum(1 for s in sends if a <= s < a + 1) for a in sends) <= 20 + 1
    assert 195 <= len(sends) <= 211


def test_burst_goes_back_to_back_then_the_rate_applies(throttle):
    waits = [throttle.acquire(rate(10, burst=5), now=T0).wait for _ in range(7)]
    assert waits[:5] == pytest.approx([0.0] * 5, abs=1e-6)
    assert waits[5:] == pytest.approx([0.1, 0.2], abs=1e-3)


def test_refused_callers_are_spread_at_the_rate(throttle):
    # Given the inline horizon is full
    while throttle.acquire(rate(10), now=T0).granted:
        pass
    # when more callers are refused, each is told to come back one interval after the previous
    waits = [throttle.acquire(rate(10), now=T0) for _ in range(5)]
    assert not any(d.granted for d in waits)
    steps = [b.wait - a.wait for a, b in zip(waits, waits[1:])]
    assert steps == pytest.approx([0.1] * 4, abs=1e-3)
    assert waits[0].reason == "rate p"


def test_a_quota_refuses_until_the_next_window(throttle):
    limits = Limits(quotas=(Quota("p:minute", 3, 60),))
    start = 60 * 30_000_000.0 + 10  # 10 s into a minute
    assert all(throttle.acquire(limits, now=start + i).granted for i in range(3))
    refused = throttle.acquire(limits, now=start + 5)
    assert not refused.granted and refused.wait == pytest.approx(45, abs=0.01)
    assert throttle.acquire(limits, now=start + 50.5).granted


def test_a_semaphore_holds_its_limit_and_frees_on_release(throttle):
    limits = Limits(semaphores=(Semaphore("c", 2),), lease_s=30)
    first, second = throttle.acquire(limits, now=T0), throttle.acquire(limits, now=T0)
    assert first.granted and second.granted
    third = throttle.acquire(limits, now=T0 + 0.1)
    assert not third.granted and third.wait > 0 and third.reason == "semaphore c"
    throttle.release(first, now=T0 + 0.2)
    assert throttle.acquire(limits, now=T0 + 0.3).granted


def test_a_lease_of_a_dead_worker_frees_itself(throttle):
    limits = Limits(semaphores=(Semaphore("c", 1),), lease_s=5)
    assert throttle.acquire(limits, now=T0).granted  # never released: the worker died
    assert not throttle.acquire(limits, now=T0 + 4).granted
    assert throttle.acquire(limits, now=T0 + 5.1).granted


def test_a_refusal_takes_nothing(throttle):
    # Given a full semaphore in front of a rate
    limits = Limits(rates=(Rate("p", 1),), semaphores=(Semaphore("c", 1),))
    holder = throttle.acquire(limits, now=T0)
    for _ in range(5):
        assert not throttle.acquire(limits, now=T0 + 0.5).granted
    # when the holder releases, the next caller's slot is not pushed back by the refusals
    throttle.release(holder, now=T0 + 1.0)
    after = throttle.acquire(limits, now=T0 + 1.0)
    assert after.granted and after.wait == pytest.approx(0.0, abs=1e-6)


def test_every_limit_must_agree(throttle):
    limits = Limits(rates=(Rate("fast", 100), Rate("slow", 2)), inline_wait_s=0.0)
    assert throttle.acquire(limits, now=T0).granted
    refused = throttle.acquire(limits, now=T0 + 0.05)
    assert not refused.granted and refused.reason == "rate slow"
    assert throttle.acquire(limits, now=T0 + 0.5).granted


def test_limits_follow_the_settings():
    settings = Settings(
        _env_file=None, global_rate_per_s=50, global_max_in_flight=40, throttle_inline_wait_s=0.25,
        providers={"tiko": ProviderAccount(kind="tikosms", base_url="http://x", rate_per_s=10, burst=3,
                                           per_minute=100, per_day=1000, max_in_flight=8, timeout_s=4)},
    )
    limits = limits_for(settings, "tiko", "c1", 5)
    assert limits.rates == (Rate("global", 50, 1), Rate("provider:tiko", 10, 3))
    assert limits.quotas == (Quota("provider:tiko:minute", 100, 60), Quota("provider:tiko:day", 1000, 86400))
    assert limits.semaphores == (Semaphore("global", 40), Semaphore("provider:tiko", 8), Semaphore("campaign:c1", 5))
    assert limits.lease_s > 2 * 4 and limits.inline_wait_s == 0.25
    assert not limits_for(Settings(_env_file=None, providers=settings.providers | {
        "bare": ProviderAccount(kind="tikosms", base_url="http://x")}), "bare", "c1", None)


def test_concurrent_callers_share_one_limit(throttle):
    """Many threads against one semaphore: never more leases out than its limit."""
    import threading
    import time

    limits = Limits(semaphores=(Semaphore("c", 3),), lease_s=30)
    held, peak, lock = Counter(), [0], threading.Lock()

    def worker():
        for _ in range(30):
            d = throttle.acquire(limits)
            if d.granted:
                with lock:
                    held["n"] += 1
                    peak[0] = max(peak[0], held["n"])
                time.sleep(0.002)
                with lock:
                    held["n"] -= 1
                throttle.release(d)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert 1 <= peak[0] <= 3


def test_a_throttled_send_is_not_claimed_and_spends_no_attempt(services):
    from sqlalchemy import select

    from campaigns import db, intake
    from campaigns.models import Message
    from campaigns.schema import CampaignSpec
    from campaigns.settings import get_settings
    from worker.send import dispatch
    from worker.send.throttle import get_throttle

    spec = CampaignSpec.model_validate({"from": "Herald", "message": "hi", "default_region": "GB",
                                        "concurrency": 1})
    cid = intake.submit(spec, ["+447400123401"]).campaign_id
    with db.session() as s:
        message_id = s.scalar(select(Message.id).where(Message.campaign_id == cid))
    # Given the campaign's one slot is held (by another worker, through the shared Redis)
    held = get_throttle().acquire(limits_for(get_settings(), "tiko", cid, 1))
    assert held.granted

    outcome = dispatch.send(message_id)

    assert outcome.status == "throttled" and 0 < outcome.retry_in < 5
    with db.session() as s:
        row = s.get(Message, message_id)
        assert (row.status, row.attempts, row.claimed_at) == ("queued", 0, None)
        assert row.due_at is not None
    get_throttle().release(held)


def test_a_send_that_loses_its_claim_during_the_rate_wait_gives_its_lease_back(services):
    import threading

    from sqlalchemy import select

    from campaigns import db, intake, messages
    from campaigns.models import Message
    from campaigns.schema import CampaignSpec
    from campaigns.settings import configure, get_settings
    from worker.send import dispatch
    from worker.send.throttle import get_throttle

    before = get_settings()
    configure(before.model_copy(update={"global_rate_per_s": 1, "throttle_inline_wait_s": 3}))
    try:
        spec = CampaignSpec.model_validate({"from": "Herald", "message": "hi", "default_region": "GB",
                                            "concurrency": 1})
        cid = intake.submit(spec, ["+447400123402", "+447400123403"]).campaign_id
        with db.session() as s:
            first, second = s.scalars(select(Message.id).where(Message.campaign_id == cid).order_by(Message.id))
        assert dispatch.send(first).status == "sent"  # takes the rate's one slot of this second
        # Given another delivery of the task claims the message while this one waits for its slot
        thief = threading.Timer(0.3, messages.claim, (second,))
        thief.start()
        outcome = dispatch.send(second)
        thief.join()

        assert outcome.status == "skipped"
        with db.session() as s:
            assert s.get(Message, second).attempts == 1  # the other claim only
        # Then the campaign's one in-flight slot is free again, not held until its lease expires.
        assert get_throttle().acquire(limits_for(get_settings(), "tiko", cid, 1)).granted
    finally:
        configure(before)


def test_a_send_that_names_its_campaign_skips_the_read_and_still_sends_once(services, emulator):
    """The refill's sends carry their campaign id, so the send claims without reading the row
    first: a repeated task still finds the claim taken, a paused campaign's message stays queued,
    and the lease either took is given back."""
    from sqlalchemy import select

    from campaigns import db, intake, lifecycle
    from campaigns.models import Message
    from campaigns.schema import CampaignSpec
    from campaigns.settings import get_settings
    from worker.send import dispatch
    from worker.send.throttle import get_throttle

    spec = CampaignSpec.model_validate({"from": "Herald", "message": "hi", "default_region": "GB",
                                        "concurrency": 1})
    sent_cid = intake.submit(spec, ["+447400123404"]).campaign_id
    paused_cid = intake.submit(spec, ["+447400123405"]).campaign_id
    lifecycle.pause(paused_cid)
    with db.session() as s:
        sent, paused = (s.scalar(select(Message.id).where(Message.campaign_id == c)) for c in (sent_cid, paused_cid))

    assert dispatch.send(sent, str(sent_cid)).status == "sent"
    assert dispatch.send(sent, str(sent_cid)).status == "skipped"  # a redelivered copy
    assert dispatch.send(paused, str(paused_cid)).status == "skipped"

    refs = [r["client_ref"] for r in emulator.records()["records"]]
    assert refs.count(str(sent)) == 1 and str(paused) not in refs
    with db.session() as s:
        assert s.get(Message, sent).status in ("sent", "delivered")  # its report may be in already
        assert s.get(Message, paused).status == "queued"
        assert s.get(Message, paused).attempts == 0
    for cid in (sent_cid, paused_cid):  # each campaign's one in-flight slot is free again
        lease = get_throttle().acquire(limits_for(get_settings(), "tiko", cid, 1))
        assert lease.granted
        get_throttle().release(lease)
