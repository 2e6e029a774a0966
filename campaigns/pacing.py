"""A running campaign's dispatch window: how many of its sends may be out at once, and why it waits.

The broker holds at most one window of sends per running campaign (worker/send/fanout.py tops
it up from the database as messages leave ``queued``), so its memory grows with the number of
running campaigns, not with their size, and a small campaign waits behind at most one window
of a large one. The window is never larger than the campaign's own limits let run at once: a
send its limit would refuse is not published, so it never goes to the back of everyone's queue.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns.models import Campaign, Message
from campaigns.statuses import CampaignStatus, MessageStatus

# Why a window publishes nothing more for now (``Campaign.window_wait``).
WINDOW_FULL = "window full"  # the cap: the workers' share a campaign may hold
CONCURRENCY = "concurrency"  # the campaign's own `concurrency`, or an in-flight limit
RATE = "rate"  # a rate limit of its account or of all accounts
COOLDOWN = "cooldown"  # its account waits out a 429 or an open circuit
SEND_WINDOW = "send window"  # its remaining recipients wait for their local send window


@dataclass(frozen=True)
class Window:
    size: int
    bound_by: str  # what waiting on a full window of this size is called


def window_size(cap: int, *, concurrency: int | None = None, max_in_flight: int | None = None,
                rate_per_s: float | None = None, burst: int = 1, rate_horizon_s: float = 0.5) -> Window:
    """The smallest of the cap and what the limits let run at once. A rate lets through
    ``rate * horizon + burst`` sends within the horizon (the throttle's inline wait): publishing
    more would only have the throttle refuse them."""
    candidates = [Window(max(cap, 1), WINDOW_FULL)]
    for limit in (concurrency, max_in_flight):
        if limit:
            candidates.append(Window(limit, CONCURRENCY))
    if rate_per_s:
        candidates.append(Window(max(1, math.ceil(rate_per_s * rate_horizon_s) + burst), RATE))
    return min(candidates, key=lambda w: w.size)


def follows_on(window: Window, concurrency: int | None) -> bool:
    """Whether the send carrying the campaign's refill token, once done, sends its next message
    itself (worker/send/fanout.py): only when the campaign's own ``concurrency`` bounds its
    window. Each of its few slots would otherwise wait behind the other campaigns' windows in
    the shared queue once per message; a window bound by a limit other campaigns share
    (an account's in-flight limit or rate) goes through the queue, where they take turns."""
    return bool(concurrency) and window.bound_by == CONCURRENCY and window.size == concurrency


def in_flight(s: Session, campaign_id: uuid.UUID, checkpoint: int) -> int:
    """Sends out of the window's hands: published and still ``queued`` (in the broker, a worker's
    prefetch, or a retry's countdown), or ``sending``. Messages held for their send window are
    not out: nothing publishes them until the window opens (scheduler/release.py)."""
    published = select(func.count()).where(
        Message.campaign_id == campaign_id, Message.status == MessageStatus.QUEUED,
        Message.id <= checkpoint, Message.not_before.is_(None)).scalar_subquery()
    sending = select(func.count()).where(
        Message.campaign_id == campaign_id, Message.status == MessageStatus.SENDING).scalar_subquery()
    return s.scalar(select(published + sending))


def window_report(s: Session, campaign: Campaign) -> dict | None:
    """A running or paused campaign's window as its last refill sized it, the sends out of it
    now, and why it last waited (None: it was publishing, or had nothing left to publish)."""
    if campaign.status not in (CampaignStatus.RUNNING, CampaignStatus.PAUSED):
        return None
    return {"size": campaign.window_size, "in_flight": in_flight(s, campaign.id, campaign.fanout_checkpoint),
            "waiting": campaign.window_wait if campaign.status == CampaignStatus.RUNNING else "paused"}
