"""No phone number and no message text in any log or in Flower's task view, whichever door a
campaign came in by, nor in a logged database error's traceback."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

import campaigns
from campaigns import db
from tests.conftest import FLEET, wait_for
from worker.emulator.process import free_port
from worker.logs import RedactPersonalData

TEXT = "Secret offer for Amina: code 7781"
NUMBERS = ["+447400123456", "07400 123457"]
BROKEN = "Broken"  # a campaign from this sender fails in the database, with an error quoting its data


def _leaks(blob: str) -> list[str]:
    """Any written form of the test numbers (E.164, national, spaced, bare digits, URL-encoded), or
    the message text, found in ``blob``."""
    runs = ["".join(c for c in run if c.isdigit()) for run in re.findall(r"\d[\d\s().-]*\d", blob)]
    found = [n for n in ("7400123456", "7400123457") if any(n in run for run in runs)]
    return found + ([TEXT] if "Secret offer" in blob or "Amina" in blob else [])


# Every statement storing a message of a BROKEN campaign fails, and PostgreSQL's error quotes the
# number and the text: the worst a database error can carry into a traceback.
_REFUSE = """
CREATE FUNCTION herald_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE c campaigns%ROWTYPE;
BEGIN
  SELECT * INTO c FROM campaigns WHERE id = NEW.campaign_id;
  IF c.sender = 'Broken' THEN RAISE EXCEPTION 'refused % (%)', NEW.phone, c.template; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER herald_test_refuse BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION herald_test_refuse();
