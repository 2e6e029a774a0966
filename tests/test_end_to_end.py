"""A campaign through real PostgreSQL, Redis, a `celery worker` subprocess and the emulator."""

from collections import Counter

import phonenumbers
from sqlalchemy import func, select

import campaigns
from campaigns import db
from campaigns.models import Message
from campaigns.aggregate import campaign_report
from campaigns.schema import CampaignSpec
from tests.conftest import wait_for
from worker.cli import demo


def expected_unique(raw_numbers: list[str], region: str) -> set[str]:
    """Computed straight from phonenumbers, independently of Herald's intake."""
    out = set()
    for raw in raw_numbers:
        try:
            n = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(n):
            out.add(phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164))
    return out


def test_campaign_travels_end_to_end(services, start_worker, emulator):
    start_worker("--pool", "threads", "--concurrency", "8")
    generated = demo.generate(200, seed=11)
    unique = expected_unique(generated.recipients, "GB")
    spec = CampaignSpec.model_validate({"from": "Herald", "message": "Your code is 1234",
                                        "default_region": "GB"})

    receipt = campaigns.submit(spec, generated.recipients)

    assert receipt.submitted == 200
    assert receipt.accepted == len(unique) == generated.unique
    assert receipt.duplicates == generated.duplicates
    assert receipt.invalid == generated.invalid
    report = wait_for(lambda: (r := campaign_report(receipt.campaign_id))["status"] == "completed" and r,
                      timeout=90, message="the campaign to complete")

    with db.session() as s:
        rows = s.execute(select(Message.id, Message.phone).where(
            Message.campaign_id == receipt.campaign_id)).all()
        by_status = dict(s.execute(select(Message.status, func.count()).where(
            Message.campaign_id == receipt.campaign_id).group_by(Message.status)).all())
    ours = {str(r.id): r.phone for r in rows}
    sent = Counter("+" + rec["to"] for rec in emulator.records()["records"] if rec["client_ref"] in ours)
    assert set(sent) == unique
    assert set(sent.values()) == {1}, "a recipient was sent more than once"
    assert report["accepted"] == len(unique)
    assert report["delivered"] == by_status.get("delivered", 0) == len(unique)
    assert report["final"] == len(unique)
    assert report["segments"] == len(unique)
