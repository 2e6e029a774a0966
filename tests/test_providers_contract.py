"""One contract suite over all five provider adapters, against the emulators over real HTTP."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from campaigns.errors import (
    Ambiguous, NoRoute, Permanent, ProviderUnavailable, RateLimited, Retryable,
)
from campaigns.settings import ProviderAccount
from campaigns.statuses import MessageStatus
from tests.conftest import wait_for
from worker.emulator import Knobs
from worker.emulator.process import EmulatorProcess, free_port
from worker.providers import ADAPTERS, Outgoing
from worker.providers.base import SentQuery

VALID = "+447911123456"
INVALID = "+44123"
FAST = Knobs(report_delay_ms=100)

# (case, kind, account fields); base URLs are relative to the emulator.
CASES = {
    "tikosms": ("tikosms", {"base_url": "/tikosms", "token": "test-token"}),
    "aikdata": ("aikdata", {"base_url": "/aikdata/v1/sms", "token": "test-token"}),
    "laravel-v1": ("laravel", {"base_url": "/laravel", "username": "test-user", "password": "test-pass"}),
    "laravel-v2": ("laravel", {"base_url": "/laravel", "token": "test-token"}),
    "mobsms": ("mobsms", {"base_url": "/mobsms", "token": "test-token"}),
    "smsforai": ("smsforai", {"base_url": "/smsforai/api/v1", "token": "test-token"}),
}
BAD_CREDENTIALS = {"token": "wrong", "password": "wrong"}


@pytest.fixture(scope="module")
def emu():
    with EmulatorProcess(FAST) as process:
        yield process


@pytest.fixture
def knobs(emu):
    def set_knobs(**values):
        emu.set_knobs(FAST.model_copy(update=values))
    yield set_knobs
    emu.set_knobs(FAST)


def make(emu, case: str, timeout_s: float = 5.0, base: str | None = None, **override):
    kind, fields = CASES[case]
    fields = {**fields, **override, "base_url": (base or emu.url) + fields["base_url"]}
    return ADAPTERS[kind](ProviderAccount(kind=kind, timeout_s=timeout_s, **fields))


def outgoing(ref: str, to: str = VALID, callback_url: str | None = None) -> Outgoing:
    return Outgoing(reference=ref, to=to, body="Your code is 1234", sender="Herald",
                    callback_url=callback_url)


def records_to(emu, number: str) -> list[dict]:
    return [r for r in emu.records()["records"] if r["to"].lstrip("+") == number.lstrip("+")]


@pytest.fixture(params=list(CASES))
def case(request):
    return request.param


def test_send_is_accepted_once_and_can_be_looked_up(emu, case):
    provider = make(emu, case)
    number = f"+4479111{int(time.time() * 1000) % 100000:05d}"
    before = len(records_to(emu, number))

    accepted = provider.send(outgoing("101", number))

    assert accepted.status == MessageStatus.SENT
    assert len(records_to(emu, number)) == before + 1
    if not provider.can_poll:
        assert accepted.provider_message_id is None and not provider.pushes_reports
        return
    report = wait_for(lambda: (r := provider.fetch_status(accepted.provider_message_id))
                      and r.status == MessageStatus.DELIVERED and r, timeout=10, message="delivery")
    assert report.provider_message_id == accepted.provider_message_id
    assert provider.fetch_status("no-such-message-999999") is None


@pytest.mark.parametrize("case", [c for c, (kind, _) in CASES.items() if ADAPTERS[kind].pushes_reports])
def test_pushed_reports_parse_to_the_message(emu, receiver, case):
    provider = make(emu, case)
    ref = str(5000 + len(receiver.bodies))
    accepted = provider.send(outgoing(ref, callback_url=f"{receiver.url}/hook"))

    body = wait_for(lambda: next((b for b in receiver.bodies if accepted.provider_message_id in str(b)), None),
                    timeout=10, message="a pushed report")
    [report] = provider.parse_report(body)

    assert report.provider_message_id == accepted.provider_message_id
    # TikoSMS rows show client_ref; MobSMS shows my_id nowhere its document says.
    assert report.message_id == (int(ref) if case == "tikosms" else None)
    assert report.status == MessageStatus.DELIVERED
    assert report.raw_status in ("DELIVRD", "delivered")


@pytest.mark.parametrize("knob, error", [
    ({"fail_401": 1.0}, ProviderUnavailable),
    ({"fail_402": 1.0}, ProviderUnavailable),
    ({"fail_403": 1.0}, ProviderUnavailable),
    ({"fail_5xx": 1.0}, Retryable),
    ({"fail_429": 1.0, "retry_after_s": 2}, RateLimited),
])
def test_error_answers_are_classified(emu, knobs, case, knob, error):
    knobs(**knob)
    with pytest.raises(error) as raised:
        make(emu, case).send(outgoing("7"))
    if error is RateLimited:
        # SMS for AI documents no Retry-After (its emulator sends none): its first wait is 1 s.
        assert raised.value.retry_after == (1 if case == "smsforai" else 2)
    assert not isinstance(raised.value, Permanent)


def test_bad_credentials_stop_the_account(emu, case):
    kind, fields = CASES[case]
    wrong = {k: v for k, v in BAD_CREDENTIALS.items() if k in fields}
    with pytest.raises(ProviderUnavailable) as raised:
        make(emu, case, **wrong).send(outgoing("8"))
    assert raised.value.status_code == 401
    assert "wrong" not in str(raised.value)


def test_an_invalid_number_fails_that_message_for_good(emu, case):
    with pytest.raises(Permanent) as raised:
        make(emu, case).send(outgoing("9", INVALID))
    assert raised.value.status_code in (400, 422)
    assert not isinstance(raised.value, ProviderUnavailable)


def test_no_answer_after_sending_is_ambiguous(emu, knobs, case):
    knobs(answer_late_ms=700, answer_late_ratio=1.0)
    number = "+12025550143"
    before = len(records_to(emu, number))
    with pytest.raises(Ambiguous):
        make(emu, case, timeout_s=0.2).send(outgoing("10", number))
    assert len(records_to(emu, number)) == before + 1  # the provider did take it


def test_unreachable_provider_is_retryable(emu, case):
    with pytest.raises(Retryable):
        make(emu, case, base=f"http://127.0.0.1:{free_port()}").send(outgoing("11"))


def test_unknown_raw_statuses_are_kept_unmapped():
    from worker.providers import aikdata, mobsms, smsforai, tikosms

    for module in (aikdata, mobsms, smsforai, tikosms):
        assert all(raw != "WHATEVER" for raw in module.STATUS_MAP)
    [report] = ADAPTERS["tikosms"].parse_report(None, {"status": "WHATEVER", "client_ref": "3"})
    assert (report.status, report.raw_status, report.message_id) == (None, "WHATEVER", 3)
    [report] = ADAPTERS["mobsms"].parse_report(None, {"event": "status", "data": {"status": "received"}})
    assert report.status is None and report.raw_status == "received"


def test_tikosms_rate_for_destination_missing_is_no_route(emu):
    tiko = make(emu, "tikosms")
    assert tiko.price("RU") is None  # sms-rates has none for Russia: the send answers 403
    with pytest.raises(NoRoute) as raised:
        tiko.send(outgoing("12", "+79161234567"))
    assert raised.value.status_code == 403


def test_mobsms_without_device_stops_the_account(emu, knobs):
    knobs(fail_402=1.0)  # the MobSMS emulator answers this as 422 "No active device available"
    with pytest.raises(ProviderUnavailable) as raised:
        make(emu, "mobsms").send(outgoing("13"))
    assert raised.value.status_code == 422


def test_balance_and_prices_where_the_api_has_them(emu):
    expected_balance = {"tikosms": Decimal("634.9288"), "laravel-v2": Decimal("250.0"),
                        "mobsms": Decimal("5000"), "smsforai": Decimal("12.345678")}
    for case in CASES:
        assert make(emu, case).balance() == expected_balance.get(case)
    assert make(emu, "tikosms").price("GB") == Decimal("0.045000")
    assert make(emu, "tikosms").price("RU") is None  # sms-rates has no rate for Russia
    assert make(emu, "smsforai").price("GB") == Decimal("0.04")
    assert make(emu, "mobsms").price("GB") == Decimal("100")
    assert make(emu, "aikdata").price("GB") is None


def test_mobsms_lookup_by_reference_and_cancel(emu, knobs):
    knobs(report_delay_ms=5000)
    provider = make(emu, "mobsms")
    since = datetime.now(timezone.utc)
    number = f"+1202555{int(time.time() * 1000) % 10000:04d}"
    accepted = provider.send(outgoing("424242", number))

    # Without the send's answer: the outbound row with this recipient and text since the claim.
    found = provider.fetch_by_reference(SentQuery("424242", number, "Your code is 1234", since))
    assert found is not None and found.provider_message_id == accepted.provider_message_id
    assert found.message_id == 424242
    # With it: that message.
    by_id = provider.fetch_by_reference(SentQuery("424242", number, "x", since, accepted.provider_message_id))
    assert by_id.provider_message_id == accepted.provider_message_id
    # Nothing matches: no proof of anything.
    assert provider.fetch_by_reference(SentQuery("7", number, "another text", since)) is None
    assert provider.cancel(accepted.provider_message_id) is True
    assert provider.fetch_status(accepted.provider_message_id).status == MessageStatus.CANCELLED
    assert provider.cancel(accepted.provider_message_id) is False


def test_mobsms_lookup_names_no_message_when_two_rows_match(emu):
    provider = make(emu, "mobsms")
    since = datetime.now(timezone.utc)
    number = f"+1202555{(int(time.time() * 1000) + 5000) % 10000:04d}"
    provider.send(outgoing("1", number))
    provider.send(outgoing("2", number))  # the same text to the same number: which one is ours?

    assert provider.fetch_by_reference(SentQuery("1", number, "Your code is 1234", since)) is None


def test_mobsms_rows_with_my_id_name_their_message(emu, knobs):
    knobs(mobsms_echo_my_id=True)
    provider = make(emu, "mobsms")
    since = datetime.now(timezone.utc)
    number = f"+1202555{(int(time.time() * 1000) + 7000) % 10000:04d}"
    accepted = provider.send(outgoing("31", number))
    provider.send(outgoing("32", number))

    found = provider.fetch_by_reference(SentQuery("31", number, "Your code is 1234", since))
    assert found.provider_message_id == accepted.provider_message_id and found.message_id == 31


def test_tikosms_bulk_and_laravel_comma_joined(emu):
    tiko = make(emu, "tikosms")
    refs = [outgoing(str(900 + i), n) for i, n in enumerate(["+12025550101", "+12025550102", "+12025550101"])]
    campaign_id = tiko.send_bulk(refs)
    rows = wait_for(lambda: tiko.fetch_campaign(campaign_id), timeout=5, message="bulk rows")
    assert sorted(r.message_id for r in rows) == [900, 901]  # the duplicate was removed

    laravel = make(emu, "laravel-v1")
    laravel.send_many([outgoing("1", "+12025550111"), outgoing("2", "+12025550112")])
    assert len(records_to(emu, "+12025550111")) == len(records_to(emu, "+12025550112")) == 1


def test_smsforai_per_minute_429_backs_off_progressively(emu, knobs):
    provider = make(emu, "smsforai")
    knobs(fail_429=1.0)
    waits = []
    for _ in range(4):
        with pytest.raises(RateLimited) as raised:
            provider.send(outgoing("20"))
        waits.append(raised.value.retry_after)
    knobs()
    provider.send(outgoing("21"))
    knobs(fail_429=1.0)
    with pytest.raises(RateLimited) as after_success:
        provider.send(outgoing("22"))

    assert waits == [1, 2, 4, 8]
    assert after_success.value.retry_after == 1  # a success ends the run of 429s


def test_smsforai_spent_daily_quota_holds_the_account(emu, knobs):
    knobs(smsforai_daily_quota=1, tokens=["test-token", "smsai_quota"])
    provider = make(emu, "smsforai", token="smsai_quota")  # an account of its own: its own quota
    provider.send(outgoing("23"))
    with pytest.raises(RateLimited) as raised:
        provider.send(outgoing("24"))

    seconds_to_midnight = 86400 - time.time() % 86400
    assert raised.value.retry_after >= min(seconds_to_midnight, 3600) - 5  # held, not retried in a second
    assert "per-day" in str(raised.value)


@pytest.mark.parametrize("gateway, number_format, accepted", [
    ("national", "national", True), ("national", "e164", False),
    ("e164", "e164", True), ("e164", "national", False),
    ("any", "national", True), ("any", "e164", True),
])
def test_laravel_numbers_go_in_the_accounts_format(emu, knobs, gateway, number_format, accepted):
    knobs(laravel_number_format=gateway, laravel_region="KE")
    provider = make(emu, "laravel-v2", number_format=number_format)
    number = f"+25471{int(time.time() * 1000) % 10000000:07d}"
    if not accepted:
        with pytest.raises(Permanent) as raised:
            provider.send(outgoing("40", number))
        assert raised.value.status_code == 400  # "Invalid phone number format."
        return
    provider.send(outgoing("40", number))
    [record] = records_to(emu, "0" + number[4:] if number_format == "national" else number)
    assert record["to"] == ("0" + number[4:] if number_format == "national" else number)
