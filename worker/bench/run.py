"""`herald bench`: each stage of the pipeline timed on the real stores, beside a bare-Celery baseline.

It runs against the PostgreSQL server and Redis the settings name, but in a database of its own
(``<name>_bench``, made fresh and dropped at the end), with worker processes and a webhook server
(``herald api``) it starts itself and the TikoSMS emulator at the latency asked for. Stages:

1. intake: ``campaigns.intake.submit`` in this process, from a file of recipients;
2. fan-out: ``worker.send.fanout.fan_out`` with the task module's publisher, in this process, while
   no worker consumes the send queue; then its baseline, kombu publishing as many id-only messages
   in the same batches with no database reads;
3. baseline: the bare task (``worker.bench.baseline``) on the same workers, then
   dispatch: the workers start consuming the send queue; timed from the emulator's log, from the
   first send request it received to the last acceptance;
4. reports: the emulator held every delivery report back; it first pushes them all to a bare
   receiver (``worker.bench.baseline.bare_receiver`` on the same server with the same workers),
   then the same reports to ``herald api``; each is timed from the release to the emulator's last
   answered push (Herald answers a report only once it is applied).

Every stage but intake reports ``rate``, ``baseline_rate`` and ``ratio_to_baseline``; intake is
compared with phonenumbers alone on the same lines (``ratio_to_phonenumbers``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import phonenumbers
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from campaigns import db, migrate
from campaigns.errors import ConfigurationError
from campaigns.models import Campaign, Message
from campaigns.settings import ProviderAccount, Settings, configure, get_settings
from campaigns.statuses import CampaignStatus, MessageStatus
from worker import queues
from worker.bench import baseline
from worker.bench.probes import PeakRss, percentile, process_tree, profiled
from worker.bench.recipients import read_lines, recipients_file

STAGES = ("intake", "fanout", "dispatch", "reports")
WARMUP_TASKS = 200
BASELINE_TASKS = 5000
_QUEUES = (*queues.ALL, baseline.QUEUE, baseline.FANOUT_QUEUE)
API_WORKERS = 2  # herald api's processes, and the bare receiver's: the same server either way


@dataclass
class Options:
    recipients: int = 20_000
    latency_ms: float = 50.0
    workers: int = 2
    stages: tuple[str, ...] = STAGES
    pool: str | None = None  # None: the pool operators get (worker/app.py)
    concurrency: int | None = None
    profile_dir: Path | None = None  # py-spy profiles of the workers and herald api, per stage
    timeout_s: float = 120.0  # how long a stage may make no progress before the run gives up
    say: Callable[[str], None] = field(default=lambda _msg: None)


def run(opts: Options) -> dict:
    """Run the stages asked for (and those they need) and return the figures."""
    unknown = set(opts.stages) - set(STAGES)
    if unknown or not opts.stages:
        raise ConfigurationError(f"unknown stage(s) {sorted(unknown)}; choose from {','.join(STAGES)} "
                                 "(or fairness, alone)")
    bench = _Bench(opts, get_settings())
    try:
        return bench.run()
    finally:
        bench.close()


def _refuse_unless_real(settings: Settings, needs_broker: bool) -> None:
    if make_url(settings.database_url).get_backend_name() != "postgresql":
        raise ConfigurationError(
            "herald bench measures the real stores: set HERALD_DATABASE_URL to a postgresql:// URL "
            "(the benchmark works in a database of its own, <name>_bench, on that server)")
    if needs_broker and not (settings.broker_url or "").startswith(("redis://", "rediss://")):
        raise ConfigurationError(
            "herald bench needs the real broker: set HERALD_BROKER_URL to a redis:// URL of a Redis "
            "database no live worker uses (add --stages intake to time intake alone)")


class _Bench:
    def __init__(self, opts: Options, base: Settings):
        self.opts, self.base = opts, base
        last = max((STAGES.index(s) for s in opts.stages if s in STAGES), default=0)  # fairness: none
        self.stages = STAGES[:last + 1]  # each stage needs the ones before it
        self.results: dict[str, dict] = {}
        self.emulator = None
        self.api: subprocess.Popen | None = None
        self.bare: subprocess.Popen | None = None  # the reports baseline's server
        self.bare_url = ""
        self.workers: list[subprocess.Popen] = []
        self.hostnames: list[str] = []
        self.db_url: str | None = None
        self.broker_claimed = False
        self.run_id = uuid.uuid4().hex[:8]
        self.logdir = Path(tempfile.mkdtemp(prefix=f"herald-bench-{self.run_id}-"))

    # -- orchestration ---------------------------------------------------------------------
    def run(self) -> dict:
        opts, say = self.opts, self.opts.say
        dispatching = "dispatch" in self.stages
        self._setup(needs_broker="fanout" in self.stages, dispatching=dispatching)

        say(f"writing {opts.recipients} recipients")
        path = recipients_file(opts.recipients)
        campaign_id, accepted = self._intake(path)
        if "fanout" in self.stages:
            self._fanout(campaign_id, accepted)
        if dispatching:
            self._start_workers()  # only now, so that starting them slows neither intake nor fan-out
            self._wait_for_workers()
            self._baseline(accepted)
            self._dispatch(campaign_id, accepted)
            self._baseline(accepted)
            _compare(self.results["dispatch"], self.results["baseline"]["rate"])
        if "reports" in self.stages:
            self._reports(campaign_id, accepted)
        return {**{k: self.results[k] for k in (*STAGES, "baseline") if k in self.results},
                "config": self._config()}

    def _setup(self, *, needs_broker: bool, dispatching: bool, hold_reports: bool = True) -> None:
        """A fresh database, and when dispatching the emulator and the webhook server."""
        opts, say = self.opts, self.opts.say
        _refuse_unless_real(self.base, needs_broker=needs_broker)
        if needs_broker:
            self._claim_broker()
        self.db_url = _fresh_database(self.base.database_url)
        secret = self.base.secret_key.get_secret_value() if self.base.secret_key else secrets.token_hex(32)
        provider_url, public_url = "http://127.0.0.1:9/tikosms", self.base.public_url
        if dispatching:
            from worker.emulator import Knobs
            from worker.emulator.process import EmulatorProcess, free_port

            say(f"starting the emulator (latency {opts.latency_ms:g} ms) and the webhook server")
            self.emulator = EmulatorProcess(Knobs(latency_ms=opts.latency_ms, report_delay_ms=0,
                                                  hold_reports=hold_reports, seed=9)).start()
            provider_url = f"{self.emulator.url}/tikosms"
            port = free_port()
            public_url = f"http://127.0.0.1:{port}"
        account = ProviderAccount(kind="tikosms", base_url=provider_url, token="test-token", timeout_s=30)
        settings = configure(self.base.model_copy(update={
            "database_url": self.db_url, "secret_key": SecretStr(secret), "public_url": public_url,
            "providers": {baseline.ACCOUNT: account}, "default_provider": baseline.ACCOUNT,
        }))
        from worker.app import configure_app

        configure_app(settings)
        migrate.upgrade()
        self.env = {
            **os.environ,
            "HERALD_DATABASE_URL": self.db_url, "HERALD_SECRET_KEY": secret,
            "HERALD_PUBLIC_URL": public_url, "HERALD_DEFAULT_PROVIDER": baseline.ACCOUNT,
            "HERALD_PROVIDERS": json.dumps({baseline.ACCOUNT: {
                **account.model_dump(mode="json"), "token": "test-token"}}),
        }
        if dispatching:
            self._start_api(port)
            self._start_bare_receiver(free_port())

    def _config(self) -> dict:
        from worker.app import app

        return {
            "recipients": self.opts.recipients, "latency_ms": self.opts.latency_ms,
            "workers": self.opts.workers, "pool": self.opts.pool or app.conf.worker_pool,
            "concurrency": self.opts.concurrency or app.conf.worker_concurrency,
            "prefetch_multiplier": app.conf.worker_prefetch_multiplier,
            "fanout_batch": get_settings().fanout_batch, "cpus": os.cpu_count(), "api_workers": API_WORKERS,
            "stages": list(self.stages),
        }

    # -- stages ----------------------------------------------------------------------------
    def _intake(self, path: Path) -> tuple[str, int]:
        from campaigns import intake
        from campaigns.schema import CampaignSpec

        self.opts.say("intake")
        spec = CampaignSpec.model_validate({"from": baseline.SENDER, "message": baseline.BODY,
                                            "default_region": "GB", "provider": baseline.ACCOUNT})
        servers = [p.pid for p in (self.api, self.bare, self.emulator and self.emulator.proc) if p is not None]

        def mine() -> set[int]:  # this process and the intake pool it starts, not the servers
            return set(process_tree(os.getpid())).difference(*(process_tree(pid) for pid in servers))

        rss = PeakRss(mine).reset()
        with profiled(self.opts.profile_dir, "intake", [os.getpid()]), rss.sampling():
            started = time.perf_counter()
            receipt = intake.submit(spec, read_lines(path))
            elapsed = time.perf_counter() - started
        peak = rss.mb()
        n = self.opts.recipients
        pn_rate = _phonenumbers_rate(path)
        rate = n / elapsed
        self.results["intake"] = {
            "rate": round(rate, 1), "peak_rss_mb": peak, "p50_ms": None, "p95_ms": None,
            "elapsed_s": round(elapsed, 3), "recipients": n, "accepted": receipt.accepted,
            "duplicates": receipt.duplicates, "invalid": receipt.invalid,
            "phonenumbers_rate": round(pn_rate, 1), "ratio_to_phonenumbers": round(rate / pn_rate, 3),
            "peak_rss_of": "this process and its intake pool, summed",
        }
        return receipt.campaign_id, receipt.accepted

    def _fanout(self, campaign_id: str, accepted: int) -> None:
        from worker import tasks
        from worker.send import fanout

        self.opts.say("fan-out (no worker consumes the send queue)")
        batches: list[float] = []

        def timed_publish(ids: list[int]) -> None:
            started = time.perf_counter()
            tasks.publish_sends(ids, campaign_id=campaign_id)
            batches.append(time.perf_counter() - started)

        rss = PeakRss().reset()
        with profiled(self.opts.profile_dir, "fanout", [os.getpid()]):
            started = time.perf_counter()
            published = fanout.fan_out(campaign_id, timed_publish, get_settings().fanout_batch)
            elapsed = time.perf_counter() - started
        if published != accepted:
            raise RuntimeError(f"fan-out published {published} tasks for {accepted} messages")
        self.results["fanout"] = {
            "rate": round(published / elapsed, 1), "peak_rss_mb": rss.mb(),
            **_ms(batches), "latency_of": "one batch published",
            "elapsed_s": round(elapsed, 3), "tasks": published, "peak_rss_of": "this process",
        }
        _compare(self.results["fanout"], _bare_publish_rate(published, get_settings().fanout_batch))

    def _baseline(self, accepted: int) -> None:
        """Half the bare-Celery sample. A run takes one half before the stage it is compared with
        and the other after it, so the machine's drift over the stage (rates here move by a third
        within the hour) weighs on both sides alike; the baseline's rate is both halves' tasks
        over both halves' time."""
        from worker.app import app

        # A rate, steady after the warm-up: a sample of BASELINE_TASKS measures it as well as N
        # tasks would, and keeps a run at N = 20,000 within minutes.
        n = max(min(accepted, BASELINE_TASKS) // 2, 1)
        before = self.results.get("baseline")
        self.opts.say(f"baseline: {n} bare tasks making the same provider call "
                      f"({'after' if before else 'before'} the stage)")

        def publish(first: int, count: int) -> None:
            with app.producer_or_acquire() as producer:
                for i in range(first, first + count):
                    baseline.bare_send.apply_async((i,), producer=producer, queue=baseline.QUEUE)

        # The bare sends' reports are held, then dropped: only Herald's are ever pushed (the
        # fairness stage runs with reports flowing, so it holds them for the baseline alone).
        knobs = self.emulator.knobs
        held = _settled(lambda: self.emulator.stats()["held"])  # Herald's own, kept for the reports stage
        self.emulator.set_knobs(knobs.model_copy(update={"hold_reports": True}))
        sent = 0
        if before is None:
            publish(0, WARMUP_TASKS)  # connections and imports warm before anything is timed
            self._drain(baseline.QUEUE, WARMUP_TASKS)
            sent = WARMUP_TASKS
        publish(WARMUP_TASKS + (before or {}).get("tasks", 0), n)
        rate, elapsed, peak = self._drain(baseline.QUEUE, n)
        # Each report is held a moment after its send.
        _wait(lambda: self.emulator.stats()["held"] >= held + sent + n, 30, "the bare sends' reports")
        self.emulator.drop_held(keep=held)
        self.emulator.set_knobs(knobs)
        if before is not None:
            tasks, seconds = before["tasks"] + n, before["elapsed_s"] + elapsed
            self.results["baseline"] = {
                **before, "rate": round(tasks / seconds, 1), "rate_before": before["rate"], "rate_after": rate,
                "peak_rss_mb": max(before["peak_rss_mb"], peak), "tasks": tasks, "elapsed_s": round(seconds, 3)}
            return
        self.results["baseline"] = {"rate": rate, "peak_rss_mb": peak, "p50_ms": None, "p95_ms": None,
                                    "tasks": n, "elapsed_s": elapsed, "peak_rss_of": "worker processes, summed"}

    def _dispatch(self, campaign_id: str, accepted: int) -> None:
        self.opts.say(f"dispatch: {accepted} messages")
        rate, elapsed, peak = self._drain(queues.SEND, accepted)
        cid = uuid.UUID(campaign_id)
        _wait(lambda: _count(cid, [MessageStatus.SENT]) == accepted, self.opts.timeout_s,
              "every message to be recorded as sent")
        with db.session() as s:
            # Claim to recorded acceptance: the provider's latency plus Herald's own work around it.
            seconds = list(s.scalars(select(func.extract("epoch", Message.sent_at - Message.claimed_at))
                                     .where(Message.campaign_id == cid)))
        self.results["dispatch"] = {
            "rate": rate, "peak_rss_mb": peak, **_ms([float(x) for x in seconds]),
            "latency_of": "claim to recorded acceptance", "elapsed_s": elapsed, "messages": accepted,
            "peak_rss_of": "worker processes, summed",
        }

    def _reports(self, campaign_id: str, accepted: int) -> None:
        self.opts.say(f"reports: {accepted} delivery reports pushed to a bare receiver, then to herald api")
        bare_rate, _ = self._push_reports(self.bare_url, accepted, keep=True)
        cid = uuid.UUID(campaign_id)
        rss = PeakRss(lambda: process_tree(self.api.pid)).reset()
        pushed_before = self.emulator.stats()["reports_pushed"]

        def completed() -> bool:
            with db.session() as s:
                return s.scalar(select(Campaign.status).where(Campaign.id == cid)) == CampaignStatus.COMPLETED

        finals = [MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.EXPIRED]
        with profiled(self.opts.profile_dir, "reports", process_tree(self.api.pid)):
            rate, elapsed = self._push_reports(None, accepted, keep=False)
            _wait(completed, self.opts.timeout_s, "the campaign to complete")
        peak = rss.mb()
        final = _count(cid, finals)
        if final != accepted:
            raise RuntimeError(f"{final} of {accepted} messages reached a final status")
        pushes = self.emulator.records()["push_seconds"][pushed_before:]
        self.results["reports"] = {
            "rate": rate, "peak_rss_mb": peak, **_ms(pushes),
            "latency_of": "webhook round trip seen by the provider", "elapsed_s": elapsed,
            "reports": final, "peak_rss_of": "the webhook server (herald api)",
        }
        _compare(self.results["reports"], bare_rate)

    def _push_reports(self, to: str | None, n: int, keep: bool) -> tuple[float, float]:
        """Have the emulator push its ``n`` held reports (to ``to`` instead, if given) and time them
        from the release to the last answered push: (rate, elapsed)."""
        goal = self.emulator.stats()["reports_pushed"] + n
        started = time.time()
        self.emulator.http.post("/_emulator/release", params={"keep": keep, **({"to": to} if to else {})}
                                ).raise_for_status()
        where = f"the bare receiver (log in {self.logdir})" if to else f"herald api (log in {self.logdir})"
        _wait_progressing(lambda: self.emulator.stats()["reports_pushed"], goal, self.opts.timeout_s,
                          f"{n} delivery reports pushed to {where}")
        stats = self.emulator.stats()
        if stats["reports_failed"]:
            raise RuntimeError(f"{stats['reports_failed']} report pushes failed ({where})")
        elapsed = stats["last_pushed_at"] - started
        return round(n / elapsed, 1), round(elapsed, 3)

    # -- processes -------------------------------------------------------------------------
    def _start_api(self, port: int) -> None:
        log = (self.logdir / "api.log").open("w")
        self.api = subprocess.Popen([sys.executable, "-m", "worker.cli", "api", "--port", str(port),
                                     "--workers", str(API_WORKERS)],
                                    env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}/healthz"
        _wait(lambda: _up(url) or self.api.poll() is not None, 60, "the webhook server to start")
        if self.api.poll() is not None:
            raise RuntimeError(f"herald api did not start; see {self.logdir / 'api.log'}")

    def _start_bare_receiver(self, port: int) -> None:
        log = (self.logdir / "bare-receiver.log").open("w")
        self.bare = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "worker.bench.baseline:bare_receiver", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(API_WORKERS), "--log-level", "warning", "--no-access-log"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.bare_url = f"http://127.0.0.1:{port}"
        _wait(lambda: _up(f"{self.bare_url}/healthz") or self.bare.poll() is not None, 60,
              "the bare receiver to start")
        if self.bare.poll() is not None:
            raise RuntimeError(f"the bare receiver did not start; see {self.logdir / 'bare-receiver.log'}")

    def _start_workers(self, *queues: str) -> None:
        extra = []
        if self.opts.pool:
            extra += ["--pool", self.opts.pool]
        if self.opts.concurrency:
            extra += ["--concurrency", str(self.opts.concurrency)]
        self.opts.say(f"starting {self.opts.workers} worker process(es)")
        for i in range(self.opts.workers):
            hostname = f"bench{i}-{self.run_id}@herald"
            log = (self.logdir / f"worker{i}.log").open("w")
            # The idle queue only: the send and baseline queues are added when their stage starts.
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel", "INFO",
                 "-Q", ",".join((f"bench.idle.{self.run_id}", *queues)), "--include", "worker.bench.baseline",
                 "--hostname", hostname, "--without-mingle", "--without-gossip", *extra],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            self.hostnames.append(hostname)

    def _wait_for_workers(self) -> None:
        from worker.app import app

        def ready() -> bool:
            for i, proc in enumerate(self.workers):
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited; see {self.logdir / f'worker{i}.log'}")
            return len(app.control.ping(destination=self.hostnames, timeout=0.5)) == len(self.workers)

        _wait(ready, 120, "the workers to start")

    def _drain(self, queue: str, n: int) -> tuple[float, float, float]:
        """Let the workers consume ``queue`` until the emulator accepted ``n`` more sends.

        Returns (rate, elapsed, peak RSS), timed by the emulator's own log: from the first request
        it received to the last acceptance.
        """
        from worker.app import app

        before = self.emulator.stats()
        pids = [pid for w in self.workers for pid in process_tree(w.pid)]
        rss = PeakRss(lambda: pids).reset()
        with profiled(self.opts.profile_dir, queue, pids):
            app.control.add_consumer(queue, destination=self.hostnames, reply=True, timeout=10)
            goal = before["accepted"] + n
            _wait_progressing(lambda: self.emulator.stats()["accepted"], goal, self.opts.timeout_s,
                              f"{n} sends from queue {queue} (worker logs in {self.logdir})")
        peak = rss.mb()
        app.control.cancel_consumer(queue, destination=self.hostnames, reply=True, timeout=10)
        snap = self.emulator.records()
        first = snap["requests"][before["requests"]][0]
        last = max(r["accepted_at"] for r in snap["records"][before["accepted"]:])
        elapsed = last - first
        return round(n / elapsed, 1), round(elapsed, 3), peak

    # -- the broker ------------------------------------------------------------------------
    def _claim_broker(self) -> None:
        """Refuse a broker in use: live workers would take the benchmark's tasks, and its tasks theirs."""
        from worker.app import app

        busy = {q: n for q, n in _queue_sizes(app, _QUEUES).items() if n}
        if busy:
            raise ConfigurationError(
                f"the broker's queues are not empty ({busy}): point HERALD_BROKER_URL at a Redis "
                "database of the benchmark's own")
        if app.control.ping(timeout=1.0):
            raise ConfigurationError(
                "workers are consuming from HERALD_BROKER_URL: point it at a Redis database of the "
                "benchmark's own")
        self.broker_claimed = True

    def close(self) -> None:
        procs = [*self.workers, self.api, self.bare]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        if self.emulator is not None:
            self.emulator.stop()
        if self.broker_claimed:
            from worker.app import app

            # Whatever is left in the queues is the benchmark's own (they were empty before).
            with app.connection_for_write() as conn:
                for queue in _QUEUES:
                    conn.default_channel.queue_purge(queue)
        if self.db_url is not None:
            db.reset()
            _drop_database(self.db_url)