"""


@pytest.fixture
def refusing_database(services):
    with db.session() as s:
        s.execute(text(_REFUSE))
    yield
    with db.session() as s:
        s.execute(text("DROP TRIGGER herald_test_refuse ON messages; DROP FUNCTION herald_test_refuse()"))


class Logged:
    """A Herald process (or Flower) whose stdout and stderr go to one file this test scans."""

    def __init__(self, env: dict[str, str], log: Path, *cmd: str):
        self.log, self.cmd, self.env = log, [sys.executable, *cmd], {**os.environ, **env}

    def __enter__(self) -> Logged:
        self.proc = subprocess.Popen(self.cmd, cwd=self.log.parent, env=self.env, stdout=self.log.open("w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def __exit__(self, *_):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.cmd[1:4]} exited:\n{self.log.read_text()[-3000:]}")
        return True


def _answers(url: str, **kwargs) -> bool:
    try:
        return httpx.get(url, timeout=2, **kwargs).status_code == 200
    except httpx.HTTPError:
        return False


@FLEET
def test_no_door_logs_or_shows_a_number_or_the_text(services, refusing_database, start_worker, tmp_path):
    """A campaign through each door (the broker, HTTP, the CLI), each also once with a database
    error that quotes the number and text; then every log (API, worker, beat, Flower, the CLI's
    output) and Flower's task view are scanned."""
    from campaigns import apikeys
    from campaigns.aggregate import campaign_report
    from worker.app import app

    with pytest.raises(Exception) as quoted:  # the forced error does carry the data
        campaigns.submit({"from": BROKEN, "message": TEXT, "default_region": "GB"}, NUMBERS)
    assert _leaks(str(quoted.value))

    api_port, flower_port = free_port(), free_port()
    flower_url, api_url = f"http://127.0.0.1:{flower_port}", f"http://127.0.0.1:{api_port}"
    auth = ("u", "p")
    # The emulator's delivery reports go to this API too, so its webhook handling is scanned.
    env = {**services, "HERALD_PUBLIC_URL": api_url}
    with contextlib.ExitStack() as stack:
        flower = stack.enter_context(Logged(env, tmp_path / "flower.log", "-m", "celery", "-A", "worker.app",
                                            "flower", "--address=127.0.0.1", f"--port={flower_port}",
                                            "--basic-auth=u:p"))
        api = stack.enter_context(Logged(env, tmp_path / "api.log", "-m", "worker.cli", "api",
                                         "--port", str(api_port)))
        beat = stack.enter_context(Logged(env, tmp_path / "beat.log", "-m", "celery", "-A", "worker", "beat",
                                          "--loglevel", "INFO", "--schedule", str(tmp_path / "beat-schedule")))
        worker = start_worker("--pool", "threads", "--concurrency", "4", "-E", env=env)
        wait_for(lambda: flower.alive() and api.alive() and _answers(f"{api_url}/healthz")
                 and _answers(f"{flower_url}/healthcheck"), timeout=60, message="the API and Flower")
        # Flower sees events once the beat's first jobs have run on the worker.
        wait_for(lambda: beat.alive() and httpx.get(f"{flower_url}/api/tasks", auth=auth, timeout=5).json(),
                 timeout=60, message="Flower's first task events")

        body = {"from": "Herald", "message": TEXT, "default_region": "GB", "recipients": NUMBERS}
        # The broker.
        ok = app.send_task("campaigns.submit", kwargs={**body, "service": "default"})
        bad = app.send_task("campaigns.submit", kwargs={**body, "from": BROKEN, "service": "default"})
        good = [ok.get(timeout=60)["campaign_id"]]
        with pytest.raises(Exception) as failed:
            bad.get(timeout=60)
        assert type(failed.value).__name__ == "Withheld" and not _leaks(repr(failed.value)), failed.value
        # HTTP.
        headers = {"Authorization": f"Bearer {apikeys.create_key('logscan')[1]}"}
        answer = httpx.post(f"{api_url}/v1/campaigns", json=body, headers=headers, timeout=30)
        assert answer.status_code == 201, answer.text
        good.append(answer.json()["campaign_id"])
        answer = httpx.post(f"{api_url}/v1/campaigns", json={**body, "from": BROKEN}, headers=headers, timeout=30)
        assert answer.status_code == 500 and not _leaks(answer.text), answer.text
        # The CLI: once fine, once failing in a statement, once with a database that refuses.
        recipients = tmp_path / "recipients.csv"
        recipients.write_text("to,name\n" + "".join(f"{n},Amina\n" for n in NUMBERS))
        cli_env = {**os.environ, **env}
        cli = [sys.executable, "-m", "worker.cli", "submit", str(recipients), "--message",
               "Secret offer for {name}: code 7781", "--region", "GB", "--json", "--from"]
        runs = [subprocess.run([*cli, sender], env=run_env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
                for sender, run_env in [("Herald", cli_env), (BROKEN, cli_env),
                                    ("Herald", {**cli_env, "HERALD_DATABASE_URL":
                                                f"postgresql://postgres@127.0.0.1:{free_port()}/herald"})]]
        assert runs[0].returncode == 0, runs[0].stderr
        good.append(json.loads(runs[0].stdout)["campaign_id"])
        for run in runs[1:]:
            assert run.returncode == 1 and "message withheld" in run.stderr, run.stderr

        wait_for(lambda: all(campaign_report(c)["status"] == "completed" for c in good), timeout=120,
                 message="the three campaigns to complete")

        def final(task_id: str) -> dict | None:
            task = httpx.get(f"{flower_url}/api/task/info/{task_id}", auth=auth, timeout=5)
            return task.status_code == 200 and task.json().get("state") in ("SUCCESS", "FAILURE") and task.json()

        views = {}
        for task_id in (ok.id, bad.id):
            views[task_id] = repr(wait_for(lambda: final(task_id), timeout=30, message="Flower's final state"))
            for page in (f"/task/{task_id}", f"/api/task/result/{task_id}"):
                views[page] = httpx.get(f"{flower_url}{page}", auth=auth, timeout=10).text
        views["tasks"] = httpx.get(f"{flower_url}/api/tasks", auth=auth, timeout=10).text
    shown = json.loads(views["tasks"])
    assert shown[ok.id]["state"] == "SUCCESS" and shown[bad.id]["state"] == "FAILURE"
    assert shown[ok.id]["kwargs"] == "<redacted>" and ok.id in views[f"/task/{ok.id}"]
    logs = {p.name: p.read_text() for p in (api.log, beat.log, flower.log, worker.log)}
    assert f"campaigns.submit[{ok.id}] succeeded" in logs[worker.log.name]
    assert f"campaigns.submit[{bad.id}]" in logs[worker.log.name] and "message withheld" in logs[worker.log.name]
    assert "message withheld" in logs["api.log"]  # the 500's traceback, outlined
    assert "Sending due task" in logs["beat.log"]
    outputs = {f"cli {n}": run.stdout + run.stderr for n, run in enumerate(runs)}
    leaks = {name: _leaks(blob) for name, blob in {**logs, **outputs, **views}.items()}
    assert not any(leaks.values()), {name: found for name, found in leaks.items() if found}


def test_a_database_errors_traceback_keeps_frames_and_types_only(services):
    """A real IntegrityError quotes the doubled number in its DETAIL; the logged line does not."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactPersonalData())
    logger = logging.getLogger(f"test-redaction-{uuid.uuid4().hex}")
    logger.addHandler(handler)
    cid = uuid.uuid4()
    try:
        with db.session() as s:
            s.execute(text("INSERT INTO campaigns (id, service_id, status, sender, template, submitted, segments, "
                           "fanout_checkpoint) VALUES (:c, 1, 'running', 'H', :t, 0, 0, 0)"), {"c": cid, "t": TEXT})
            for _ in range(2):
                s.execute(text("INSERT INTO messages (campaign_id, status, phone, encoding, segments, attempts) "
                               "VALUES (:c, 'queued', '+447400123456', 'GSM7', 1, 0)"), {"c": cid})
    except Exception:  # noqa: BLE001 - the point is to log it
        logger.exception("submission failed", extra={"campaign_id": str(cid)})
    logged = stream.getvalue()
    assert "IntegrityError" in logged and "message withheld" in logged and 'File "' in logged
    assert not _leaks(logged), logged
