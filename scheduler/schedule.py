"""The beat schedule. Run exactly one `celery -A worker beat`; every job is safe to run twice.

To add a job: write it with ``@periodic_task`` (scheduler/periodic.py) in a module listed in the
Celery app's ``imports``, then add one ``every(...)`` line here.
"""

from campaigns.settings import get_settings

POLL_EVERY_S = 10.0  # scheduler/polling.py sizes each run's batch to this period


def every(seconds: float, task: str) -> dict:
    # Runs left queued for a minute are dropped, so workers back from an outage find no pile-up
    # (a busy worker still gets a minute to reach each one).
    return {"task": task, "schedule": seconds, "options": {"expires": max(seconds, 60.0)}}


BEAT_SCHEDULE = {
    "release-due-campaigns": every(2.0, "herald.release_due_campaigns"),
    "release-deferred-recipients": every(5.0, "herald.release_deferred_recipients"),
    "close-finished-campaigns": every(5.0, "herald.close_finished_campaigns"),
    # Delivery reports (scheduler/polling.py) and callbacks.
    "poll-reports": every(POLL_EVERY_S, "herald.poll_reports"),
    "expire-messages": every(60.0, "herald.expire_messages"),
    "deliver-callbacks": every(5.0, "herald.deliver_callbacks"),
    # Republish lost sends, restart stalled fan-outs, settle stale claims (scheduler/sweep.py).
    "sweep": every(get_settings().sweep_interval_s, "herald.sweep"),
}
