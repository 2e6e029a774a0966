"""The provider contract every adapter implements, and the HTTP error mapping they share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Protocol

import httpx

from campaigns.errors import (
    Ambiguous, Permanent, ProviderError, ProviderUnavailable, RateLimited, Retryable,
)
from campaigns.reports import StatusReport
from campaigns.settings import ProviderAccount
from campaigns.statuses import MessageStatus


@dataclass(frozen=True)
class Outgoing:
    """What an adapter needs to send one message. ``reference`` is Herald's message id."""

    reference: str
    to: str  # E.164
    body: str
    sender: str
    callback_url: str | None = None


@dataclass(frozen=True)
class Accepted:
    provider_message_id: str
    raw_status: str
    status: MessageStatus
    cost: Decimal | None = None


class Provider(Protocol):
    kind: ClassVar[str]
    pushes_reports: ClassVar[bool]

    def send(self, message: Outgoing) -> Accepted: ...

    def parse_report(self, payload: dict) -> list[StatusReport]: ...

    def fetch_status(self, provider_message_id: str) -> StatusReport | None: ...

    def close(self) -> None: ...


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    value = response.headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else default
    except ValueError:
        return default


def classify(response: httpx.Response, detail: str = "") -> ProviderError:
    """Map an HTTP error answer to the error tree (4xx permanent or provider-level, 5xx retried)."""
    code = response.status_code
    msg = f"provider answered {code}" + (f": {detail}" if detail else "")
    if code == 429:
        return RateLimited(msg, retry_after=retry_after(response))
    if code in (401, 402, 403):
        return ProviderUnavailable(msg, status_code=code)
    if code >= 500:
        return Retryable(msg, status_code=code)
    return Permanent(msg, status_code=code)


@contextmanager
def transport_errors() -> Iterator[None]:
    """Map httpx failures: before the request left it is safe to retry; after, it is ambiguous."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise Retryable(f"could not reach the provider ({type(exc).__name__})") from exc
    except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise Ambiguous(f"no answer after the request was sent ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise Ambiguous(f"transport failure ({type(exc).__name__})") from exc


def http_client(account: ProviderAccount, **headers: str) -> httpx.Client:
    return httpx.Client(
        base_url=account.base_url.rstrip("/"),
        timeout=httpx.Timeout(account.timeout_s, connect=min(account.timeout_s, 5.0)),
        headers=headers,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
    )
