"""No countdown or ETA Herald hands the Redis broker can reach its visibility timeout.

A Redis-broker task whose ETA lies beyond ``visibility_timeout`` is delivered again (and again).
"""

from hypothesis import given, strategies as st

from campaigns.settings import Settings
from scheduler.schedule import BEAT_SCHEDULE
from worker import tasks
from worker.send import dispatch
from worker.app import MAX_COUNTDOWN_S, celery_config

# Room for the task's own run after its ETA (provider timeout, a throttled sleep) before the
# visibility timeout could expire under it.
RUN_MARGIN_S = 600


def redis_config() -> dict:
    return celery_config(Settings(_env_file=None, broker_url="redis://127.0.0.1:6379/0"))


def test_the_countdown_cap_is_far_below_the_visibility_timeout():
    config = redis_config()
    for options in ("broker_transport_options", "result_backend_transport_options"):
        assert MAX_COUNTDOWN_S + RUN_MARGIN_S <= config[options]["visibility_timeout"], options
    assert not config.get("task_default_countdown")


@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
def test_every_retry_countdown_is_capped(wait):
    assert 0 <= tasks.countdown(wait) <= MAX_COUNTDOWN_S


def test_defaults_that_feed_countdowns_stay_under_the_cap():
    settings = Settings(_env_file=None)
    assert dispatch.backoff(10_000, base=settings.retry_backoff_s, cap=settings.retry_backoff_cap_s,
                            rng=lambda: 1.0) <= MAX_COUNTDOWN_S
    # Limits refuse for at most a quota window; the task's countdown is capped on top of that.
    assert tasks.countdown(86_400) == MAX_COUNTDOWN_S
    assert settings.throttle_inline_wait_s < MAX_COUNTDOWN_S


def test_periodic_jobs_run_well_inside_the_visibility_timeout():
    timeout = redis_config()["broker_transport_options"]["visibility_timeout"]
    for name, entry in BEAT_SCHEDULE.items():
        assert float(entry["schedule"]) < timeout, name


def test_send_tasks_only_retry_through_the_cap():
    # The send task must not carry its own retry countdown that would bypass tasks.countdown().
    assert tasks.send_message.default_retry_delay <= MAX_COUNTDOWN_S
    assert tasks.send_message.max_retries is None  # throttled waits never exhaust a retry budget


def test_sends_published_in_a_batch_are_the_messages_celery_writes(services):
    """worker/broker.publish_calls builds messages itself: they must stay what apply_async writes
    (same headers and properties but the ids, the arguments in the body), in the queue's own list."""
    import base64
    import json

    from worker.app import app
    from worker.broker import publish_calls

    queue = "send.bulk"
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        client.delete(queue)
        with app.producer_or_acquire() as producer:
            tasks.send_message.apply_async((7,), {"refill": ["c", 3]}, producer=producer, queue=queue)
            with producer.batch(2):
                publish_calls(producer, tasks.send_message, [((7,), {"refill": ["c", 3]}), ((8,), None)], queue)
        raw = [json.loads(m) for m in client.lrange(queue, 0, -1)]
        client.delete(queue)
    assert len(raw) == 3
    theirs, ours, plain = raw[::-1]  # kombu pushes on the left: the list holds the newest first
    ids = ("id", "root_id", "origin")
    for key in ("headers", "properties"):
        strip = {"correlation_id", "delivery_tag", "body_encoding", "delivery_info"} if key == "properties" else set(ids)
        assert {k: v for k, v in ours[key].items() if k not in strip} == \
            {k: v for k, v in theirs[key].items() if k not in strip}, key
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"] == \
        {"exchange": "", "routing_key": queue}
    assert ours["properties"]["body_encoding"] == theirs["properties"]["body_encoding"]
    envelope = {"body", "headers", "properties"}
    assert {k: v for k, v in ours.items() if k not in envelope} == \
        {k: v for k, v in theirs.items() if k not in envelope} != {}
    assert len({m["properties"]["delivery_tag"] for m in raw}) == len({m["headers"]["id"] for m in raw}) == 3
    def body(message):
        return json.loads(base64.b64decode(message["body"]))
    assert body(ours) == body(theirs) and body(plain)[:2] == [[8], {}]


def test_task_ids_and_delivery_tags_are_random_uuid4_strings():
    import uuid

    from worker.broker import random_id

    ids = [random_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:2000]:
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, value)


def test_a_reconfigured_app_publishes_to_its_new_broker(services):
    """Celery keeps its broker pools for the process's life; configure_app must drop them, or a
    process moved to another broker (and back, as the fault tests do) publishes to the old one."""
    from campaigns.settings import configure, get_settings
    from worker.app import app, configure_app

    before = get_settings()
    other = before.celery_broker.rsplit("/", 1)[0] + "/15"
    assert other != before.celery_broker

    def published_to() -> str:
        with app.producer_or_acquire() as producer:
            return producer.connection.as_uri()

    home = published_to()  # the pool exists before the move
    assert home.endswith("/" + before.celery_broker.rsplit("/", 1)[1])
    try:
        configure_app(configure(before.model_copy(update={"broker_url": other})))
        assert published_to().endswith("/15")
    finally:
        configure_app(configure(before))
    assert published_to() == home
