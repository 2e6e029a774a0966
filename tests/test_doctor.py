"""`herald doctor` against the real stores, with each problem injected, and with none."""

import json
import os
import subprocess
import sys

import psycopg
import pytest

from tests.conftest import PG_ADMIN, _accounts_json
from worker.emulator.process import free_port


def doctor(env: dict, cwd) -> tuple[int, dict]:
    out = subprocess.run([sys.executable, "-m", "worker.cli", "doctor", "--json"], cwd=cwd,
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    return out.returncode, json.loads(out.stdout)


def by_check(report: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for f in report["findings"]:
        found.setdefault(f["check"], []).append(f)
    return found


def statuses(report: dict) -> dict[str, set[str]]:
    return {check: {f["status"] for f in fs} for check, fs in by_check(report).items()}


def failed(report: dict) -> dict[str, dict]:
    return {f["check"]: f for f in report["findings"] if f["status"] == "fail"}


def test_no_problem(services, tmp_path):
    code, report = doctor(services, tmp_path)
    assert code == 0 and report["ok"], report
    found = statuses(report)
    assert found["database"] == found["broker"] == found["limits"] == found["secret"] == {"ok"}
    assert found["provider tiko"] == {"ok"} and "balance" in by_check(report)["provider tiko"][0]["detail"]
    # The test API is on loopback: a warning, not a failure; and it answers with the same key.
    assert found["public_url"] == {"ok", "warn"}
    from campaigns.signing import secret_fingerprint

    assert report["secret_fingerprint"] == secret_fingerprint()
    assert {(w["account"], w["event"]) for w in report["webhooks"]} == {("tiko", "status"), ("tiko", "incoming")}


def test_database_down(services, tmp_path):
    code, report = doctor({**services, "HERALD_DATABASE_URL": f"postgresql://postgres:pw@127.0.0.1:{free_port()}/herald"},
                          tmp_path)
    assert code == 1 and set(failed(report)) == {"database"}, report
    problem = failed(report)["database"]
    assert "cannot be reached" in problem["detail"] and "HERALD_DATABASE_URL" in problem["fix"]
    assert ":pw@" not in json.dumps(report)  # the URL is shown without its password


def test_database_behind_the_code(services, tmp_path):
    name = f"{services['HERALD_DATABASE_URL'].rsplit('/', 1)[1]}_empty"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        code, report = doctor({**services, "HERALD_DATABASE_URL": PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"}, tmp_path)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert code == 1 and set(failed(report)) == {"database"}, report
    assert failed(report)["database"]["fix"] == "run `herald db upgrade`"


def test_wrong_provider_token(services, emulator, tmp_path):
    accounts = json.loads(_accounts_json(emulator.url))
    accounts["tiko"]["token"] = "wrong-token-8c1f"
    code, report = doctor({**services, "HERALD_PROVIDERS": json.dumps(accounts)}, tmp_path)
    assert code == 1 and set(failed(report)) == {"provider tiko"}, report
    problem = failed(report)["provider tiko"]
    assert "401" in problem["detail"] and "credentials of 'tiko'" in problem["fix"]
    assert "wrong-token-8c1f" not in json.dumps(report)


def test_public_url_unreachable(services, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    code, report = doctor({**services, "HERALD_PUBLIC_URL": url}, tmp_path)
    assert code == 1 and set(failed(report)) == {"public_url"}, report
    assert f"{url}/healthz does not answer" in failed(report)["public_url"]["detail"]
    text = subprocess.run([sys.executable, "-m", "worker.cli", "doctor"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, **services, "HERALD_PUBLIC_URL": url}, timeout=120)
    assert text.returncode == 1
    assert f"FAIL public_url: {url}/healthz does not answer" in text.stdout
    assert "fix: start `herald api` there" in text.stdout and "problems found" in text.stdout


def test_another_process_signs_with_another_key(services, tmp_path):
    code, report = doctor({**services, "HERALD_SECRET_KEY": "not-the-api's-key"}, tmp_path)
    assert code == 1 and set(failed(report)) == {"public_url"}, report
    assert "signs with another key" in failed(report)["public_url"]["detail"]


@pytest.mark.parametrize("variable", ["HERALD_BROKER_URL", "HERALD_REDIS_URL"])
def test_redis_down(services, tmp_path, variable):
    code, report = doctor({**services, variable: f"redis://127.0.0.1:{free_port()}/0"}, tmp_path)
    check = {"HERALD_BROKER_URL": "broker", "HERALD_REDIS_URL": "limits"}[variable]
    assert code == 1 and check in failed(report), report
    assert variable in failed(report)[check]["fix"]
