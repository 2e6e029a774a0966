"""Fan-out: a bounded window of send tasks per running campaign, topped up from the database.

``refill`` publishes the campaign's next queued messages (keyset by id after ``fanout_checkpoint``)
until the window (campaigns/pacing.py) is full, and hands one of the sends it published a
*refill token*: the send task that carries it calls ``refill`` again once it has run, by which
time about half the window has left ``queued``. When nothing may be published (the window is
full, the account cools down) the token rides on a refill task of its own, a moment later. So
no task lives long, the broker holds one window per campaign, and the window follows the sends.

Exactly one token is live per campaign: it carries the campaign's ``window_seq``, which each
refill bumps under the campaign row's lock, so a redelivered, duplicated or superseded token
finds a newer number and does nothing. A refill without a token (the campaign starts, resumes,
or the sweeper restarts a chain whose token was lost) takes over from whatever chain was live.
A crash after publishing and before the commit republishes those sends; the claim dedups them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import exists, select, update

from campaigns import db, messages, pacing, windows
from campaigns.clock import now
from campaigns.models import Campaign, Message
from campaigns.settings import Settings, get_settings
from campaigns.statuses import CampaignStatus, MessageStatus
from worker import queues
from worker.send import cooldown

# A full window is looked at again this soon (a token task with this countdown).
RECHECK_S = 0.2


@dataclass(frozen=True)
class Token:
    """What a refill hands on: which send carries the next token (None: a refill task of its
    own, after ``delay_s``), the queue of the campaign's sends, and the sequence number."""

    campaign_id: str
    seq: int
    queue: str
    carrier: int | None = None
    delay_s: float = 0.0


# publish(ids, queue, token, campaign_id) puts one send per id on ``queue``; the send of
# ``token.carrier`` carries the token. schedule(token) publishes a refill task for the token,
# after its delay.
Publish = Callable[[list[int], str, "Token | None", str], None]


def window_for(campaign: Campaign, settings: Settings) -> pacing.Window:
    """The campaign's window from its concurrency and the limits of every account it may use."""
    names = [campaign.provider] if campaign.provider in settings.providers else sorted(
        {a for accounts in settings.routes.get(campaign.provider or "", {}).values() for a in accounts})
    if not names and settings.providers:
        names = [settings.provider(None)[0]]
    sizes = [pacing.window_size(settings.dispatch_window, concurrency=campaign.concurrency,
                                max_in_flight=settings.global_max_in_flight,
                                rate_per_s=settings.global_rate_per_s, burst=settings.global_burst,
                                rate_horizon_s=settings.throttle_inline_wait_s)]
    for name in names:
        acct = settings.providers[name]
        sizes.append(pacing.window_size(settings.dispatch_window, concurrency=campaign.concurrency,
                                        max_in_flight=acct.max_in_flight, rate_per_s=acct.rate_per_s,
                                        burst=acct.burst, rate_horizon_s=settings.throttle_inline_wait_s))
    return min(sizes, key=lambda w: w.size)


def refill(campaign_id: str, publish: Publish, schedule: Callable[[Token], None],
           seq: int | None = None, settings: Settings | None = None) -> int:
    """Top the campaign's window up; returns how many sends were published. ``seq`` is the
    token's number (None: take over the chain)."""
    settings = settings or get_settings()
    cid = uuid.UUID(campaign_id)
    with db.session() as s:
        campaign = s.scalar(select(Campaign).where(Campaign.id == cid).with_for_update())
        if campaign is None or campaign.status != CampaignStatus.RUNNING:
            return 0
        if seq is not None and seq != campaign.window_seq:
            return 0  # an older chain's token: the live one is elsewhere
        window = window_for(campaign, settings)
        queue = queues.send_queue(campaign.priority)
        room = window.size - pacing.in_flight(s, cid, campaign.fanout_checkpoint)
        cooling = _cooldown(campaign, settings)
        published: list[int] = []
        checkpoint = campaign.fanout_checkpoint
        while room > 0 and not cooling:
            ids = messages.take_for_window(s, cid, checkpoint, room)
            if not ids:
                break
            checkpoint = ids[-1]
            due = windows.hold_outside_window(campaign.send_window, ids, s=s) if campaign.send_window else ids
            published += due
            room -= len(due)
        more = s.scalar(select(exists().where(
            Message.campaign_id == cid, Message.status == MessageStatus.QUEUED,
            Message.id > checkpoint, Message.not_before.is_(None))))
        token = None
        if more:
            carrier = published[len(published) // 2] if published else None
            token = Token(campaign_id, campaign.window_seq + 1, queue, carrier,
                          0.0 if carrier else (cooling or RECHECK_S))
        wait = (pacing.COOLDOWN if cooling else window.bound_by) if more else (
            pacing.SEND_WINDOW if _held(s, cid) else None)
        # Published before the commit: a crash here republishes, and the claim dedups.
        if published:
            publish(published, queue, token, campaign_id)
        if token and token.carrier is None:
            schedule(token)
        s.execute(update(Campaign).where(Campaign.id == cid).values(
            fanout_checkpoint=checkpoint, fanout_at=now(), window_seq=campaign.window_seq + 1,
            window_size=window.size, window_wait=wait))
    return len(published)


def _cooldown(campaign: Campaign, settings: Settings) -> float:
    """Seconds the campaign's account still waits out a 429 (0 for a route: its sends fail over)."""
    if campaign.provider not in settings.providers:
        return 0.0
    return cooldown.remaining(campaign.provider)


def _held(s, cid: uuid.UUID) -> bool:
    return bool(s.scalar(select(exists().where(
        Message.campaign_id == cid, Message.status == MessageStatus.QUEUED, Message.not_before.is_not(None)))))


def fan_out(campaign_id: str, publish: Callable[[list[int]], None], batch: int) -> int:
    """Publish every queued message past the checkpoint at once, unbounded; returns how many.

    Not the dispatch path (that is ``refill``): ``herald bench``'s fan-out stage times the
    publishing path with it, and the dispatch stage then drains what it published.
    """
    cid = uuid.UUID(campaign_id)
    published = 0
    while True:
        with db.session() as s:
            campaign = s.get(Campaign, cid)
            if campaign is None or campaign.status != CampaignStatus.RUNNING:
                return published
            ids = list(s.scalars(
                select(Message.id)
                .where(Message.campaign_id == cid, Message.id > campaign.fanout_checkpoint,
                       Message.status == MessageStatus.QUEUED)
                .order_by(Message.id).limit(batch)
            ))
        if not ids:
            return published
        due = windows.hold_outside_window(campaign.send_window, ids) if campaign.send_window else ids
        if due:
            publish(due)
        published += len(due)
        with db.session() as s:
            s.execute(update(Campaign).where(Campaign.id == cid)
                      .values(fanout_checkpoint=ids[-1], fanout_at=now()))
