"""The provider contract every adapter implements, and the HTTP error mapping they share.

Every adapter has ``send``, ``parse_report``, ``fetch_status`` and ``close``. Optional
capabilities, each announced by a class attribute so callers ask before they call:

- ``can_poll``: ``fetch_status(provider_message_id)`` works (False: the provider has no lookup).
- ``lookup_by_reference``: ``fetch_by_reference(query)`` finds a send whose answer Herald may
  never have read (timeout after the request left, a worker lost mid-send) from what Herald
  knows of it (``SentQuery``). A report is positive evidence that names this message; None proves
  nothing: no provider document promises that its listing holds every message it took, so
  "not found" never means "not sent" (the caller falls back to its stale-claim policy, never to
  a resend).
- ``max_sender``, ``max_chars``: the longest sender and text the API takes.
- ``balance()`` and ``price(region)``: None where the API has no such endpoint.
- ``cancel(provider_message_id)``: True if the provider cancelled it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import ClassVar, Protocol

import httpx

from campaigns.errors import (
    Ambiguous, NoRoute, Permanent, ProviderError, ProviderUnavailable, RateLimited, Retryable,
)
from campaigns.ports import Capabilities
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
class SentQuery:
    """What Herald knows of a send whose answer it may not have: what a lookup matches on."""

    reference: str  # Herald's message id
    to: str  # E.164
    body: str
    since: datetime  # when the send was claimed: the provider cannot have taken it before
    provider_message_id: str | None = None  # the provider's id, when its send answer was read


@dataclass(frozen=True)
class Accepted:
    provider_message_id: str | None  # None where the provider returns no id (Laravel gateway)
    raw_status: str
    status: MessageStatus
    cost: Decimal | None = None


class Provider(Protocol):
    kind: ClassVar[str]
    pushes_reports: ClassVar[bool]
    can_poll: ClassVar[bool]
    lookup_by_reference: ClassVar[bool]

    def send(self, message: Outgoing) -> Accepted: ...

    def parse_report(self, payload: dict) -> list[StatusReport]: ...

    def fetch_status(self, provider_message_id: str) -> StatusReport | None: ...

    def fetch_by_reference(self, query: SentQuery) -> StatusReport | None: ...

    def balance(self) -> Decimal | None: ...

    def price(self, region: str) -> Decimal | None: ...

    def cancel(self, provider_message_id: str) -> bool: ...

    def close(self) -> None: ...


class BaseProvider:
    """Defaults for the optional capabilities: an adapter overrides what its API has."""

    kind: ClassVar[str]
    pushes_reports: ClassVar[bool] = False
    can_poll: ClassVar[bool] = True
    lookup_by_reference: ClassVar[bool] = False
    # What the API takes: a longer sender or text is refused at intake and by routing.
    max_sender: ClassVar[int | None] = None
    max_chars: ClassVar[int | None] = None
    client: httpx.Client

    @classmethod
    def capabilities(cls) -> Capabilities:
        return Capabilities(cls.pushes_reports, cls.can_poll, cls.lookup_by_reference,
                            cls.max_sender, cls.max_chars)

    def parse_report(self, payload: dict) -> list[StatusReport]:
        return []

    def fetch_status(self, provider_message_id: str) -> StatusReport | None:
        raise NotImplementedError(f"{self.kind} has no message lookup")

    def fetch_by_reference(self, query: SentQuery) -> StatusReport | None:
        raise NotImplementedError(f"{self.kind} cannot look a message up by Herald's reference")

    def balance(self) -> Decimal | None:
        return None

    def price(self, region: str) -> Decimal | None:
        return None

    def cancel(self, provider_message_id: str) -> bool:
        return False

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), missing_ok: bool = False,
             **kwargs) -> dict | None:
        """One request: transport failures mapped, a non-``ok`` answer classified, the JSON body
        returned (None for a 404 when ``missing_ok``: the provider has no such message)."""
        with transport_errors():
            response = self.client.request(method, path, **kwargs)
        if missing_ok and response.status_code == 404:
            return None
        data = json_body(response)
        if response.status_code not in ok:
            raise classify(response, error_text(data))
        return data


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """Seconds to wait: ``Retry-After``, else ``x-ratelimit-reset`` (a delay or a Unix time)."""
    for header in ("retry-after", "x-ratelimit-reset"):
        value = response.headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        if seconds > 1_000_000_000:  # an absolute Unix time, as Laravel's throttle sends it
            seconds -= time.time()
        return max(seconds, 0.0)
    return default


def json_body(response: httpx.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def to_decimal(value) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


def parse_time(value) -> datetime | None:
    """ISO 8601 (``2026-03-12T10:00:05Z``) or ``2025-08-06 12:35:18``, taken as UTC when naive."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def reference_id(value) -> int | None:
    """Herald's message id echoed back by the provider (client_ref, my_id), if it is one."""
    text = str(value) if value is not None else ""
    return int(text) if text.isdigit() else None


def error_text(data: dict) -> str:
    """The provider's own error words (never echoing a number or text back into our logs)."""
    return str(data.get("error") or data.get("message") or "")[:200]


def classify(response: httpx.Response, detail: str = "", *, no_route: bool = False,
             provider_level: bool = False) -> ProviderError:
    """Map an HTTP error answer to the error tree.

    401/402/403 stop the account (fail over); ``no_route`` marks an answer that only this
    destination cannot be carried (fail over, account stays usable); ``provider_level`` marks a
    4xx that is the account's problem, not the message's. 429 waits; 5xx retries; other 4xx fail
    the message for good.
    """
    code = response.status_code
    msg = f"provider answered {code}" + (f": {detail}" if detail else "")
    if code == 429:
        return RateLimited(msg, retry_after=retry_after(response))
    if no_route:
        return NoRoute(msg, status_code=code)
    if code in (401, 402, 403) or provider_level:
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


def bearer_client(account: ProviderAccount, **headers: str) -> httpx.Client:
    """The HTTP client of a provider that takes the account's token as a Bearer token."""
    return http_client(account, Authorization=f"Bearer {account.token.get_secret_value()}", **headers)


def http_client(account: ProviderAccount, **headers: str) -> httpx.Client:
    return httpx.Client(
        base_url=account.base_url.rstrip("/"),
        timeout=httpx.Timeout(account.timeout_s, connect=min(account.timeout_s, 5.0)),
        headers=headers,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
    )
