"""A misconfiguration cannot stay silent: processes on a real broker refuse to start without the
shared secret, every process shows the key's fingerprint, and refused webhooks are counted."""

import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import ROOT, SECRET
from worker.emulator.process import free_port

MISSING = "HERALD_SECRET_KEY is unset"


def test_concurrent_first_callers_get_one_secret(monkeypatch):
    """Without HERALD_SECRET_KEY, threads asking at once for the per-process key all get one value
    (the key a callback URL was signed with must be the key that checks it)."""
    import campaigns.settings as settings_module
    from campaigns.settings import Settings

    real = settings_module.secrets.token_bytes

    def slow_token_bytes(n):
        time.sleep(0.05)  # widen the window in which a second first caller could build its own
        return real(n)

    monkeypatch.setattr(settings_module.secrets, "token_bytes", slow_token_bytes)
    settings_module._process_secret.forget()
    settings = Settings(secret_key=None, _env_file=None)
    barrier = threading.Barrier(32)
    got = []

    def ask():
        barrier.wait()
        got.append(settings.secret)

    threads = [threading.Thread(target=ask) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    settings_module._process_secret.forget()
    assert len(got) == 32 and len(set(got)) == 1


def _without_secret(services: dict) -> dict:
    env = {**os.environ, **services}
    env.pop("HERALD_SECRET_KEY")
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env.get('PATH', '')}"
    return env


@pytest.mark.parametrize("command", [
    ["herald", "api", "--port", "{port}"],
    [sys.executable, "-m", "celery", "-A", "worker", "worker", "--without-mingle", "--without-gossip"],
    [sys.executable, "-m", "celery", "-A", "worker", "beat", "--schedule", "{tmp}/beat-schedule"],
], ids=["api", "worker", "beat"])
def test_refuses_to_start_on_a_real_broker_without_the_secret(services, tmp_path, command):
    command = [c.format(port=free_port(), tmp=tmp_path) for c in command]
    try:
        out = subprocess.run(command, cwd=tmp_path, env=_without_secret(services), capture_output=True,
                             text=True, timeout=90)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{command[-1]} started without HERALD_SECRET_KEY: {exc.stdout!r} {exc.stderr!r}")
    output = out.stdout + out.stderr
    assert out.returncode != 0, output[-2000:]
    assert "refuses to start" in output and MISSING in output, output[-2000:]
    assert "export HERALD_SECRET_KEY=" in output  # says how to fix it


def test_doctor_reports_the_missing_secret(services, tmp_path):
    import json

    out = subprocess.run([sys.executable, "-m", "worker.cli", "doctor", "--json"], cwd=tmp_path,
                         env=_without_secret(services), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    secret = [f for f in json.loads(out.stdout)["findings"] if f["check"] == "secret"]
    assert secret and secret[0]["status"] == "fail" and MISSING in secret[0]["detail"]


def test_worker_logs_the_fingerprint_and_warns_of_a_loopback_public_url(start_worker, api_server):
    from campaigns.signing import secret_fingerprint

    worker = start_worker()
    log = worker.log.read_text()
    fingerprint = secret_fingerprint()
    assert f"celery worker started, secret fingerprint {fingerprint}" in log, log[-2000:]
    assert "HERALD_PUBLIC_URL is http://127.0.0.1" in log and "loopback" in log
    assert SECRET not in log
    ready = httpx.get(f"{api_server.url}/readyz", timeout=10).json()
    assert ready["secret_fingerprint"] == fingerprint


def test_a_different_secret_shows_a_different_fingerprint(services, tmp_path):
    code = "from campaigns.signing import secret_fingerprint; print(secret_fingerprint())"
    run = lambda secret: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, **services, "HERALD_SECRET_KEY": secret}).stdout.strip()
    same, other = run(SECRET), run(SECRET + "x")
    assert len(same) == 8 and int(same, 16) >= 0
    assert same == run(SECRET) and same != other
    assert same not in SECRET


def test_webhook_401s_are_counted_by_account_and_logged_without_the_token(services, api_server, caplog):
    import uuid

    from tests.conftest import wait_for

    token = "f" * 40
    campaign = uuid.uuid4()

    def count(account: str) -> float:
        text = httpx.get(f"{api_server.url}/metrics", timeout=10).text
        line = next((ln for ln in text.splitlines()
                     if ln.startswith(f'herald_webhook_unauthorized_total{{account="{account}"}}')), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before_tiko, before_unknown = count("tiko"), count("unknown")
    with caplog.at_level("WARNING", logger="worker.metrics"):
        for path in (f"/v1/webhooks/tiko/{campaign}/{token}", f"/v1/webhooks/tiko/status/{token}",
                     f"/v1/webhooks/tiko/{campaign}", f"/v1/webhooks/guess-{token[:6]}/{campaign}/{token}"):
            answer = httpx.post(f"{api_server.url}{path}", json={"status": "DELIVERED"}, timeout=10)
            assert answer.status_code == 401, path
        wait_for(lambda: count("tiko") == before_tiko + 3, timeout=10, message="three 401s for tiko")
    # An account name from the URL that is not configured is one label, not one per guess.
    assert count("unknown") == before_unknown + 1
    assert f"guess-{token[:6]}" not in httpx.get(f"{api_server.url}/metrics", timeout=10).text
    refused = [r for r in caplog.records if "webhook refused" in r.getMessage()]
    assert len(refused) == 4 and {r.account for r in refused} == {"tiko", "unknown"}
    logged = " ".join(r.getMessage() + str(vars(r)) for r in refused)
    assert token not in logged and token[:6] not in logged


def test_a_malformed_setting_stops_a_process_naming_the_variable_not_its_value(tmp_path):
    env = {**os.environ, "HERALD_PROVIDERS": '{"a": {"kind": "tikosms", "token": "tok-5e1f9"}}'}
    for command in ([sys.executable, "-m", "worker.cli", "doctor"],
                    [sys.executable, "-m", "celery", "-A", "worker", "worker"]):
        out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1
        assert "the settings cannot be read: HERALD_PROVIDERS a.base_url: Field required" in out.stderr, out.stderr
        assert "tok-5e1f9" not in out.stdout + out.stderr and "Traceback" not in out.stderr


def test_loopback_rule():
    from campaigns.settings import Settings
    from worker.startup import configuration_findings

    def warned(url: str) -> bool:
        findings = configuration_findings(Settings(public_url=url, secret_key="k", _env_file=None))
        return any(f.check == "public_url" and f.status == "warn" for f in findings)

    assert warned("http://127.0.0.1:8000") and warned("http://localhost:8000") and warned("http://[::1]:8000")
    assert not warned("https://herald.example.com") and not warned("https://localhost.example.com")
