"""Provider adapters, one module per provider, looked up by the account's ``kind``.

Adapters (and their HTTP clients) are made once per process, after any fork.
"""

from __future__ import annotations

import os

from campaigns.errors import ConfigurationError
from campaigns.settings import get_settings
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

_cache: dict[str, Provider] = {}
_pid: list[int] = [0]


def get_provider(account_name: str) -> Provider:
    if _pid[0] != os.getpid():
        _cache.clear()
        _pid[0] = os.getpid()
    if account_name not in _cache:
        name, account = get_settings().provider(account_name)
        adapter = ADAPTERS.get(account.kind)
        if adapter is None:
            raise ConfigurationError(f"provider account {name!r} has unknown kind {account.kind!r}")
        _cache[account_name] = adapter(account)
    return _cache[account_name]


def reset() -> None:
    for provider in _cache.values():
        provider.close()
    _cache.clear()


__all__ = ["ADAPTERS", "Accepted", "Outgoing", "Provider", "get_provider", "reset"]
