"""What the domain needs from the sending side, handed to it as callables and data.

campaigns/ imports nothing from worker/: the worker side registers (worker/wiring.py, run by
importing the ``worker`` package) how a running campaign's dispatch starts, how a cancelled
campaign's sent messages are cancelled at their providers, and what each provider kind can do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from campaigns.errors import ConfigurationError


@dataclass(frozen=True)
class Capabilities:
    """What one provider kind's API can do, as its adapter declares it."""

    pushes_reports: bool = False
    can_poll: bool = True
    lookup_by_reference: bool = False
    max_sender: int | None = None
    max_chars: int | None = None  # per message as the API takes it (no concatenation by us)

    @property
    def silent(self) -> bool:
        """Accepts a message and never says more: no push, no lookup (the Laravel gateway)."""
        return not self.pushes_reports and not self.can_poll


@dataclass
class _Ports:
    start_dispatch: Callable[[str], None] | None = None
    cancel_at_provider: Callable[[str], None] | None = None
    kinds: dict[str, Capabilities] = field(default_factory=dict)


_ports = _Ports()


def register(*, start_dispatch: Callable[[str], None], cancel_at_provider: Callable[[str], None],
             kinds: dict[str, Capabilities]) -> None:
    _ports.start_dispatch = start_dispatch
    _ports.cancel_at_provider = cancel_at_provider
    _ports.kinds = kinds


def _registered(port):
    if port is None:
        raise ConfigurationError("no dispatcher is registered: import the worker package (worker) first")
    return port


def start_dispatch(campaign_id: str) -> None:
    """Begin sending a running campaign's queued messages."""
    _registered(_ports.start_dispatch)(campaign_id)


def cancel_at_provider(campaign_id: str) -> None:
    """Ask, in the background, each provider that can to cancel the campaign's sent messages."""
    _registered(_ports.cancel_at_provider)(campaign_id)


def capabilities(kind: str) -> Capabilities:
    """An unknown kind can do nothing special (the settings check kinds when an account is used)."""
    return _registered(_ports.kinds or None).get(kind, Capabilities())
