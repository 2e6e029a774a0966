"""What operators see — Flower, /metrics, logs — after a real campaign, and what they must not see."""

from __future__ import annotations

import json
import logging

import httpx
import phonenumbers
from prometheus_client.parser import text_string_to_metric_families

import campaigns
from campaigns.aggregate import campaign_report
from campaigns.schema import CampaignSpec
from campaigns.settings import configure, get_settings
from tests.conftest import wait_for
from tests.test_procfile import run_entry  # noqa: F401  (the fixture)
from worker.cli import demo
from worker.emulator import Knobs
from worker.emulator.process import free_port
from worker.logs import JsonFormatter

TEXT = "Ops check zq81: your parcel is at the depot"


def run_campaign(n: int = 12, seed: int = 5) -> tuple[dict, list[str]]:
    """A small campaign to completion; its report and every form of its numbers worth looking for."""
    generated = demo.generate(n, seed=seed)
    spec = CampaignSpec.model_validate({"from": "Herald", "message": TEXT, "default_region": "GB"})
    receipt = campaigns.submit(spec, generated.recipients)
    report = wait_for(lambda: (r := campaign_report(receipt.campaign_id))["status"] == "completed" and r,
                      timeout=90, message="the campaign to complete")
    needles = secrets_of(generated.recipients)
    assert len(needles) > 2 * report["accepted"]
    return report, needles


def secrets_of(raw_numbers: list[str]) -> list[str]:
    """The text, and each number as submitted, in E.164, and as bare national digits."""
    found = {TEXT, "zq81"}
    for raw in raw_numbers:
        found.add(raw)
        try:
            number = phonenumbers.parse(raw, "GB")
        except phonenumbers.NumberParseException:
            continue
        found.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
        found.add(str(number.national_number))
    return sorted(s for s in found if len(s) >= 6)


def assert_none_in(haystack: str, needles: list[str], where: str) -> None:
    leaked = [n for n in needles if n in haystack]
    assert not leaked, f"{where} contains {leaked[:3]}"


def test_flower_shows_herald_tasks_with_ids_only(services, start_worker, run_entry, monkeypatch):  # noqa: F811
    port = free_port()
    # Flower's own variable; without auth its API is off (or open, with FLOWER_UNAUTHENTICATED_API).
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:flower-pass")
    flower, flower_log = run_entry("flower", port)
    base, auth = f"http://127.0.0.1:{port}", ("ops", "flower-pass")

    def api(path: str) -> httpx.Response:
        return httpx.get(base + path, auth=auth, timeout=10)

    def up():
        try:
            return api("/healthcheck").status_code == 200
        except httpx.HTTPError:
            return flower.poll() is not None

    wait_for(up, timeout=60, message="Flower")
    assert flower.poll() is None, flower_log.read_text()[-2000:]
    worker = start_worker("--pool", "threads", "--concurrency", "4")
    wait_for(lambda: worker.name in api("/api/workers?refresh=1").text, timeout=30, message="Flower to see the worker")
    # Workers send task events only when asked; Flower asks every 5 s. Ask now rather than wait.
    from worker.app import app

    wait_for(lambda: any(worker.name in host for reply in app.control.enable_events(reply=True, timeout=2)
                         for host in reply), timeout=30, message="the worker to send task events")

    report, needles = run_campaign()

    def seen():
        tasks = api("/api/tasks?taskname=herald.send_message").json()
        done = [t for t in tasks.values() if t["state"] == "SUCCESS"]
        return len(done) >= report["accepted"] and tasks

    tasks = wait_for(seen, timeout=60, message="Flower to list every send")
    # The first window is published at submission; herald.fan_out runs when a window refills.
    assert {t["name"] for t in api("/api/tasks").json().values()} - {"herald.fan_out"} == {"herald.send_message"}
    assert all(json.loads(t["args"].replace("(", "[").replace(",)", "]").replace(")", "]"))[0] > 0
               for t in tasks.values()), "send tasks carry a message id"
    everything = [api(p).text for p in ("/api/tasks", "/api/task/types", "/api/queues/length",
                                        "/api/workers", "/tasks", "/tasks/datatable?draw=1&start=0&length=100")]
    everything += [api(f"/api/task/info/{task_id}").text for task_id in tasks]
    everything += [api(f"/task/{task_id}").text for task_id in list(tasks)[:3]]
    assert all(task_id in everything[0] for task_id in tasks)
    assert_none_in("\n".join(everything), needles, "Flower")


