"""Outbound callbacks: a campaign's summary to its ``callback_url`` when it ends, and each
recipient's final status to that recipient's own ``callback_url``.

Callbacks are queued as rows in the transaction that makes the state they announce, then
delivered by a periodic job: signed (HMAC-SHA256 over ``timestamp.body``), retried with backoff
until a 2xx, given up after ``HERALD_CALLBACK_MAX_ATTEMPTS``. A row is claimed by one
conditional UPDATE, so two schedulers never deliver the same attempt twice.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from campaigns import clock, db
from campaigns.aggregate import awaiting_outcome, campaign_report
from campaigns.models import Callback, Campaign, Message
from campaigns.schema import url_problem
from campaigns.settings import get_settings
from campaigns.signing import sign_callback

log = logging.getLogger(__name__)

CAMPAIGN, MESSAGE = "campaign", "message"
# A claimed delivery not recorded within this long (the deliverer died) is due again.
LEASE_S = 120
RETRY_BASE_S = 5.0
RETRY_CAP_S = 3600.0
# Short: a receiver that stalls must not hold the delivery job.
CALLBACK_TIMEOUT = httpx.Timeout(5.0, connect=3.0)


UNRESOLVED = "the callback host does not resolve"


def resolve(host: str, port: int | None) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (empty when it does not resolve).
    Resolved once per delivery: the request then goes to one of these (``pinned``), so a name
    that answers differently a moment later (DNS rebinding) cannot move it elsewhere."""
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(info[4][0].split("%", 1)[0] for info in infos))


def refused_address(addresses: list[str]) -> str | None:
    """Why a callback may not go to these addresses: none, or any is loopback, private, link-local,
    multicast, reserved or unspecified (the host's own network, cloud metadata at 169.254.169.254,
    ...). None when every address is public. HERALD_CALLBACK_ALLOW_PRIVATE lifts it."""
    if not addresses:
        return UNRESOLVED
    for text in addresses:
        address = ipaddress.ip_address(text)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if (address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
                or address.is_reserved or address.is_unspecified or not address.is_global):
            return "the callback host resolves to a non-public address"
    return None


def pinned(url: str, address: str) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """``url`` sent to ``address``: the address in the URL (httpx connects there without resolving
    again), the name in the Host header, and for https the name as the TLS server name, so the
    certificate is still checked against the name, not the address."""
    original = httpx.URL(url)
    extensions = {"sni_hostname": original.host} if original.scheme == "https" else {}
    return original.copy_with(host=address), {"host": original.netloc.decode("ascii")}, extensions


def retry_delay(attempts: int) -> float:
    """Seconds before the next delivery after ``attempts`` failed ones: 5, 10, 20, ... capped at 1 h."""
    return min(RETRY_CAP_S, RETRY_BASE_S * 2 ** max(attempts - 1, 0))


def _insert_ignoring_duplicates(s: Session):
    dialect = postgresql if s.bind.dialect.name == "postgresql" else sqlite
    return dialect.insert(Callback)


def queue_message_callback(s: Session, campaign_id: uuid.UUID, message_id: int, url: str) -> None:
    s.execute(_insert_ignoring_duplicates(s).values(
        kind=MESSAGE, campaign_id=campaign_id, message_id=message_id, url=url,
        attempts=0, next_attempt_at=clock.now(),
    ).on_conflict_do_nothing())


def queue_final_callbacks(s: Session, campaign_id: uuid.UUID) -> None:
    """On completion or cancellation: the campaign summary, and every recipient not yet told."""
    now = clock.now()
    url = s.scalar(select(Campaign.callback_url).where(Campaign.id == campaign_id))
    if url:
        s.execute(_insert_ignoring_duplicates(s).values(
            kind=CAMPAIGN, campaign_id=campaign_id, message_id=0, url=url, attempts=0,
            next_attempt_at=now,
        ).on_conflict_do_nothing())
    # Statuses reached without a report (expired, cancelled, failed at send, silent providers).
    told = select(
        literal(MESSAGE), Message.campaign_id, Message.id, Message.callback_url, literal(0), literal(now),
    ).where(Message.campaign_id == campaign_id, Message.callback_url.is_not(None), ~awaiting_outcome())
    s.execute(_insert_ignoring_duplicates(s).from_select(
        ["kind", "campaign_id", "message_id", "url", "attempts", "next_attempt_at"], told,
    ).on_conflict_do_nothing())


