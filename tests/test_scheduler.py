"""The scheduler on the real PostgreSQL, Redis, `celery worker` and `celery beat` subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

import campaigns
from campaigns import clock, db, windows
from campaigns.errors import SubmissionError
from campaigns.models import Campaign, Message
from campaigns.aggregate import campaign_report
from campaigns.schema import CampaignSpec
from scheduler import jobs, release
from scheduler.periodic import single_flight
from tests.conftest import FLEET, ROOT, wait_for
from worker.send import dispatch, fanout

UTC = timezone.utc
CLOCK_KEY = "herald:test-clock"
MONDAY_0830 = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)  # London 08:30, Nairobi 11:30, Los Angeles 00:30
ZONE_OF = {"+447400123456": "Europe/London", "+254701234567": "Africa/Nairobi",
           "+13105550123": "America/Los_Angeles"}
DAY_WINDOW = {"start": "09:00", "end": "20:00"}


@pytest.fixture
def shared_clock(services):
    """A clock this process and every subprocess started with ``clocked`` read from Redis."""
    shared = clock.RedisClock(services["HERALD_REDIS_URL"], CLOCK_KEY)
    clock.set_clock(shared)
    yield shared
    shared.clear()
    clock.set_clock(None)


clocked = {"HERALD_CLOCK_KEY": CLOCK_KEY}


class BeatProcess:
    """A real `celery -A worker beat` subprocess with its own schedule file."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str):
        self.log = workdir / f"beat-{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel", "INFO",
             "--schedule", str(workdir / f"beat-{name}"), "--pidfile", ""],
            cwd=ROOT, env={**os.environ, **env}, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def sent(self, entry: str) -> int:
        return self.log.read_text().count(f"Sending due task {entry} ")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)


@pytest.fixture
def start_beat(services, tmp_path):
    started: list[BeatProcess] = []

    def start(name: str, env: dict[str, str] | None = None) -> BeatProcess:
        beat = BeatProcess({**services, **(env or {})}, tmp_path, name)
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


def results(worker, task: str) -> list[str]:
    """Return values of every finished run of ``task``, from the worker's own log."""
    log = worker.log.read_text()
    failed = re.search(rf"Task {re.escape(task)}\[[^\]]+\] raised .*", log)
    assert not failed, failed.group(0)
    return re.findall(rf"Task {re.escape(task)}\[[^\]]+\] succeeded in [\d.e-]+s: (\S+)", log)


def sends(emulator, campaign_id: str) -> Counter:
    """How often the emulator accepted each of the campaign's numbers."""
    with db.session() as s:
        ours = {str(i): p for i, p in s.execute(select(Message.id, Message.phone)
                                                 .where(Message.campaign_id == uuid.UUID(campaign_id)))}
    return Counter(ours[r["client_ref"]] for r in emulator.records()["records"] if r["client_ref"] in ours)


def spec(**fields) -> CampaignSpec:
    return CampaignSpec.model_validate({"from": "Herald", "message": "Scheduled hello", **fields})


def message_rows(campaign_id: str) -> dict[str, Message]:
    with db.session() as s:
        return {m.phone: m for m in s.scalars(select(Message).where(Message.campaign_id == uuid.UUID(campaign_id)))}


# -- acceptance 1 -----------------------------------------------------------------------------

def test_a_campaign_scheduled_five_seconds_ahead_is_not_sent_before_its_time(
        services, start_worker, start_beat, emulator):
    start_worker("--pool", "threads", "--concurrency", "4")
    start_beat("only")
    at = clock.now() + timedelta(seconds=5)

    receipt = campaigns.submit(spec(scheduled_at=at.isoformat()), list(ZONE_OF))

    assert receipt.status == "scheduled"
    sent = wait_for(lambda: len(s := sends(emulator, receipt.campaign_id)) == 3 and s, timeout=60,
                    message="the scheduled campaign to be sent")
    assert set(sent.values()) == {1}
    with db.session() as s:
        refs = {str(i) for i in s.scalars(select(Message.id).where(
            Message.campaign_id == uuid.UUID(receipt.campaign_id)))}
    first = min(r["accepted_at"] for r in emulator.records()["records"] if r["client_ref"] in refs)
    assert first >= at.timestamp(), f"first request {at.timestamp() - first:.3f} s early"


def test_a_past_scheduled_at_is_refused_unless_send_now(services):
    past = (clock.now() - timedelta(minutes=1)).isoformat()
    with pytest.raises(SubmissionError, match="send_now"):
        campaigns.submit(spec(scheduled_at=past), ["+447400123456"])
    assert campaigns.submit(spec(scheduled_at=past, send_now=True), ["+447400123456"]).status == "running"


# -- acceptance 2 -----------------------------------------------------------------------------

