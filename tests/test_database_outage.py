"""The database going away never yields a 500: a private PostgreSQL, restarted under the real API."""

from __future__ import annotations

import subprocess
import uuid

import httpx

from tests.test_dispatch_faults import _process_on, private_postgres, private_redis


def test_the_first_request_after_a_postgres_restart_succeeds_and_a_down_database_is_a_503(services, api_server):
    from campaigns import apikeys

    with private_postgres() as (url, restart), private_redis() as (redis_url, _), _process_on(url, redis_url):
        key = apikeys.create_key("outage")[1]
        client = httpx.Client(base_url=api_server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        missing = f"/v1/campaigns/{uuid.uuid4()}"  # 404 once the key check has passed
        assert client.get(missing).status_code == 404  # the pool now holds live connections

        restart(down_s=0.5)  # every pooled connection is dead now
        assert client.get(missing).status_code == 404, "the key check did not retry on a fresh connection"

        port = url.rsplit(":", 1)[1].split("/")[0]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", f"herald-test-{port}", "stop",
                        "-m", "immediate"], check=True, capture_output=True)
        down = client.get(missing)
        assert (down.status_code, down.headers.get("Retry-After")) == (503, "1")
        assert down.json() == {"detail": "the database is unavailable; retry shortly"}
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", f"herald-test-{port}", "start"],
                       check=True, capture_output=True)
        assert client.get(missing).status_code == 404
        client.close()
