"""`herald bench --stages fairness`: small campaigns submitted while a large one drains.

A large campaign of N is submitted; 3 s after its receipt, three 10-recipient campaigns (one
normal, one with ``concurrency`` 1, one ``high``). Measured in the same run: each small one's
seconds from its receipt to ``completed`` (its delivery reports pushed back by the emulator);
the large one's dispatch rate against the bare-Celery baseline on the same workers, from the
moment the small ones have completed (its reports are held from then on, as in the dispatch
stage, so the rate is dispatch's alone; ``rate_with_reports`` is its rate before, reports
flowing); and the broker's ``used_memory`` growth at its peak while the large campaign drains
(sampled every 50 ms from before it was submitted): a bounded dispatch window keeps it flat in
N. Run it against a Redis of its own: ``used_memory`` counts every database.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone
from itertools import islice

from sqlalchemy import func, select

from campaigns import db, services
from campaigns.models import Campaign, Message
from campaigns.statuses import CampaignStatus
from worker import queues
from worker.bench import baseline
from worker.bench.recipients import _distinct_numbers, read_lines, recipients_file
from worker.bench.run import _Bench, _wait, _wait_progressing

STAGE = "fairness"
SMALL = 10
AFTER_S = 3.0
SMALL_CAMPAIGNS = {"normal": {}, "concurrency_1": {"concurrency": 1}, "high": {"priority": "high"}}


def run(opts) -> dict:
    """The fairness stage, a run of its own: it needs a quiet broker and campaigns of its own."""
    from campaigns.errors import ConfigurationError
    from campaigns.settings import get_settings

    if set(opts.stages) != {STAGE}:
        raise ConfigurationError("the fairness stage runs alone: --stages fairness")
    bench = FairnessBench(opts, get_settings())
    try:
        return bench.run()
    finally:
        bench.close()


class FairnessBench(_Bench):
    def run(self) -> dict:
        import campaigns
        import phonenumbers

        opts, say = self.opts, self.opts.say
        self._setup(needs_broker=True, dispatching=True, hold_reports=False)
        services.grant_high_priority(services.DEFAULT, True)  # the bench's fresh database: its campaigns' service
        path = recipients_file(opts.recipients)
        # The workers drain the control queue and the send queues, in their priority order.
        self._start_workers(*queues.ALL)
        self._wait_for_workers()
        self._baseline(opts.recipients)  # half a sample of at most run.BASELINE_TASKS; the rest after

        spec = {"from": baseline.SENDER, "message": baseline.BODY, "default_region": "GB",
                "provider": baseline.ACCOUNT}
        small_numbers = [phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
                         for n in islice(_distinct_numbers(), SMALL * len(SMALL_CAMPAIGNS))]
        memory = _PeakMemory(self._redis()).start()
        say(f"fairness: a campaign of {opts.recipients}, then {len(SMALL_CAMPAIGNS)} of {SMALL} "
            f"{AFTER_S:g} s after its receipt")
        large = campaigns.submit(spec, read_lines(path))
        large_receipt = time.time()
        time.sleep(max(0.0, large_receipt + AFTER_S - time.time()))
        small: dict[str, tuple[str, float]] = {}
        for i, (name, extra) in enumerate(SMALL_CAMPAIGNS.items()):
            receipt = campaigns.submit({**spec, **extra}, small_numbers[i * SMALL:(i + 1) * SMALL])
            small[name] = (receipt.campaign_id, time.time())
        _wait(lambda: all(_completed_at(cid) for cid, _ in small.values()), opts.timeout_s,
              "the small campaigns to complete")
        seconds = {name: round(_completed_at(cid) - at, 3) for name, (cid, at) in small.items()}
        # Where each small campaign's time went: to its first claim, its last send's acceptance, then its reports.
        timeline = {name: {key: round(t - at, 3) for key, t in _sends(cid).items()} for name, (cid, at) in small.items()}
        # From here on the large campaign's reports are held, as in the dispatch stage: its rate is
        # then dispatch's, like the baseline's (the reports stage measures what reports cost).
        cid = uuid.UUID(large.campaign_id)
        with_reports = _rate(cid, since=None, until=time.time())
        self.emulator.set_knobs(self.emulator.knobs.model_copy(update={"hold_reports": True}))
        held_at = time.time()
        say("fairness: the large campaign drains")
        _wait_progressing(lambda: _finished(cid), large.accepted, opts.timeout_s,
                          f"the large campaign's {large.accepted} sends (logs in {self.logdir})")
        peak_mb = memory.stop()
        rate = _rate(cid, since=held_at, until=None)
        self._baseline(opts.recipients)
        refills, turn_ms = _window_turns(cid)
        self.results["fairness"] = {
            **{f"{name}_s": value for name, value in seconds.items()},
            "timeline": timeline,
            "large_after_receipt_s": AFTER_S, "large_recipients": large.accepted,
            "rate": rate, "ratio_to_baseline": round(rate / self.results["baseline"]["rate"], 3),
            "rate_with_reports": with_reports,
            "ratio_with_reports": round(with_reports / self.results["baseline"]["rate"], 3),
            # How the window turned over: refills made, and the median send's time from its
            # publishing to its recorded acceptance (the rate a window allows is size / turn).
            "refills": refills, "window_turn_p50_ms": turn_ms,
            "broker_growth_mb": round(peak_mb, 3),
            "broker_bytes_per_recipient": round(peak_mb * 2**20 / large.accepted, 2),
            "peak_rss_mb": None, "peak_rss_of": "not measured",
        }
        return {"fairness": self.results["fairness"], "baseline": self.results["baseline"],
                "config": {**self._config(), "stages": [STAGE]}}

    def _redis(self):
        import redis

        return redis.Redis.from_url(self.base.broker_url)


class _PeakMemory:
    """Redis ``used_memory`` above what it was at start, at its highest (MB)."""

    def __init__(self, client, every_s: float = 0.05):
        self.client, self.every_s = client, every_s
        self.start_bytes = self.peak = client.info("memory")["used_memory"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> _PeakMemory:
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.client.info("memory")["used_memory"])

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return (self.peak - self.start_bytes) / 2**20


def _completed_at(campaign_id: str) -> float | None:
    with db.session() as s:
        status, at = s.execute(select(Campaign.status, Campaign.completed_at)
                               .where(Campaign.id == uuid.UUID(campaign_id))).one()
    return at.timestamp() if status == CampaignStatus.COMPLETED else None


def _sends(campaign_id: str) -> dict[str, float]:
    with db.session() as s:
        first, last = s.execute(select(func.min(Message.claimed_at), func.max(Message.sent_at))
                                .where(Message.campaign_id == uuid.UUID(campaign_id))).one()
    return {"first_claim_s": first.timestamp(), "last_sent_s": last.timestamp()}


def _finished(cid: uuid.UUID) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Message).where(
            Message.campaign_id == cid, Message.sent_at.is_not(None)))


def _window_turns(cid: uuid.UUID) -> tuple[int, float]:
    with db.session() as s:
        refills = s.scalar(select(Campaign.window_seq).where(Campaign.id == cid))
        turn = s.scalar(select(func.percentile_cont(0.5).within_group(
            func.extract("epoch", Message.sent_at - Message.due_at))).where(Message.campaign_id == cid))
    return refills, round(float(turn) * 1000, 1)


def _rate(cid: uuid.UUID, since: float | None, until: float | None) -> float:
    """The campaign's sends per second: recorded after ``since`` (None: from its first claim),
    up to ``until`` (None: its last)."""
    def at(t: float) -> datetime:
        return datetime.fromtimestamp(t, timezone.utc)

    sent = Message.sent_at
    where = [Message.campaign_id == cid, sent.is_not(None)]
    where += [sent >= at(since)] if since is not None else []
    where += [sent <= at(until)] if until is not None else []
    with db.session() as s:
        first, last, count = s.execute(select(func.min(Message.claimed_at), func.max(sent), func.count())
                                       .where(*where)).one()
    start = at(since) if since is not None else first
    end = at(until) if until is not None else last
    return round(count / (end - start).total_seconds(), 1) if count else 0.0
