"""The one source of time. Tests shift or freeze it instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone


def _system() -> datetime:
    return datetime.now(timezone.utc)


_source: list[Callable[[], datetime]] = [_system]


def now() -> datetime:
    return _source[0]()


def set_clock(source: Callable[[], datetime] | None) -> None:
    """Replace the time source in this process (None restores the system clock)."""
    _source[0] = source or _system
