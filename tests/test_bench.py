"""`herald bench`: the JSON it prints has every figure, and the instruments it uses are right."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import FLEET, ROOT
from worker.bench.probes import PeakRss, percentile
from worker.bench.recipients import recipients


def _bench_json(pg_url: str, redis_url: str, *args: str) -> dict:
    """`herald bench ARGS --json` on the test stores, in a process of its own; its JSON."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HERALD_")},
           "HERALD_DATABASE_URL": pg_url, "HERALD_BROKER_URL": redis_url, "HERALD_REDIS_URL": redis_url}
    out = subprocess.run([sys.executable, "-m", "worker.cli", "bench", *args, "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@FLEET
def test_bench_prints_every_figure_as_a_positive_number(pg_url, redis_url):
    results = _bench_json(pg_url, redis_url, "--recipients", "300")

    for stage in ("intake", "fanout", "dispatch", "reports", "baseline"):
        assert results[stage]["rate"] > 0, stage
        assert results[stage]["peak_rss_mb"] > 0, stage
    # Every stage beside its own limit, measured in the same run.
    for stage in ("fanout", "dispatch", "reports"):
        r = results[stage]
        assert r["baseline_rate"] > 0, stage
        assert r["ratio_to_baseline"] == pytest.approx(r["rate"] / r["baseline_rate"], rel=0.01), stage
    assert results["dispatch"]["baseline_rate"] == results["baseline"]["rate"]
    # Half the baseline before the dispatch stage, half after: its rate lies between the halves'.
    halves = results["baseline"]["rate_before"], results["baseline"]["rate_after"]
    assert min(halves) - 0.1 <= results["baseline"]["rate"] <= max(halves) + 0.1
    assert results["intake"]["ratio_to_phonenumbers"] > 0
    for stage in ("fanout", "dispatch", "reports"):
        assert 0 < results[stage]["p50_ms"] <= results[stage]["p95_ms"], stage
    intake = results["intake"]
    assert intake["accepted"] + intake["duplicates"] + intake["invalid"] == 300
    assert results["dispatch"]["messages"] == results["reports"]["reports"] == intake["accepted"]


@FLEET
def test_fairness_stage_prints_each_small_campaign_and_the_large_ones_ratio(pg_url, redis_url):
    fairness = _bench_json(pg_url, redis_url, "--stages", "fairness", "--recipients", "3000")["fairness"]

    for key in ("normal_s", "concurrency_1_s", "high_s", "rate", "ratio_to_baseline", "refills",
                "window_turn_p50_ms"):
        assert fairness[key] > 0, key
    # Growth is printed to 0.001 MB: up to 0.2 bytes per recipient at this size.
    assert fairness["broker_bytes_per_recipient"] == pytest.approx(
        fairness["broker_growth_mb"] * 2**20 / fairness["large_recipients"], abs=0.5)
    # Enough recipients that the large campaign still drains once the small ones have completed.
    assert fairness["large_recipients"] > 2000


def test_bench_refuses_the_embedded_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    out = subprocess.run([sys.executable, "-m", "worker.cli", "bench", "--recipients", "10"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "HERALD_DATABASE_URL" in out.stderr and "postgresql://" in out.stderr


def test_generated_recipients_mix_duplicates_and_invalid_numbers():
    from campaigns.recipients import InvalidRecipient, normalise

    seen, duplicates, invalid = set(), 0, 0
    for raw in recipients(3000, seed=5):
        try:
            e164 = normalise(raw, "GB").e164
        except InvalidRecipient:
            invalid += 1
            continue
        duplicates += e164 in seen
        seen.add(e164)
    assert 0.07 < duplicates / 3000 < 0.13
    assert 0.015 < invalid / 3000 < 0.045
    assert list(recipients(50, seed=5)) == list(recipients(50, seed=5))


def test_peak_rss_sees_memory_taken_after_reset():
    rss = PeakRss().reset()
    before = rss.mb()
    ballast = bytearray(64 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page so it is resident
    assert rss.mb() >= before + 60
    del ballast


def test_percentile_is_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(1, 101)), 95) == 95
