"""Recurring campaigns: a beat entry of the user's own that sends ``campaigns.submit`` each period.

Beat sends the same kwargs every time, so the submission names its slot length and writes
``{slot}`` in its idempotency key; the key is filled with the start of the slot the task runs in.
Two beats (or a redelivered task) in one slot submit one campaign; the next slot makes a new one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from campaigns.errors import SubmissionError

SLOT = "{slot}"


def resolve_slot(submission: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Return the submission with ``{slot}`` in ``idempotency_key`` filled and ``slot_seconds`` removed."""
    submission = dict(submission)
    slot_s = submission.pop("slot_seconds", None)
    key = submission.get("idempotency_key") or ""
    if slot_s is None and SLOT not in key:
        return submission
    if SLOT not in key:
        raise _invalid("slot_seconds", "slot_seconds needs an idempotency_key containing {slot}")
    if not isinstance(slot_s, int | float) or isinstance(slot_s, bool) or slot_s < 1:
        raise _invalid("slot_seconds", "an idempotency_key with {slot} needs slot_seconds, a positive number")
    start = datetime.fromtimestamp(now.timestamp() // slot_s * slot_s, timezone.utc)
    submission["idempotency_key"] = key.replace(SLOT, start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return submission


def _invalid(field: str, msg: str) -> SubmissionError:
    return SubmissionError(msg, [{"loc": [field], "msg": msg}])
