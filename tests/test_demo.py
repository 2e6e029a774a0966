"""`herald demo` on the embedded default: no Redis, no PostgreSQL, no broker."""

import json
import os
import subprocess
import sys


def test_demo_report_matches_what_was_generated(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    out = subprocess.run([sys.executable, "-m", "worker.cli", "demo", "--recipients", "1000", "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
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
