"""Message and campaign states, and the pure rules that move them."""

from __future__ import annotations

from enum import StrEnum


class MessageStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    # The request may have reached the provider but no answer came back, and no lookup could tell.
    UNKNOWN = "unknown"


class CampaignStatus(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


FINAL = frozenset(
    {MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.EXPIRED,
     MessageStatus.CANCELLED, MessageStatus.UNKNOWN}
)
PENDING = frozenset(set(MessageStatus) - FINAL)

# Statuses only move up this ladder; every final status shares the top rung so none replaces another.
_RANK = {
    MessageStatus.QUEUED: 0,
    MessageStatus.SENDING: 1,
    MessageStatus.SENT: 2,
}


def rank(status: MessageStatus) -> int:
    return _RANK.get(status, 3)


def can_move(current: MessageStatus, new: MessageStatus) -> bool:
    """A report may move a message forward only: duplicates and late reports change nothing."""
    return rank(new) > rank(current)


def fold_parts(total: int, parts: dict[int, MessageStatus]) -> MessageStatus:
    """One status for a message reported part by part (TikoSMS ``part``/``total_parts``).

    Any part failed or expired decides the message; it is delivered only once every part is;
    otherwise it is still on its way (``sent``).
    """
    for bad in (MessageStatus.FAILED, MessageStatus.EXPIRED):
        if bad in parts.values():
            return bad
    if all(parts.get(n) == MessageStatus.DELIVERED for n in range(1, total + 1)):
        return MessageStatus.DELIVERED
    return MessageStatus.SENT
