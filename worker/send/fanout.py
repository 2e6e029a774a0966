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
The window's advance is committed before its sends are published (see ``refill``); a crash in
between leaves them to the sweeper, a duplicate publish to the claim.

A campaign held back by its own ``concurrency`` *follows on* (``follow_on``): the send carrying its
token, once it has freed its slot, sends the next message itself, in its own thread, rather than
publishing it to wait behind every other campaign's window in the shared queue once per message
(a campaign of ``concurrency`` 1 would pay that wait for each of its sends). It is bounded by
``HERALD_FOLLOW_ON_S``, after which the next send is published as usual, so no campaign holds a
worker thread for long. A follow-on send is taken like a published one (checkpoint, stamp) and
goes back to the broker if its send raises; a worker killed in it leaves a queued message the
sweeper republishes, as for any send lost with a worker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

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


@dataclass(frozen=True)
class Refilled:
    """What a refill did: how many sends it published, and the message it left for its caller
    to send (``here``, when asked to keep one and the campaign follows on), carrying ``token``."""

    published: int
    queue: str = queues.SEND
    here: int | None = None
    token: Token | None = None


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
           seq: int | None = None, settings: Settings | None = None, keep: bool = False) -> Refilled:
    """Top the campaign's window up. ``seq`` is the token's number (None: take over the chain);
    ``keep``: the caller may send one message itself, if the campaign follows on."""
    settings = settings or get_settings()
    cid = uuid.UUID(campaign_id)
    with db.session() as s:
        campaign = s.scalar(select(Campaign).where(Campaign.id == cid).with_for_update())
        if campaign is None or campaign.status != CampaignStatus.RUNNING:
            return Refilled(0)
        if seq is not None and seq != campaign.window_seq:
            return Refilled(0)  # an older chain's token: the live one is elsewhere
        window = window_for(campaign, settings)
        queue = queues.send_queue(campaign.priority)
        start = checkpoint = campaign.fanout_checkpoint  # kept: the UPDATE below refreshes `campaign`
        live = campaign.window_seq + 1  # this refill's number, and its token's
        room = window.size - pacing.in_flight(s, cid, start)
        cooling = _cooldown(campaign, settings)
        published: list[int] = []
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
        here = published.pop(0) if keep and published and pacing.follows_on(window, campaign.concurrency) else None
        token = None
        if more:
            carrier = here if here is not None else published[len(published) // 2] if published else None
            token = Token(campaign_id, live, queue, carrier,
                          0.0 if carrier else (cooling or RECHECK_S))
        wait = (pacing.COOLDOWN if cooling else window.bound_by) if more else (
            pacing.SEND_WINDOW if _held(s, cid) else None)
        s.execute(update(Campaign).where(Campaign.id == cid).values(
            fanout_checkpoint=checkpoint, fanout_at=now(), window_seq=live,
            window_size=window.size, window_wait=wait))
    # Published after the commit: until then this transaction holds the rows it took, and a send
    # of one would wait for the lock inside its claim, its claim already sent: a worker killed
    # then leaves a claimed message it never sent. A refill that cannot publish gives the window
    # back; one killed here leaves stamped messages the sweeper republishes.
    try:
        if published:
            publish(published, queue, token, campaign_id)
        if token and token.carrier is None:
            schedule(token)
    except BaseException:
        _give_back(cid, start, live)
        raise
    return Refilled(len(published), queue, here, token)


def _give_back(cid: uuid.UUID, checkpoint: int, seq: int) -> None:
    """A refill (``seq``) whose sends did not all reach the broker puts its messages past the
    checkpoint again, for the next refill, unless another refill came since. Its token stays
    live: if the carrier reached the broker it goes on, else the sweeper restarts the chain. Any
    send that did reach the broker twice is deduplicated by the claim."""
    with db.session() as s:
        s.execute(update(Campaign).where(Campaign.id == cid, Campaign.window_seq == seq)
                  .values(fanout_checkpoint=checkpoint))


def follow_on(campaign_id: str, seq: int, publish: Publish, schedule: Callable[[Token], None],
              send: Callable[[int, str, str], None], budget_s: float) -> None:
    """The refill a finished send's token asks for. While the campaign follows on and
    ``budget_s`` has not passed, its next message is sent here (``send(id, queue, campaign_id)``:
    the send task's own path) and the window refilled again with the token that message carries."""
    deadline = time.monotonic() + budget_s
    held: Token | None = None  # a token of this thread's own, newer than the task's
    while True:
        try:
            done = refill(campaign_id, publish, schedule, seq, keep=time.monotonic() < deadline)
        except BaseException:
            if held is not None:  # the task's retry would bring back its own, older token
                schedule(replace(held, carrier=None, delay_s=RECHECK_S))
            raise
        if done.here is None:
            return
        try:
            send(done.here, done.queue, campaign_id)
        except BaseException:
            # Not lost with this thread: the broker has it again, with its token (the claim dedups).
            publish([done.here], done.queue, done.token, campaign_id)
            raise
        if done.token is None:  # the campaign's last message
            return
        held, seq = done.token, done.token.seq


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
