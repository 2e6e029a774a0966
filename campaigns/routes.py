"""Routes and provider limits, known before anything is sent.

A campaign names a provider account or a route (``HERALD_ROUTES``): a route maps destination
regions (phonenumbers region codes, ``"*"`` for any other) to an ordered list of accounts.
Each provider kind has limits its API documents (its adapter declares them: campaigns.ports);
a campaign that no account of a region's list can carry is refused at intake with the reason,
instead of failing message by message later.
"""

from __future__ import annotations

from campaigns import ports
from campaigns.errors import ConfigurationError, SubmissionError
from campaigns.settings import ProviderAccount, Settings


def cannot_carry(account: ProviderAccount, sender: str, text: str) -> str | None:
    """Why this account cannot carry the message, or None if it can."""
    limits = ports.capabilities(account.kind)
    if limits.max_sender is not None and len(sender) > limits.max_sender:
        return f"{account.kind} takes a sender of at most {limits.max_sender} characters"
    if limits.max_chars is not None and len(text) > limits.max_chars:
        return f"{account.kind} takes at most {limits.max_chars} characters per message"
    return None


def longest_text(settings: Settings, target: str, region: str | None) -> int | None:
    """The longest message text some account of ``target`` can carry to ``region`` (None: no limit)."""
    limits = [ports.capabilities(settings.providers[a].kind).max_chars for a in candidates(settings, target, region)]
    if not limits or None in limits:
        return None
    return max(limits)


def candidates(settings: Settings, target: str, region: str | None) -> list[str]:
    """The accounts that may carry a message to ``region``, in the route's order."""
    if target in settings.providers:
        return [target]
    route = settings.routes.get(target)
    if route is None:
        raise ConfigurationError(f"no provider account or route named {target!r} is configured")
    return list(route.get(region or "*") or route.get("*") or [])


def resolve_target(settings: Settings, name: str | None) -> tuple[str, ProviderAccount]:
    """The campaign's account or route name, and the account used for cost estimates."""
    target = name or settings.default_provider or next(iter(settings.providers), None)
    if target in settings.routes:
        first = candidates(settings, target, "*") or next(iter(settings.routes[target].values()), [])
        return target, settings.providers[first[0]]
    return settings.provider(target)


def check_campaign(settings: Settings, target: str, sender: str, template: str) -> None:
    """Refuse a campaign that some region of its route cannot carry at all (SubmissionError)."""
    route = settings.routes.get(target, {"*": [target]})
    for region, accounts in route.items():
        reasons = [r for a in accounts if (r := cannot_carry(settings.providers[a], sender, template))]
        if accounts and len(reasons) == len(accounts):
            where = "" if region == "*" else f" for {region}"
            msg = f"no provider account{where} can carry this campaign: " + "; ".join(sorted(set(reasons)))
            loc = "from" if all("sender" in r for r in reasons) else "message"
            raise SubmissionError(msg, [{"loc": [loc], "msg": msg}])
