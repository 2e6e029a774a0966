"""`herald status`: a campaign's aggregate as a table, or live as a progress bar (--watch)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from campaigns.aggregate import campaign_report
from campaigns.statuses import CampaignStatus

ENDED = (CampaignStatus.COMPLETED, CampaignStatus.CANCELLED)


def summary_table(report: dict) -> Table:
    table = Table(title=f"Campaign {report['campaign_id']}", show_header=False)
    ttd = report["time_to_delivery_s"]
    for label, value in (
        ("status", report["status"] + (f" — STALLED: nothing moved since {report['last_moved_at']}"
                                        if report.get("stalled") else "")),
        ("submitted", report["submitted"]),
        ("duplicates / invalid / suppressed",
         f"{report['duplicates']} / {report['invalid']} / {report['suppressed']}"),
        ("accepted", report["accepted"]),
        *((f"  {status}", n) for status, n in report["counts"].items() if n),
        ("no report available", report["no_report"]),
        ("delivery rate", f"{report['delivery_rate']:.1%}"), ("segments", report["segments"]),
        ("cost (estimate)", f"{report['cost']} ({report['estimated_cost']})"),
        ("time to delivery p50 / p95", f"{ttd['p50']} s / {ttd['p95']} s"),
        ("priority", report["priority"]),
        *((("window (in flight / size)", _window(w)),) if (w := report["window"]) else ()),
    ):
        table.add_row(label, str(value))
    return table


def _window(window: dict) -> str:
    return f"{window['in_flight']} / {window['size']}" + (f", waiting: {window['waiting']}" if window["waiting"] else "")


def _detail(report: dict) -> str:
    counts = report["counts"]
    window = f" window {_window(w)}" if (w := report["window"]) else ""
    return (f"{report['status']}: queued {counts['queued']} sent {report['sent']} "
            f"delivered {report['delivered']} failed {report['failed']}{window}")


def watch(campaign_id: str, console: Console, every_s: float = 0.5, *,
          timeout_s: float | None = None, stall_s: float | None = None, transient: bool = False) -> dict:
    """Redraw until the campaign ends (or Ctrl-C, or ``timeout_s``, or ``stall_s`` without any
    message changing status); returns the last report."""
    report = campaign_report(campaign_id)
    deadline = time.monotonic() + timeout_s if timeout_s is not None else None
    moved_at, last_counts = time.monotonic(), report["counts"]
    with Progress(TextColumn("[bold]done"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console,
                  transient=transient) as progress:
        bar = progress.add_task("campaign", total=report["accepted"], detail=_detail(report))
        try:
            while True:
                progress.update(bar, completed=report["done"], detail=_detail(report))
                now = time.monotonic()
                if (report["status"] in ENDED or (deadline is not None and now > deadline)
                        or (stall_s is not None and now - moved_at > stall_s)):
                    break
                time.sleep(every_s)
                report = campaign_report(campaign_id)
                if report["counts"] != last_counts:
                    moved_at, last_counts = time.monotonic(), report["counts"]
        except KeyboardInterrupt:
            pass
    return report