def _body(kind: str, campaign_id: uuid.UUID, message_id: int) -> dict[str, Any]:
    if kind == CAMPAIGN:
        report = campaign_report(campaign_id)
        return {"event": f"campaign.{report['status']}", "campaign": report}
    with db.session() as s:
        m = s.get(Message, message_id)
    # The recipient's own reference identifies it; the number itself is never sent back out.
    return {
        "event": "message.final", "campaign_id": str(campaign_id), "message_id": m.id,
        "client_ref": m.client_ref, "status": m.status, "raw_status": m.raw_status, "error": m.error,
        "segments": m.segments, "cost": str(m.cost) if m.cost is not None else None,
        "sent_at": _iso(m.sent_at), "final_at": _iso(m.final_at),
    }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def signed_request(body: dict, now: datetime) -> tuple[bytes, dict[str, str]]:
    content = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(now.timestamp()))
    return content, {
        "content-type": "application/json",
        "x-herald-event": body["event"],
        "x-herald-timestamp": timestamp,
        "x-herald-signature": sign_callback(timestamp, content),
    }


def deliver_due(client: httpx.Client, limit: int = 100) -> int:
    """Deliver callbacks that are due; returns how many landed."""
    now = clock.now()
    with db.session() as s:
        due = list(s.scalars(
            select(Callback.id).where(Callback.delivered_at.is_(None), Callback.gave_up_at.is_(None),
                                      Callback.next_attempt_at <= now)
            .order_by(Callback.next_attempt_at).limit(limit)
        ))
    landed = 0
    for callback_id in due:
        landed += _deliver_one(client, callback_id, now)
    return landed


def _deliver_one(client: httpx.Client, callback_id: int, now: datetime) -> bool:
    with db.session() as s:
        row = s.execute(
            update(Callback)
            .where(Callback.id == callback_id, Callback.delivered_at.is_(None),
                   Callback.gave_up_at.is_(None), Callback.next_attempt_at <= now)
            .values(attempts=Callback.attempts + 1, next_attempt_at=now + timedelta(seconds=LEASE_S))
            .returning(Callback.kind, Callback.campaign_id, Callback.message_id, Callback.url,
                       Callback.attempts)
        ).first()
    if row is None:
        return False  # another scheduler has it
    extra = {"campaign_id": str(row.campaign_id), "message_id": row.message_id or None,
             "callback_id": callback_id, "attempt": row.attempts}
    error = url_problem(row.url)
    addresses: list[str] = []
    if error is None:
        parts = urlsplit(row.url)
        # Resolved and checked at every attempt (DNS answers change), then connected to as checked.
        addresses = resolve(parts.hostname, parts.port)
        if not get_settings().callback_allow_private:
            error = refused_address(addresses)
        elif not addresses:
            error = UNRESOLVED
    try:
        if error is None:
            content, headers = signed_request(_body(row.kind, row.campaign_id, row.message_id), now)
            response = _post(client, row.url, addresses, content, headers)
            if not 200 <= response.status_code < 300:
                error = f"answered {response.status_code}"
    except httpx.HTTPError as exc:
        error = f"transport failure ({type(exc).__name__})"
    values: dict[str, Any]
    if error is None:
        values = {"delivered_at": clock.now(), "last_error": None}
        log.info("callback delivered", extra=extra)
    elif row.attempts >= get_settings().callback_max_attempts:
        values = {"gave_up_at": clock.now(), "last_error": error}
        log.warning("callback given up", extra={**extra, "error": error})
    else:
        values = {"next_attempt_at": clock.now() + timedelta(seconds=retry_delay(row.attempts)),
                  "last_error": error}
        log.info("callback will be retried", extra={**extra, "error": error})
    with db.session() as s:
        s.execute(update(Callback).where(Callback.id == callback_id).values(**values))
    return error is None


def _post(client: httpx.Client, url: str, addresses: list[str], content: bytes,
          headers: dict[str, str]) -> httpx.Response:
    """POST to the first of ``addresses`` that accepts a connection (as a plain connect tries each
    address of a name in turn)."""
    def to(address: str) -> httpx.Response:
        target, host, extensions = pinned(url, address)
        # Never follows a redirect: a public URL could otherwise bounce the POST inward.
        return client.post(target, content=content, headers={**headers, **host}, extensions=extensions,
                           follow_redirects=False, timeout=CALLBACK_TIMEOUT)

    for address in addresses[:-1]:
        try:
            return to(address)
        except httpx.ConnectError:
            continue
    return to(addresses[-1])