# -- helpers -------------------------------------------------------------------------------
def _phonenumbers_rate(path: Path) -> float:
    """phonenumbers' own parse and validate, over the same recipients: intake's upper bound."""
    n = 0
    started = time.perf_counter()
    for raw in read_lines(path):
        n += 1
        try:
            phonenumbers.is_valid_number(phonenumbers.parse(raw, "GB"))
        except phonenumbers.NumberParseException:
            pass
    return n / (time.perf_counter() - started)


def _bare_publish_rate(n: int, batch: int) -> float:
    """Fan-out's upper bound: kombu publishing ``n`` id-only messages in batches of ``batch``."""
    started = time.perf_counter()
    for first in range(0, n, batch):
        baseline.bare_publish(list(range(first, min(first + batch, n))))
    return n / (time.perf_counter() - started)


def _compare(result: dict, baseline_rate: float) -> None:
    result["baseline_rate"] = round(baseline_rate, 1)
    result["ratio_to_baseline"] = round(result["rate"] / baseline_rate, 3)


def _ms(seconds: list[float]) -> dict:
    p50, p95 = percentile(seconds, 50), percentile(seconds, 95)
    return {"p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "p95_ms": None if p95 is None else round(p95 * 1000, 2)}


def _count(cid: uuid.UUID, statuses: list[MessageStatus]) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Message).where(
            Message.campaign_id == cid, Message.status.in_([st.value for st in statuses])))


