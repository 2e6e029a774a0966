"""The beat schedule. Run exactly one `celery -A worker beat`; every job is safe to run twice."""

BEAT_SCHEDULE = {
    "close-finished-campaigns": {"task": "herald.close_finished_campaigns", "schedule": 5.0},
}
