"""HMAC tokens for webhook URLs and signatures for outbound callbacks."""

from __future__ import annotations

import functools
import hashlib
import hmac

from campaigns.settings import get_settings


def _token(subject: str, secret: bytes | None = None) -> str:
    return hmac.new(secret or get_settings().secret, subject.encode(), hashlib.sha256).hexdigest()[:40]


def secret_fingerprint() -> str:
    """Eight hex digits naming the signing key without revealing it (an HMAC of a fixed string):
    processes that show different ones reject each other's webhook tokens."""
    return _token("herald-secret-fingerprint")[:8]


def webhook_token(account: str, campaign_id: str) -> str:
    """Unguessable, bound to one provider account and one campaign: a provider can report only
    on what it was given, and the token is worthless under another account's path."""
    return _token(f"webhook:{account}:{campaign_id}")


def valid_webhook_token(account: str, campaign_id: str, token: str) -> bool:
    return hmac.compare_digest(webhook_token(account, campaign_id), token)


def webhook_url(account: str, campaign_id: str) -> str:
    settings = get_settings()
    return _webhook_url(settings.public_url.rstrip("/"), settings.secret, account, campaign_id)


@functools.lru_cache(maxsize=4096)
def _webhook_url(base: str, secret: bytes, account: str, campaign_id: str) -> str:
    # Every send names its campaign's URL: an HMAC each time was 1% of a worker's CPU (py-spy).
    return f"{base}/v1/webhooks/{account}/{campaign_id}/{_token(f'webhook:{account}:{campaign_id}', secret)}"


def account_webhook_token(account: str, event: str) -> str:
    """Bound to one provider account and one event kind (``status`` or ``incoming``)."""
    return _token(f"account-webhook:{account}:{event}")


def valid_account_webhook_token(account: str, event: str, token: str) -> bool:
    return hmac.compare_digest(account_webhook_token(account, event), token)


def account_webhook_url(account: str, event: str) -> str:
    """The URL to register at the provider's account-level webhook settings (`herald webhooks`)."""
    base = get_settings().public_url.rstrip("/")
    return f"{base}/v1/webhooks/{account}/{event}/{account_webhook_token(account, event)}"


def account_webhooks() -> list[dict[str, str]]:
    """Every configured account's account-level webhook URLs (`herald webhooks`, `herald doctor`)."""
    return [{"account": account, "event": event, "url": account_webhook_url(account, event)}
            for account in get_settings().providers for event in ("status", "incoming")]


def sign_callback(timestamp: str, body: bytes, key: bytes | None = None) -> str:
    """``sha256=`` HMAC over ``timestamp.body``: the receiver recomputes it and rejects stale timestamps."""
    key = key if key is not None else get_settings().callback_key
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"
