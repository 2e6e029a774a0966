"""Routes, provider limits at intake, least-cost choice and the per-account breaker (pure rules)."""

from __future__ import annotations

import pytest

from campaigns import routes
from campaigns.errors import SubmissionError
from campaigns.settings import ProviderAccount, Settings, configure, get_settings
from worker.send import cooldown, routing


def account(kind: str, price: str | None = None) -> ProviderAccount:
    return ProviderAccount(kind=kind, base_url="http://127.0.0.1:9", token="t",
                           prices={"*": price} if price else {})


@pytest.fixture
def settings():
    previous = get_settings()
    cooldown.reset()
    routing._prices.clear()
    current = configure(Settings(
        database_url="sqlite://", redis_url=None, _env_file=None,
        providers={"tiko": account("tikosms", "0.05"), "mob": account("mobsms", "0.02"),
                   "ai": account("smsforai", "0.03"), "lara": account("laravel")},
        routes={"cheap": {"GB": ["tiko", "mob", "ai"], "*": ["lara", "tiko"]},
                "tiko-only": {"*": ["tiko"]}},
    ))
    yield current
    cooldown.reset()
    configure(previous)


def test_a_route_name_and_an_account_name_are_both_targets(settings):
    assert routes.candidates(settings, "tiko", "GB") == ["tiko"]
    assert routes.candidates(settings, "cheap", "GB") == ["tiko", "mob", "ai"]
    assert routes.candidates(settings, "cheap", "FR") == ["lara", "tiko"]
    assert routes.resolve_target(settings, "cheap")[0] == "cheap"


def test_settings_refuse_a_route_naming_an_unknown_account():
    with pytest.raises(ValueError, match="unknown accounts"):
        Settings(_env_file=None, providers={"tiko": account("tikosms")}, routes={"r": {"*": ["nope"]}})


def test_intake_refuses_what_no_account_of_a_region_can_carry(settings):
    with pytest.raises(SubmissionError, match="at most 15") as raised:
        routes.check_campaign(settings, "tiko-only", "A-very-long-sender", "hi")
    assert raised.value.errors[0]["loc"] == ["from"]
    with pytest.raises(SubmissionError, match="at most 160 characters"):
        routes.check_campaign(settings, "tiko", "Herald", "x" * 161)
    # MobSMS and the Laravel gateway carry what TikoSMS cannot, so the mixed route takes it.
    routes.check_campaign(settings, "cheap", "Herald", "x" * 161)
    with pytest.raises(SubmissionError, match="1600"):
        routes.check_campaign(settings, "mob", "Herald", "x" * 1601)


def test_the_cheapest_usable_account_is_chosen(settings):
    assert routing.choose("cheap", "GB", "Herald", "hi") == "mob"
    # A message only MobSMS and SMS for AI can carry skips TikoSMS; an open circuit skips MobSMS.
    cooldown.trip("mob")
    assert routing.choose("cheap", "GB", "Herald", "hi") == "ai"
    assert routing.choose("cheap", "GB", "Herald", "x" * 200) == "ai"
    # Known prices first, then unknown ones in the route's order.
    assert routing.choose("cheap", "FR", "Herald", "hi") == "tiko"


def test_no_rate_skips_an_account_for_that_region_only(settings):
    cooldown.no_route("mob", "GB")
    cooldown.no_route("ai", "GB")
    assert routing.choose("cheap", "GB", "Herald", "hi") == "tiko"
    cooldown.no_route("tiko", "GB")
    assert routing.choose("cheap", "GB", "Herald", "hi") is None
    assert routing.choose("cheap", "FR", "Herald", "hi") == "tiko"


def test_every_circuit_open_still_probes_the_first(settings):
    for name in ("tiko", "mob", "ai"):
        cooldown.trip(name)
    assert routing.choose("cheap", "GB", "Herald", "hi") == "tiko"


def test_transient_failures_open_the_circuit_after_a_run(settings):
    for _ in range(cooldown.FAILURES_TO_OPEN - 1):
        cooldown.failure("mob")
    assert cooldown.unusable(["mob"], "GB") == (set(), set())
    cooldown.success("mob")  # a success ends the run
    for _ in range(cooldown.FAILURES_TO_OPEN):
        cooldown.failure("mob")
    assert cooldown.unusable(["mob"], "GB") == ({"mob"}, set())


def test_a_cooldown_is_never_shortened(settings):
    cooldown.hold("tiko", 5)
    cooldown.hold("tiko", 1)
    assert 4 < cooldown.remaining("tiko") <= 5


def test_a_cooldown_held_by_another_process_is_seen_within_its_reuse_time(settings, redis_url):
    import time

    import redis as redis_lib

    configure(settings.model_copy(update={"redis_url": redis_url}))
    cooldown.reset()
    redis_lib.Redis.from_url(redis_url).delete(cooldown._key("cooldown", "tiko"))
    assert cooldown.remaining("tiko") == 0  # asked once: the answer is reused for SEEN_FOR_S
    # Another worker's 429 lands in Redis, not in this process.
    redis_lib.Redis.from_url(redis_url).set(cooldown._key("cooldown", "tiko"), 1, px=3000)
    started = time.monotonic()
    while cooldown.remaining("tiko") == 0 and time.monotonic() - started < 2:
        time.sleep(0.005)
    assert time.monotonic() - started <= cooldown.SEEN_FOR_S + 0.2, "another process's hold never seen"
    assert 2 < cooldown.remaining("tiko") <= 3
    cooldown.hold("mob", 4)  # held here: no wait for the reuse time
    assert 3 < cooldown.remaining("mob") <= 4
    redis_lib.Redis.from_url(redis_url).delete(*(cooldown._key("cooldown", a) for a in ("tiko", "mob")))
