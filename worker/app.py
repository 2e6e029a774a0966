"""The Celery app. ``celery -A worker worker|beat|flower`` finds it as ``worker.app``."""

from __future__ import annotations

from celery import Celery
import logging

from celery.signals import (
    after_setup_logger, after_setup_task_logger, beat_init, worker_init, worker_ready,
)
from kombu import Queue

from campaigns.settings import Settings, get_settings
from worker import broker as broker_module, queues

# Well above any countdown Herald uses (the longest retry waits far less): a Redis-broker task
# whose ETA passes the visibility timeout would be delivered again.
VISIBILITY_TIMEOUT_S = 3600
MAX_COUNTDOWN_S = 300

app = Celery("herald")


def celery_config(settings: Settings) -> dict:
    broker = settings.celery_broker
    redis_broker = broker.startswith(("redis://", "rediss://"))
    return {
        "broker_url": broker,
        # kombu's Redis transport, with the fix that keeps a worker alive when Redis restarts.
        **({"broker_transport": broker_module.TRANSPORT} if broker.startswith("redis://") else {}),
        "result_backend": broker if redis_broker else "cache+memory://",
        # "priority": every fetch takes from the first non-empty queue in task_queues' order
        # (worker/queues.py), not round robin: higher priority classes are consumed first.
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S, "polling_interval": 0.05,
                                     "queue_order_strategy": "priority"},
        "result_backend_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        # A task killed mid-run is delivered again; the message claim makes that harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Sends wait on the provider far longer than they compute: threads overlap those waits
        # (prefork would need a process per in-flight send). Why these numbers: README, "Speed".
        "worker_pool": "threads",
        "worker_concurrency": 24,
        # No more reserved than threads: a high-priority send waits for a free thread, never
        # behind sends a busy worker holds in reserve (README, "Speed").
        "worker_prefetch_multiplier": 1,
        # Off until asked: Flower turns them on (and they stay on after it stops, until
        # `celery -A worker control disable_events`). Each task would publish three events to Redis.
        "worker_send_task_events": False,
        # Off: a "sent" event is a second Redis round trip per published task and halves fan-out
        # (see `herald bench`); Flower still shows each task from the workers' events.
        "task_send_sent_event": False,
        "task_default_queue": queues.DEFAULT,
        "task_queues": tuple(Queue(name) for name in queues.ALL),
        "task_routes": {"herald.send_message": {"queue": queues.SEND}},
        "imports": ("worker.tasks", "scheduler.jobs", "scheduler.polling"),
        "beat_schedule": _beat_schedule(),
        "timezone": "UTC",
    }


def _beat_schedule() -> dict:
    from scheduler.schedule import BEAT_SCHEDULE

    return BEAT_SCHEDULE


def configure_app(settings: Settings) -> Celery:
    from campaigns import clock

    clock.install(settings.redis_url, settings.clock_key)
    moved = app.conf.broker_url != settings.celery_broker
    app.conf.update(celery_config(settings))
    if moved:
        # Celery holds on to its broker pools for the process's life: let go of them, as it does
        # after a fork, or this process goes on publishing to the broker it was moved away from.
        # (kombu keeps each pool, by broker URL, for a move back.)
        app._pool = None
        app.amqp._producer_pool = None
    return app


@after_setup_logger.connect
def _quiet_http_client(**_):
    # httpx logs each request URL at INFO; webhook URLs carry tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger, **_):
    from worker.logs import use_json_if_configured

    use_json_if_configured(logger)


@worker_ready.connect
def _warm_database(**_):
    # Import the driver and open the first connection before tasks arrive, not in the first send.
    from sqlalchemy import literal, select

    from campaigns import db

    db.first(select(literal(1)), {})


@worker_ready.connect
def _announce(**_):
    from worker.startup import announce

    announce("celery worker")  # here, not at worker_init: the worker's logging is set up by now


@worker_init.connect
def _worker_refuses_misconfigured(**_):
    # Connected before _serve_metrics: a refused worker opens no port.
    from worker.startup import refuse_misconfigured

    refuse_misconfigured("celery worker")


@beat_init.connect
def _beat_refuses_misconfigured(**_):
    from worker.startup import announce, refuse_misconfigured

    refuse_misconfigured("celery beat")
    announce("celery beat")


@worker_init.connect
def _serve_metrics(**_):
    # In the main process, before the pool forks: one exporter per worker host.
    from worker.metrics import serve_worker_metrics

    serve_worker_metrics()


def _settings_or_exit() -> Settings:
    # Every Herald process imports this module first: a bad HERALD_* variable stops it here with
    # what is wrong, not a traceback quoting the value (HERALD_PROVIDERS holds tokens).
    from worker.startup import SETTINGS_ERRORS, describe_settings_error

    try:
        return get_settings()
    except SETTINGS_ERRORS as exc:
        raise SystemExit(describe_settings_error(exc)) from None


configure_app(_settings_or_exit())
