"""`herald demo` on the embedded default: no Redis, no PostgreSQL, no broker."""

import json
import os
import subprocess
import sys


def test_demo_report_matches_what_was_generated(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    out = subprocess.run([sys.executable, "-m", "worker.cli", "demo", "--recipients", "1000", "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    expected = report["expected"]
    assert report["submitted"] == 1000
    assert report["accepted"] == expected["unique"]
    assert report["duplicates"] == expected["duplicates"] > 50
    assert report["invalid"] == expected["invalid"] > 10
    assert report["delivered"] + report["failed"] == report["accepted"]
    assert report["status"] == "completed"
    assert (tmp_path / "herald.db").exists()
    # Nothing a newcomer cannot act on (kombu used to warn "No hostname was supplied").
    assert "WARNING" not in out.stderr and "No hostname" not in out.stderr, out.stderr[-3000:]


def test_demo_that_cannot_finish_says_what_is_pending_and_exits_1(tmp_path):
    """The emulator pushes no report: the demo stops at its deadline and names what waits, and why."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    code = ("import sys; from worker.cli import demo; from worker.emulator import Knobs; "
            "sys.exit(demo.run(40, stall_s=3, as_json=True, knobs=Knobs(push_reports=False)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 1, out.stderr[-3000:]
    report = json.loads(out.stdout)
    pending = report["pending"]
    assert report["ok"] is False and report["status"] == "running"
    assert 3 <= pending["waited_s"] < 60  # stopped once nothing moved, long before the deadline
    assert pending["counts"] == {"sent": report["accepted"]}
    assert pending["messages"] and all(m["status"] == "sent" and "phone" not in m for m in pending["messages"])
    assert pending["webhook_answers"] == {} and pending["emulator"]["reports_pushed"] == 0


def test_explain_names_refused_webhooks_first():
    from worker.cli.demo import explain

    lines = explain({"waited_s": 180, "counts": {"sent": 3},
                     "messages": [{"id": 7, "status": "sent", "provider_message_id": "p7", "error": None}],
                     "webhook_answers": {"200": 870, "401": 3}, "last_webhook_answers": [200, 401],
                     "emulator": {"reports_pushed": 873}})
    assert lines[0] == "the campaign did not finish (waited 180 s); still pending: 3 sent"
    assert "message 7: sent (provider id p7)" in lines[1]
    assert "870 × 200, 3 × 401" in lines[2]
    assert lines[-1].startswith("why: the API refused reports for their URL token (401)")
