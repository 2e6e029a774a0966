"""HMAC tokens for webhook URLs and signatures for outbound callbacks."""

from __future__ import annotations

import hashlib
import hmac

from campaigns.settings import get_settings


def webhook_token(campaign_id: str) -> str:
    """Unguessable, bound to one campaign: a provider can report only on what it was given."""
    digest = hmac.new(get_settings().secret, f"webhook:{campaign_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:40]


def valid_webhook_token(campaign_id: str, token: str) -> bool:
    return hmac.compare_digest(webhook_token(campaign_id), token)


def webhook_url(account: str, campaign_id: str) -> str:
    base = get_settings().public_url.rstrip("/")
    return f"{base}/v1/webhooks/{account}/{campaign_id}/{webhook_token(campaign_id)}"