def test_three_zones_are_each_sent_only_inside_their_own_window(
        services, shared_clock, start_worker, emulator):
    shared_clock.freeze(MONDAY_0830)
    start_worker("--pool", "threads", "--concurrency", "4", env=clocked)

    receipt = campaigns.submit(spec(send_window=DAY_WINDOW), list(ZONE_OF))
    cid = receipt.campaign_id

    # 08:30 UTC: only Nairobi (11:30) is open; London and Los Angeles wait for their own 09:00.
    wait_for(lambda: sends(emulator, cid) == {"+254701234567": 1}, message="Nairobi to be sent")
    rows = message_rows(cid)
    assert rows["+447400123456"].not_before == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert rows["+13105550123"].not_before == datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
    assert jobs.release_deferred_recipients() == 0

    for at, expected in [
        (datetime(2026, 11, 23, 8, 59, 59, tzinfo=UTC), {"+254701234567"}),
        (datetime(2026, 11, 23, 9, 0, 30, tzinfo=UTC), {"+254701234567", "+447400123456"}),
        (datetime(2026, 11, 23, 16, 59, tzinfo=UTC), {"+254701234567", "+447400123456"}),
        (datetime(2026, 11, 23, 17, 0, 30, tzinfo=UTC), set(ZONE_OF)),
    ]:
        shared_clock.freeze(at)
        already = len(sends(emulator, cid))
        assert jobs.release_deferred_recipients() == len(expected) - already, at
        wait_for(lambda: set(sends(emulator, cid)) == expected, message=f"sends at {at}")

    assert set(sends(emulator, cid).values()) == {1}
    for phone, m in message_rows(cid).items():
        sent_local = m.sent_at.astimezone(ZoneInfo(ZONE_OF[phone])).time()
        assert time(9) <= sent_local < time(20), (phone, sent_local)


