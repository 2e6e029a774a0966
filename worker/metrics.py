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
    """Counts from the database and the broker (``app``'s), taken at each scrape."""

    def __init__(self, app) -> None:
        self.app = app

    def collect(self):
        from campaigns import db
        from campaigns.aggregate import movement
        from campaigns.statuses import FINAL

        families = []
        try:
            with db.session() as s:
                messages = GaugeMetricFamily("herald_messages", "Messages by provider account and status",
                                             labels=["provider", "status"])
                for provider, status, n in s.execute(_MESSAGES_BY_PROVIDER):
                    messages.add_metric([provider or "", status], n)
                campaigns = GaugeMetricFamily("herald_campaigns", "Campaigns by status", labels=["status"])
                for status, n in s.execute(_CAMPAIGNS_BY_STATUS):
                    campaigns.add_metric([status], n)
                active = GaugeMetricFamily("herald_campaign_messages",
                                           "Messages of running and paused campaigns by status",
                                           labels=["campaign_id", "status"])
                progress = GaugeMetricFamily("herald_campaign_progress",
                                             "Share of a running or paused campaign's messages in a final status",
                                             labels=["campaign_id"])
                totals: dict[str, list[int]] = {}
                for campaign_id, status, n in s.execute(_ACTIVE_CAMPAIGN_MESSAGES):
                    active.add_metric([str(campaign_id), status], n)
                    done_total = totals.setdefault(str(campaign_id), [0, 0])
                    done_total[0] += n if status in FINAL else 0
                    done_total[1] += n
                for campaign_id, (done, total) in totals.items():
                    progress.add_metric([campaign_id], done / total)
                stalled = GaugeMetricFamily("herald_campaign_stalled",
                                            "1 when a running campaign's messages have not moved for HERALD_STALLED_AFTER_S",
                                            labels=["campaign_id"])
                for campaign_id, moved in movement(s).items():
                    stalled.add_metric([str(campaign_id)], int(moved.stalled))
                families += [messages, campaigns, active, progress, stalled, *_windows(s)]
        except Exception:
            log.warning("metrics: the database could not be read", exc_info=True)
            families.append(_scrape_error("database"))
        try:
            families.append(_queue_depth(self.app))
            families.append(_queue_consumers(self.app))
        except Exception:
            log.warning("metrics: the broker could not be read", exc_info=True)
            families.append(_scrape_error("broker"))
        yield from families


def _windows(s) -> list[GaugeMetricFamily]:
    """Each running or paused campaign's dispatch window (campaigns/pacing.py)."""
    from sqlalchemy import select

    from campaigns import pacing
    from campaigns.models import Campaign
    from campaigns.statuses import CampaignStatus

    size = GaugeMetricFamily("herald_campaign_window", "Sends a campaign may have out at once",
                             labels=["campaign_id", "priority"])
    out = GaugeMetricFamily("herald_campaign_in_flight", "Sends of a campaign published and not yet finished",
                            labels=["campaign_id"])
    waiting = GaugeMetricFamily("herald_campaign_waiting", "1 while a campaign's window waits, by reason",
                                labels=["campaign_id", "reason"])
    for campaign in s.scalars(select(Campaign).where(
            Campaign.status.in_([CampaignStatus.RUNNING, CampaignStatus.PAUSED]))):
        window, cid = pacing.window_report(s, campaign), str(campaign.id)
        size.add_metric([cid, campaign.priority], window["size"] or 0)
        out.add_metric([cid], window["in_flight"])
        if window["waiting"]:
            waiting.add_metric([cid, window["waiting"]], 1)
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


def _queries():
    from sqlalchemy import func, select

    from campaigns.models import Campaign, Message
    from campaigns.statuses import CampaignStatus

    # A message has its own provider once sent; until then, its campaign's.
    provider = func.coalesce(Message.provider, Campaign.provider)
    by_provider = (select(provider, Message.status, func.count())
                   .join(Campaign, Campaign.id == Message.campaign_id).group_by(provider, Message.status))
    by_status = select(Campaign.status, func.count()).group_by(Campaign.status)
    active_ids = select(Campaign.id).where(Campaign.status.in_([CampaignStatus.RUNNING, CampaignStatus.PAUSED]))
    active = (select(Message.campaign_id, Message.status, func.count())
              .where(Message.campaign_id.in_(active_ids)).group_by(Message.campaign_id, Message.status))
    return by_provider, by_status, active


_MESSAGES_BY_PROVIDER, _CAMPAIGNS_BY_STATUS, _ACTIVE_CAMPAIGN_MESSAGES = _queries()


def registry(*, state_of=None) -> CollectorRegistry:
    """What to expose: this host's worker events, and (the API) the state counts of the Celery
    app ``state_of``."""
    directory = get_settings().prometheus_multiproc_dir
    reg = CollectorRegistry()
    if directory:
        MultiProcessCollector(reg, path=directory)
    else:
        reg.register(_Default())
    if state_of is not None:
        reg.register(StateCollector(state_of))
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