def test_metrics_match_the_campaign_report(services, start_worker, tmp_path, api_server):
    samples_dir = tmp_path / "prom"
    samples_dir.mkdir()
    worker_port = free_port()
    start_worker("--pool", "prefork", "--concurrency", "2", env={
        "PROMETHEUS_MULTIPROC_DIR": str(samples_dir), "HERALD_WORKER_METRICS_PORT": str(worker_port)})
    # The API shares the workers' directory, as on a single host.
    configure(get_settings().model_copy(update={"prometheus_multiproc_dir": str(samples_dir)}))

    report, _ = run_campaign(20)

    api_metrics = scrape(f"{api_server.url}/metrics")
    worker_metrics = scrape(f"http://127.0.0.1:{worker_port}/metrics")
    messages = {labels["status"]: v for labels, v in api_metrics["herald_messages"] if labels["provider"] == "tiko"}
    assert sum(messages.values()) == report["accepted"] > 10
    assert {s: n for s, n in messages.items() if n} == {s: n for s, n in report["counts"].items() if n}
    assert messages["delivered"] == report["delivered"]
    assert dict((labels["status"], v) for labels, v in api_metrics["herald_campaigns"]) == {"completed": 1}
    assert dict((labels["queue"], v) for labels, v in api_metrics["herald_queue_depth"]) == {
        "herald": 0, "send.high": 0, "send": 0, "send.bulk": 0}
    # Provider calls, counted by the prefork children, add up to the messages the provider took.
    for where in (api_metrics, worker_metrics):
        calls = {labels["outcome"]: v for labels, v in where["herald_provider_request_seconds_count"]
                 if labels["provider"] == "tiko"}
        assert calls == {"accepted": report["sent"]}


def scrape(url: str) -> dict[str, list[tuple[dict, float]]]:
    text = httpx.get(url, timeout=10).text
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_logs_carry_ids_and_never_numbers_or_text(services, start_worker, emulator, caplog):
    caplog.set_level(logging.DEBUG)
    worker = start_worker("--pool", "prefork", "--concurrency", "2", "--loglevel", "DEBUG",
                          env={"HERALD_LOG_JSON": "1"})
    # Failures make the send path log about messages: retries after 5xx, and undelivered reports.
    emulator.set_knobs(Knobs(fail_5xx=0.3, delivered_ratio=0.7, seed=3))
    try:
        report, needles = run_campaign(20, seed=9)
    finally:
        emulator.set_knobs(Knobs())
    worker.stop()

    worker_lines = worker.log.read_text().splitlines()
    here = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert_none_in("\n".join(worker_lines), needles, "the worker log")
    assert_none_in(here, needles, "this process's log")

    records = [json.loads(line) for line in worker_lines if line.startswith("{")]
    assert len(records) > 20, "the worker logs JSON lines"
    # Every line of Herald's own but the process's start-up line (worker/startup.py) is about messages.
    about_messages = [r for r in records if r["logger"].startswith(("worker.", "campaigns."))
                      and r["logger"] != "worker.startup"]
    assert any(r["msg"] == "send will be retried" for r in about_messages)
    for r in about_messages:
        assert r["campaign_id"] == report["campaign_id"] and isinstance(r["message_id"], int), r


def test_throttle_waits_are_counted():
    from prometheus_client import REGISTRY

    from worker.metrics import throttle_waited

    def counted():
        return (REGISTRY.get_sample_value("herald_throttle_waits_total", {"provider": "unit"}) or 0,
                REGISTRY.get_sample_value("herald_throttle_wait_seconds_total", {"provider": "unit"}) or 0)

    before = counted()
    throttle_waited("unit", 0.25)
    throttle_waited("unit", -1)  # a refused slot with no wait yet counts, without negative seconds
    assert counted() == (before[0] + 2, before[1] + 0.25)
