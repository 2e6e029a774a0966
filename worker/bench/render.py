"""The benchmark's results as the README's Markdown table, or as a table for the terminal."""

from __future__ import annotations

TARGETS = {
    "intake": "≥ 1.3 × phonenumbers alone at N = 1,000,000; ≤ 300 MB",
    "fanout": "≥ 0.7 × bare kombu publishing",
    "dispatch": "≥ 0.85 × bare Celery",
    "reports": "≥ 0.7 × bare receiver",
    "baseline": "",
    "fairness": "small ones ≤ 3 s (high ≤ 1 s); broker growth ≤ 5 MB; ≥ 0.8 × baseline",
}
_LABELS = {"intake": "intake", "fanout": "fan-out", "dispatch": "dispatch", "reports": "reports",
           "baseline": "bare Celery baseline", "fairness": "fairness (the large campaign)"}
# What each stage's baseline is, as the table names it.
_BASELINES = {"fanout": "bare kombu publishing", "dispatch": "bare Celery", "reports": "bare receiver"}


def _num(value, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _compared(stage: str, r: dict) -> str:
    if stage == "intake":
        return f"{r['ratio_to_phonenumbers']:.2f} × phonenumbers alone ({_num(r['phonenumbers_rate'])}/s)"
    if stage == "fairness":
        return (f"{r['ratio_to_baseline']:.2f} × baseline; small campaigns done in: normal {r['normal_s']} s, "
                f"concurrency 1 {r['concurrency_1_s']} s, high {r['high_s']} s; broker growth "
                f"{r['broker_growth_mb']} MB")
    if "ratio_to_baseline" in r:
        return f"{r['ratio_to_baseline']:.2f} × {_BASELINES[stage]} ({_num(r['baseline_rate'])}/s)"
    return ""


def rows(results: dict) -> list[list[str]]:
    out = []
    for stage, label in _LABELS.items():
        r = results.get(stage)
        if r is None:
            continue
        out.append([label, _num(r["rate"]), _num(r.get("p50_ms"), 1), _num(r.get("p95_ms"), 1),
                    f"{_num(r['peak_rss_mb'])} ({r['peak_rss_of']})", _compared(stage, r), TARGETS[stage]])
    return out


HEADER = ["stage", "rate /s", "p50 ms", "p95 ms", "peak RSS MB", "compared with", "target"]


def command(results: dict) -> str:
    c = results["config"]
    return (f"herald bench --recipients {c['recipients']} --latency-ms {c['latency_ms']:g} "
            f"--workers {c['workers']} --stages {','.join(c['stages'])}")


def markdown(results: dict) -> str:
    c = results["config"]
    lines = [
        f"`{command(results)}` on {c['cpus']} CPUs; workers: pool {c['pool']}, concurrency "
        f"{c['concurrency']}, prefetch multiplier {c['prefetch_multiplier']}; fan-out batch {c['fanout_batch']}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(lines)


def table(results: dict):
    from rich.table import Table

    t = Table(title=command(results))
    for name in HEADER:
        t.add_column(name)
    for row in rows(results):
        t.add_row(*row)
    return t
