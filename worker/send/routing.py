"""Which account sends a message: the campaign's own, or the best one its route allows.

Among a region's accounts, those that cannot carry the message (limits), whose circuit is open
or that have no rate for the region are passed over; of the rest the cheapest known price wins
(configured ``prices``, else the provider's own price lookup, cached per process), and accounts
with no known price follow in the route's order. If every account's circuit is open, the first
is tried anyway: that probe is how a recovered provider comes back.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

from campaigns.errors import ProviderError
from campaigns.routes import candidates, cannot_carry
from campaigns.settings import get_settings
from worker.send import cooldown
from worker.providers import get_provider

log = logging.getLogger(__name__)

PRICE_TTL_S = 3600.0
_prices: dict[tuple[str, str], tuple[float, Decimal | None]] = {}


def choose(target: str, region: str | None, sender: str, text: str) -> str | None:
    """The account to send through, or None if no account of the route can carry it there."""
    settings = get_settings()
    names = candidates(settings, target, region)
    if len(names) == 1 and target in settings.providers:
        return target  # a campaign on one account: nothing to choose
    names = [n for n in names if cannot_carry(settings.providers[n], sender, text) is None]
    if not names:
        return None
    open_circuit, no_route = cooldown.unusable(names, region)
    names = [n for n in names if n not in no_route]
    if not names:
        return None
    healthy = [n for n in names if n not in open_circuit] or names[:1]
    return min(healthy, key=lambda n: _price_key(n, region, healthy.index(n)))


def _price_key(account: str, region: str | None, position: int) -> tuple:
    value = price(account, region)
    return (value is None, value if value is not None else 0, position)


def price(account: str, region: str | None) -> Decimal | None:
    """Price per message to ``region``: configured first, else asked of the provider (cached)."""
    configured = get_settings().providers[account].prices
    if region in configured or "*" in configured:
        return configured.get(region, configured.get("*"))
    if region is None:
        return None
    cached = _prices.get((account, region))
    if cached and time.monotonic() - cached[0] < PRICE_TTL_S:
        return cached[1]
    try:
        value = get_provider(account).price(region)
    except ProviderError:
        log.warning("price lookup failed", extra={"provider": account})
        _prices[(account, region)] = (time.monotonic() - PRICE_TTL_S + 60, None)  # ask again soon
        return None
    _prices[(account, region)] = (time.monotonic(), value)
    return value
