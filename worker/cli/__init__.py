"""The `herald` command line: commands, console output, the live status view and the demo."""

from worker.cli.commands import main

__all__ = ["main"]
