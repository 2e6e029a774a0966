"""Provider adapters, one module per provider, looked up by the account's ``kind``.

Adapters (and their HTTP clients) are made once per process (campaigns.resources), and again
when the settings are replaced.
"""

from __future__ import annotations

from campaigns.errors import ConfigurationError
from campaigns.ports import Capabilities
from campaigns.resources import per_process
from campaigns.settings import generation, get_settings
from worker.providers.aikdata import AikDataProvider
from worker.providers.base import Accepted, Outgoing, Provider
from worker.providers.laravel import LaravelProvider
from worker.providers.mobsms import MobSmsProvider
from worker.providers.smsforai import SmsForAiProvider
from worker.providers.tikosms import TikoSmsProvider

ADAPTERS: dict[str, type] = {
    adapter.kind: adapter
    for adapter in (AikDataProvider, LaravelProvider, MobSmsProvider, SmsForAiProvider, TikoSmsProvider)
}
# What each kind can do, as the domain sees it (registered through campaigns.ports).
KINDS: dict[str, Capabilities] = {kind: adapter.capabilities() for kind, adapter in ADAPTERS.items()}


def get_provider(account_name: str) -> Provider:
    return _adapter(account_name, generation())


@per_process
def _adapter(account_name: str, _generation: int) -> Provider:
    name, account = get_settings().provider(account_name)
    adapter = ADAPTERS.get(account.kind)
    if adapter is None:
        raise ConfigurationError(f"provider account {name!r} has unknown kind {account.kind!r}")
    return adapter(account)


__all__ = ["ADAPTERS", "KINDS", "Accepted", "Outgoing", "Provider", "get_provider"]
