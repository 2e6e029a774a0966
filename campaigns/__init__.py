"""Herald's domain and storage: the service functions every interface calls."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from campaigns.schema import CampaignSpec, Receipt, Submission


def submit(submission: Submission | CampaignSpec | dict, recipients: Iterable[Any] | None = None, *,
           service: str | int | None = None) -> Receipt:
    """Store a campaign of ``service`` (a name or id; default ``default``) and start dispatching it;
    returns the receipt.

    ``submission`` is a :class:`Submission` (or its dict form, with ``from``, ``message`` and
    ``recipients``), or a :class:`CampaignSpec` (or dict) with ``recipients`` given as any
    iterable, which is streamed. A malformed submission raises SubmissionError naming each field;
    ``"priority": "high"`` from a service not granted it raises NotPermitted (a SubmissionError).
    """
    from campaigns import intake, ports, services
    from campaigns.schema import parse
    from campaigns.statuses import CampaignStatus

    if isinstance(submission, dict):
        submission = parse(Submission if recipients is None else CampaignSpec, submission)
    elif recipients is None and not isinstance(submission, Submission):
        raise TypeError("a CampaignSpec needs its recipients")
    if recipients is None:
        recipients = submission.recipients
    service_id = services.resolve(service)
    services.check_priority(service_id, submission.priority)  # every interface alike
    receipt = intake.submit(submission, recipients, service_id=service_id)
    if receipt.status == CampaignStatus.RUNNING:  # a scheduled one is released by the scheduler
        ports.start_dispatch(receipt.campaign_id)
    return receipt


__all__ = ["submit", "Submission", "CampaignSpec", "Receipt"]
