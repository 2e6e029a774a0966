"""A running campaign whose messages stop moving is flagged: the rule, and where an operator sees it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
from click.testing import CliRunner

from campaigns import clock, intake
from campaigns.aggregate import campaign_report, is_stalled
from campaigns.schema import CampaignSpec
from worker.cli.commands import main

T = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


def test_stalled_only_with_messages_to_send_and_nothing_moving_for_the_setting():
    ago = lambda s: T - timedelta(seconds=s)  # noqa: E731
    assert is_stalled([ago(400), ago(301), None], pending=5, held_until=None, at=T, after_s=300)
    assert not is_stalled([ago(400), ago(299)], pending=5, held_until=None, at=T, after_s=300)
    assert not is_stalled([ago(400)], pending=0, held_until=None, at=T, after_s=300)  # nothing left to send
    # Waiting for its send window is not stalling.
    assert not is_stalled([ago(400)], pending=5, held_until=T + timedelta(hours=1), at=T, after_s=300)
    assert is_stalled([ago(400).replace(tzinfo=None)], pending=5, held_until=ago(500), at=T, after_s=300)


def test_a_campaign_no_worker_sends_is_flagged_in_status_report_and_metrics(services, api_server):
    # No worker runs: the campaign is accepted and then nothing moves.
    spec = CampaignSpec.model_validate({"from": "Herald", "message": "hi", "default_region": "GB"})
    cid = str(intake.submit(spec, ["+447400123456", "+447400123457"]).campaign_id)
    assert campaign_report(cid)["stalled"] is False
    clock.set_clock(lambda: clock._system() + timedelta(seconds=301))
    try:
        report = campaign_report(cid)
        assert report["stalled"] is True and report["last_moved_at"] is not None
        assert f'herald_campaign_stalled{{campaign_id="{cid}",service="default"}} 1.0' in httpx.get(f"{api_server.url}/metrics").text
        out = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["status", cid])
        assert out.exit_code == 0 and "STALLED" in out.output, out.output
    finally:
        clock.set_clock(None)