def _queue_sizes(app, names) -> dict[str, int]:
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        return {q: client.llen(q) for q in names}


def _wait(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _settled(count: Callable[[], int], quiet_s: float = 1.0) -> int:
    """``count()`` once it has not moved for ``quiet_s``."""
    last, moved = count(), time.monotonic()
    while time.monotonic() - moved < quiet_s:
        time.sleep(0.1)
        if (now := count()) != last:
            last, moved = now, time.monotonic()
    return last


def _wait_progressing(count: Callable[[], int], goal: int, stall_s: float, what: str) -> None:
    """Wait until ``count()`` reaches ``goal``; give up only when it stops moving for ``stall_s``."""
    last, moved = count(), time.monotonic()
    while last < goal:
        time.sleep(0.1)
        now = count()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            raise RuntimeError(f"stalled at {last} of {goal} for {stall_s:g} s waiting for {what}")


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _admin(url: str):
    import psycopg

    u = make_url(url)
    admin = u.set(drivername="postgresql", database="postgres")
    return psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True), u.database


def _fresh_database(url: str) -> str:
    conn, name = _admin(url)
    bench = f"{name or 'herald'}_bench"
    with conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{bench}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{bench}"')
    return make_url(url).set(database=bench).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    conn, name = _admin(url)
    with conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


__all__ = ["Options", "STAGES", "run"]
