"""Prometheus metrics.

Two kinds, each measured where it is exact:

- **State** — messages by provider and status, campaigns by status, the progress of active
  campaigns, queue depth — is counted from PostgreSQL and the broker at scrape time
  (``StateCollector``). Every process sees the same numbers, whichever pool, host or restart
  produced them, and they always match the campaign reports, which count the same rows.
- **Events** — provider request latency and outcome, throttle waits — happen inside worker
  processes and are recorded with prometheus_client. Under the prefork pool set
  ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory for each worker host: every child writes
  its samples there and ``registry()`` adds them up. The worker's main process serves them on
  ``HERALD_WORKER_METRICS_PORT``; the API's ``/metrics`` adds them too when it shares the directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from campaigns.settings import get_settings
from worker import queues

log = logging.getLogger(__name__)

PROVIDER_REQUEST_SECONDS = Histogram(
    "herald_provider_request_seconds", "Time for one send request to a provider, by outcome",
    ["provider", "outcome"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
THROTTLE_WAITS = Counter("herald_throttle_waits", "Sends held back by a rate or concurrency limit",
                         ["provider"])
THROTTLE_WAIT_SECONDS = Counter("herald_throttle_wait_seconds", "Seconds sends were held back by limits",
                                ["provider"])

WEBHOOK_UNAUTHORIZED = Counter(
    "herald_webhook_unauthorized", "Webhook requests refused with 401 (missing or wrong URL token), by account",
    ["account"])


@contextmanager
def provider_request(provider: str) -> Iterator[None]:
    """Time one provider call; the outcome is ``accepted`` or the ProviderError raised, in lower case."""
    started = time.perf_counter()
    outcome = "accepted"
    try:
        yield
    except Exception as exc:
        outcome = type(exc).__name__.lower()
        raise
    finally:
        PROVIDER_REQUEST_SECONDS.labels(provider, outcome).observe(time.perf_counter() - started)


def throttle_waited(provider: str, seconds: float) -> None:
    """Call when a limit holds a send back for ``seconds`` (the throttle calls this)."""
    THROTTLE_WAITS.labels(provider).inc()
    THROTTLE_WAIT_SECONDS.labels(provider).inc(max(seconds, 0.0))


def webhook_unauthorized(account: str, webhook: str) -> None:
    """Count and log a webhook refused for its token: reports a provider pushes in vain (a key that
    differs between processes, a stale registered URL) are otherwise silent."""
    # The account comes from the URL: anything not configured is one label, not a label per guess.
    known = account if account in get_settings().providers else "unknown"
    WEBHOOK_UNAUTHORIZED.labels(known).inc()
    log.warning("webhook refused: missing or wrong token", extra={"account": known, "webhook": webhook})


class StateCollector:
    """Counts from the database and the broker (``app``'s), taken at each scrape. Every count that
    belongs to one service carries its ``service`` label; with ``service_id``, only that service's
    series (the broker's queues belong to no service and are left out)."""

    def __init__(self, app, service_id: int | None = None) -> None:
        self.app, self.service_id = app, service_id

    def collect(self):
        from sqlalchemy import select

        from campaigns import db
        from campaigns.aggregate import movement
        from campaigns.models import Service
        from campaigns.statuses import FINAL

        by_provider, by_status, active_messages = _queries(self.service_id)
        families = []
        try:
            with db.session() as s:
                names = dict(s.execute(select(Service.id, Service.name)).all())
                messages = GaugeMetricFamily("herald_messages", "Messages by provider account and status",
                                             labels=["provider", "status", "service"])
                for provider, status, sid, n in s.execute(by_provider):
                    messages.add_metric([provider or "", status, names.get(sid, "")], n)
                campaigns = GaugeMetricFamily("herald_campaigns", "Campaigns by status",
                                              labels=["status", "service"])
                for status, sid, n in s.execute(by_status):
                    campaigns.add_metric([status, names.get(sid, "")], n)
                active = GaugeMetricFamily("herald_campaign_messages",
                                           "Messages of running and paused campaigns by status",
                                           labels=["campaign_id", "status", "service"])
                progress = GaugeMetricFamily("herald_campaign_progress",
                                             "Share of a running or paused campaign's messages in a final status",
                                             labels=["campaign_id", "service"])
                totals: dict[str, list[int]] = {}
                owner: dict[str, str] = {}
                for campaign_id, sid, status, n in s.execute(active_messages):
                    cid = str(campaign_id)
                    owner[cid] = names.get(sid, "")
                    active.add_metric([cid, status, owner[cid]], n)
                    done_total = totals.setdefault(cid, [0, 0])
                    done_total[0] += n if status in FINAL else 0
                    done_total[1] += n
                for campaign_id, (done, total) in totals.items():
                    progress.add_metric([campaign_id, owner[campaign_id]], done / total)
                stalled = GaugeMetricFamily("herald_campaign_stalled",
                                            "1 when a running campaign's messages have not moved for HERALD_STALLED_AFTER_S",
                                            labels=["campaign_id", "service"])
                for campaign_id, moved in movement(s).items():
                    # A campaign started since the query above is counted at the next scrape.
                    if str(campaign_id) in owner:
                        stalled.add_metric([str(campaign_id), owner[str(campaign_id)]], int(moved.stalled))
                families += [messages, campaigns, active, progress, stalled, *_windows(s, names, self.service_id)]
        except Exception:
            log.warning("metrics: the database could not be read", exc_info=True)
            families.append(_scrape_error("database"))
        if self.service_id is None:
            try:
                families.append(_queue_depth(self.app))
                families.append(_queue_consumers(self.app))
            except Exception:
                log.warning("metrics: the broker could not be read", exc_info=True)
                families.append(_scrape_error("broker"))
        yield from families


def _windows(s, names: dict[int, str], service_id: int | None) -> list[GaugeMetricFamily]:
    """Each running or paused campaign's dispatch window (campaigns/pacing.py)."""
    from sqlalchemy import select

    from campaigns import pacing
    from campaigns.models import Campaign
    from campaigns.statuses import CampaignStatus

    size = GaugeMetricFamily("herald_campaign_window", "Sends a campaign may have out at once",
                             labels=["campaign_id", "priority", "service"])
    out = GaugeMetricFamily("herald_campaign_in_flight", "Sends of a campaign published and not yet finished",
                            labels=["campaign_id", "service"])
    waiting = GaugeMetricFamily("herald_campaign_waiting", "1 while a campaign's window waits, by reason",
                                labels=["campaign_id", "reason", "service"])
    query = select(Campaign).where(Campaign.status.in_([CampaignStatus.RUNNING, CampaignStatus.PAUSED]))
    if service_id is not None:
        query = query.where(Campaign.service_id == service_id)
    for campaign in s.scalars(query):
        window, cid, service = pacing.window_report(s, campaign), str(campaign.id), names.get(campaign.service_id, "")
        size.add_metric([cid, campaign.priority, service], window["size"] or 0)
        out.add_metric([cid, service], window["in_flight"])
        if window["waiting"]:
            waiting.add_metric([cid, window["waiting"], service], 1)
    return [size, out, waiting]


def _scrape_error(source: str) -> GaugeMetricFamily:
    g = GaugeMetricFamily("herald_scrape_error", "1 when a source could not be read at this scrape",
                          labels=["source"])
    g.add_metric([source], 1)
    return g


def _queue_depth(app) -> GaugeMetricFamily:
    g = GaugeMetricFamily("herald_queue_depth", "Tasks waiting in each broker queue", labels=["queue"])
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        for queue in queues.ALL:
            g.add_metric([queue], queues.depth(conn, queue))
    return g


def _queue_consumers(app) -> GaugeMetricFamily:
    g = GaugeMetricFamily("herald_queue_consumers", "Live workers consuming each broker queue (0: nothing sends)",
                          labels=["queue"])
    for queue, n in queues.consumers(app).items():
        g.add_metric([queue], n)
    return g


def _queries(service_id: int | None):
    """Messages by provider, status and service; campaigns by status and service; the active
    campaigns' messages by status (with their service): all, or one service's."""
    from sqlalchemy import func, select

    from campaigns.models import Campaign, Message
    from campaigns.statuses import CampaignStatus

    # A message has its own provider once sent; until then, its campaign's.
    provider = func.coalesce(Message.provider, Campaign.provider)
    by_provider = (select(provider, Message.status, Campaign.service_id, func.count())
                   .join(Campaign, Campaign.id == Message.campaign_id)
                   .group_by(provider, Message.status, Campaign.service_id))
    by_status = select(Campaign.status, Campaign.service_id, func.count()).group_by(Campaign.status,
                                                                                   Campaign.service_id)
    active = (select(Message.campaign_id, Campaign.service_id, Message.status, func.count())
              .join(Campaign, Campaign.id == Message.campaign_id)
              .where(Campaign.status.in_([CampaignStatus.RUNNING, CampaignStatus.PAUSED]))
              .group_by(Message.campaign_id, Campaign.service_id, Message.status))
    if service_id is not None:
        by_provider, by_status, active = (q.where(Campaign.service_id == service_id)
                                          for q in (by_provider, by_status, active))
    return by_provider, by_status, active


def registry(*, state_of=None, service_id: int | None = None) -> CollectorRegistry:
    """What to expose: this host's worker events, and (the API) the state counts of the Celery
    app ``state_of``. With ``service_id``, only that service's state counts (worker events and
    queues belong to no service)."""
    reg = CollectorRegistry()
    if service_id is None:
        directory = get_settings().prometheus_multiproc_dir
        if directory:
            MultiProcessCollector(reg, path=directory)
        else:
            reg.register(_Default())
    if state_of is not None:
        reg.register(StateCollector(state_of, service_id))
    return reg


class _Default:
    """This process's own metrics (embedded mode, or a worker without a multiprocess directory)."""

    def collect(self):
        yield from REGISTRY.collect()


def serve_worker_metrics() -> None:
    """Serve this host's worker metrics on HERALD_WORKER_METRICS_PORT, from the worker's main process."""
    from prometheus_client import start_http_server

    port = get_settings().worker_metrics_port
    if port:
        start_http_server(port, registry=registry())
        log.info("worker metrics served", extra={"port": port})