def test_a_message_claimed_after_its_window_closed_goes_back_to_wait(services, shared_clock, emulator):
    shared_clock.freeze(datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    receipt = campaigns.submit(spec(send_window=DAY_WINDOW), ["+447400123456"])
    message = message_rows(receipt.campaign_id)["+447400123456"]
    before = len(emulator.records()["records"])

    # The send task arrives late (a backlog): 20:15 in London.
    shared_clock.freeze(datetime(2026, 11, 23, 20, 15, tzinfo=UTC))
    assert dispatch.send(message.id).status == "deferred"

    after = message_rows(receipt.campaign_id)["+447400123456"]
    assert (after.status, after.attempts, after.claimed_at) == ("queued", 0, None)
    assert after.not_before == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    assert dispatch.send(message.id).status == "skipped"  # not due: a stray copy does nothing
    assert len(emulator.records()["records"]) == before


def test_a_number_whose_zones_never_share_the_window_fails_with_the_reason(services, shared_clock):
    shared_clock.freeze(MONDAY_0830)
    narrow = {"start": "09:00", "end": "10:00"}  # Russia spans ten hours: no hour suits all its zones
    receipt = campaigns.submit(spec(send_window=narrow), ["+79161234567", "+447400123456"])
    published: list[int] = []

    assert fanout.fan_out(receipt.campaign_id, published.extend, batch=10) == 0

    rows = message_rows(receipt.campaign_id)
    assert (rows["+79161234567"].status, rows["+79161234567"].error) == ("failed", windows.NEVER_OPEN)
    assert rows["+447400123456"].status == "queued" and rows["+447400123456"].not_before is not None


# -- acceptance 3 -----------------------------------------------------------------------------

@FLEET
def test_two_beats_together_do_each_jobs_work_once(
        services, shared_clock, start_worker, start_beat, emulator):
    shared_clock.freeze(MONDAY_0830)
    worker = start_worker("--pool", "threads", "--concurrency", "4", env=clocked)
    beats = [start_beat("one", clocked), start_beat("two", clocked)]
    numbers = ["+447400123456", "+447400123457", "+447400123458"]
    receipt = campaigns.submit(
        spec(scheduled_at=(MONDAY_0830 + timedelta(minutes=1)).isoformat(),
             send_window={**DAY_WINDOW, "timezone": "Europe/London"}), numbers)
    cid = receipt.campaign_id
    wait_for(lambda: all(b.sent("release-due-campaigns") >= 2 for b in beats), message="both beats")
    assert campaign_report(cid)["status"] == "scheduled"

    # Due, but London's window opens only at 09:00: released, and every recipient waits.
    shared_clock.freeze(MONDAY_0830 + timedelta(minutes=2))
    wait_for(lambda: all(m.not_before for m in message_rows(cid).values()), message="recipients held")
    shared_clock.freeze(datetime(2026, 11, 23, 9, 0, 30, tzinfo=UTC))
    wait_for(lambda: campaign_report(cid)["status"] == "completed", message="the campaign to complete")
    marks = [b.sent("release-deferred-recipients") for b in beats]
    wait_for(lambda: all(b.sent("release-deferred-recipients") > n for b, n in zip(beats, marks)),
             message="both beats to run the release once more")

    assert sends(emulator, cid) == {n: 1 for n in numbers}
    released = [r for r in results(worker, "herald.release_due_campaigns") if r != "None"]
    assert sum(map(int, released)) == 1
    deferred = [r for r in results(worker, "herald.release_deferred_recipients") if r != "None"]
    assert sum(map(int, deferred)) == 3
    assert len(results(worker, "herald.fan_out")) == 1
    with db.session() as s:
        assert s.scalar(select(func.sum(Message.attempts)).where(Message.campaign_id == uuid.UUID(cid))) == 3


def run_together(fn, n: int = 4) -> list:
    """Run ``fn`` in ``n`` threads released at the same instant; their results."""
    gate = threading.Barrier(n)
    out: list = [None] * n

    def run(i: int) -> None:
        gate.wait()
        out[i] = fn()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_concurrent_runs_of_each_job_do_the_work_once_without_the_lock(services, shared_clock):
    shared_clock.freeze(MONDAY_0830)
    ids = [campaigns.submit(spec(scheduled_at=(MONDAY_0830 + timedelta(seconds=i + 1)).isoformat()),
                            ["+254701234567"]).campaign_id for i in range(12)]
    shared_clock.freeze(MONDAY_0830 + timedelta(minutes=1))
    started: list[str] = []
    runs = run_together(lambda: release.release_due_campaigns(started.append))
    assert sorted(started) == sorted(ids) and sorted(c for r in runs for c in r) == sorted(ids)

    with db.session() as s:
        s.execute(Message.__table__.update().values(not_before=MONDAY_0830))
    published: list[int] = []
    runs = run_together(lambda: release.release_deferred(published.extend, batch=2))
    assert sum(runs) == 12 and len(published) == 12 == len(set(published))

    with db.session() as s:
        s.execute(Message.__table__.update().values(status="delivered"))
    assert sum(run_together(jobs.close_finished_campaigns)) == 12
    with db.session() as s:
        assert s.scalar(select(func.count()).where(Campaign.status == "completed")) == 12


def test_a_second_concurrent_run_of_a_periodic_task_skips(services):
    with single_flight("herald.release_due_campaigns", 30) as first:
        assert first
        assert jobs.release_due_campaigns.task.apply().get() is None
        with single_flight("herald.release_due_campaigns", 30) as second:
            assert not second
    assert jobs.release_due_campaigns.task.apply().get() == 0


# -- acceptance 4 -----------------------------------------------------------------------------

def readme_beat_schedule() -> dict:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- recurring-campaign -->\s*```python\n(.*?)```", text, re.S)
    assert block, "the README's recurring-campaign beat entry is missing"
    namespace: dict = {}
    exec(block.group(1), namespace)
    return namespace["beat_schedule"]


def test_the_readmes_recurring_beat_entry_submits_once_per_slot(
        services, shared_clock, start_worker, emulator):
    from celery import Celery
    from celery.beat import Scheduler
    from celery.schedules import crontab

    worker = start_worker("--pool", "threads", "--concurrency", "4", env=clocked)
    shared_clock.shift(0)
    # The user's own service: any Celery app on Herald's broker, with the entry exactly as written.
    user_app = Celery("user-service", broker=services["HERALD_BROKER_URL"])
    user_app.conf.beat_schedule = readme_beat_schedule()
    (name, entry), = user_app.conf.beat_schedule.items()
    assert entry["task"] == "campaigns.submit" and isinstance(entry["schedule"], crontab)

    def fire(times: int) -> None:
        for _ in range(times):  # each time as a separate beat would: its own Scheduler
            beat = Scheduler(user_app, lazy=False)
            beat.apply_async(beat.schedule[name])

    def submitted() -> list[Campaign]:
        with db.session() as s:
            return list(s.scalars(select(Campaign)))

    fire(2)
    wait_for(lambda: len(results(worker, "campaigns.submit")) == 2, message="both submissions to run")
    assert len(submitted()) == 1

    shared_clock.shift(entry["kwargs"]["slot_seconds"])
    fire(1)
    wait_for(lambda: len(results(worker, "campaigns.submit")) == 3, message="the next slot's submission")
    later = submitted()
    assert len(later) == 2 and len({c.idempotency_key for c in later}) == 2
    for c in later:
        wait_for(lambda: campaign_report(c.id)["status"] == "completed", message="each campaign to complete")
        assert set(sends(emulator, str(c.id)).values()) == {1}
