"""Terminal output for the CLI beyond one campaign's (worker/status_view.py): the campaigns table, progress bars."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def campaigns_table(rows: list[dict]) -> Table:
    table = Table(title="Campaigns", box=box.SIMPLE_HEAD)
    table.add_column("campaign", no_wrap=True, min_width=36)  # ids are copied from here: never cut
    for column in ("status", "provider", "accepted", "delivered", "failed", "progress", "created"):
        table.add_column(column, justify="right" if column in ("accepted", "delivered", "failed", "progress") else "left")
    for r in rows:
        table.add_row(r["campaign_id"], r["status"], r["provider"] or "", str(r["accepted"]),
                      str(r["delivered"]), str(r["failed"]), f"{r['progress']:.0%}", (r["created_at"] or "")[:19])
    return table


def progress_bar(console: Console, label: str, transient: bool = False) -> Progress:
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                    console=console, transient=transient)
