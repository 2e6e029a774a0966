"""Inbound replies: a STOP-style keyword puts the sender on the suppression list.

Only the keyword decision and the number are kept; the reply's text is never stored or logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from campaigns.models import Campaign, Message, Suppression
from campaigns.recipients import InvalidRecipient, normalise

# The usual carrier opt-out keywords (CTIA/ICO practice), matched as the reply's first word.
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
_FIRST_WORD = re.compile(r"[A-Za-z\-]+")


@dataclass(frozen=True)
class InboundMessage:
    """An SMS a recipient sent back, as an adapter's ``parse_inbound`` returns it."""

    sender: str
    text: str


def is_opt_out(text: str) -> bool:
    match = _FIRST_WORD.search(text or "")
    return bool(match) and match.group(0).replace("-", "").upper() in STOP_WORDS


def record_inbound(s: Session, account: str, messages: list[InboundMessage]) -> int:
    """Suppress every sender that opted out, for each service that sent to that number through
    ``account`` (a STOP answers the services that wrote, not every service); returns how many
    (service, number) entries are new."""
    added = 0
    dialect = postgresql if s.bind.dialect.name == "postgresql" else sqlite
    for message in messages:
        if not is_opt_out(message.text):
            continue
        try:
            number = normalise(message.sender).e164
        except InvalidRecipient:
            continue
        senders = s.scalars(select(Campaign.service_id).distinct().join(Message).where(
            Message.phone == number, Message.provider == account))
        for service_id in senders:
            added += s.execute(
                dialect.insert(Suppression).values(service_id=service_id, phone=number, reason="replied STOP")
                .on_conflict_do_nothing().returning(Suppression.phone)
            ).first() is not None
    return added
