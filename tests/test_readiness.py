"""/readyz tells the truth about workers: real API, real broker, real `celery worker` processes."""

from __future__ import annotations

import time

import httpx

from tests.conftest import FLEET, wait_for
from worker import queues


def _ready(api_server) -> tuple[int, dict]:
    r = httpx.get(f"{api_server.url}/readyz", timeout=10)
    return r.status_code, r.json()


@FLEET
def test_readyz_fails_within_30_s_of_the_last_workers_death_and_recovers(services, api_server, start_worker):
    worker = start_worker("--pool", "threads", "--concurrency", "2", "-Q", ",".join(queues.ALL))
    wait_for(lambda: _ready(api_server)[0] == 200, timeout=30, interval=0.5, message="ready with a worker")
    metrics = httpx.get(f"{api_server.url}/metrics", timeout=10).text
    assert 'herald_queue_consumers{queue="send"} 1.0' in metrics

    worker.kill()  # SIGKILL: no goodbye to the broker
    died = time.monotonic()
    wait_for(lambda: _ready(api_server)[0] == 503, timeout=30, interval=0.5, message="503 after the death")
    status, body = _ready(api_server)
    assert (status, body["workers"], body["database"], body["broker"]) == (503, "unavailable (NoConsumer)", "ok", "ok")
    assert time.monotonic() - died <= 30
    assert 'herald_queue_consumers{queue="send"} 0.0' in httpx.get(f"{api_server.url}/metrics", timeout=10).text

    start_worker("--pool", "threads", "--concurrency", "2")
    wait_for(lambda: _ready(api_server)[0] == 200, timeout=30, interval=0.5, message="ready again")


def test_a_worker_that_consumes_only_fan_out_does_not_make_the_service_ready(services, api_server, start_worker):
    start_worker("--pool", "threads", "--concurrency", "2", "-Q", queues.DEFAULT)
    time.sleep(queues.CONSUMERS_CACHE_S + 1)
    status, body = _ready(api_server)
    assert (status, body["workers"]) == (503, "unavailable (NoConsumer)")
