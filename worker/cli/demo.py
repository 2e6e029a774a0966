"""`herald demo`: one campaign end to end on whatever the settings name (embedded by default)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from campaigns.recipients import InvalidRecipient, normalise

DEMO_REGION = "GB"
_REGIONS = ("GB", "KE", "DE", "IN", "BR", "UA", "UZ", "US")
_JUNK = ("12345", "+44 20", "call me", "+999 1234567", "0000", "+1 555", "07", "++44", "+44 7400 1234567890")


@dataclass
class Generated:
    recipients: list[str] = field(default_factory=list)
    unique: int = 0
    duplicates: int = 0
    invalid: int = 0


def _numbers(rng: random.Random):
    """An endless stream of distinct valid mobile numbers across several countries."""
    seen: set[str] = set()
    while True:
        region = rng.choice(_REGIONS)
        kind = PhoneNumberType.FIXED_LINE_OR_MOBILE if region == "US" else PhoneNumberType.MOBILE
        example = phonenumbers.example_number_for_type(region, kind)
        digits = str(example.national_number)
        tail = str(rng.randrange(10 ** 6)).zfill(6)
        candidate = phonenumbers.PhoneNumber(country_code=example.country_code,
                                             national_number=int(digits[:-6] + tail))
        e164 = phonenumbers.format_number(candidate, PhoneNumberFormat.E164)
        if e164 not in seen and phonenumbers.is_valid_number(candidate):
            seen.add(e164)
            yield candidate


def generate(n: int, seed: int = 2026) -> Generated:
    """About 10% duplicates (an earlier number in another written form) and 3% invalid."""
    rng = random.Random(seed)
    numbers = _numbers(rng)
    earlier: list[phonenumbers.PhoneNumber] = []
    out = Generated()
    for _ in range(n):
        roll = rng.random()
        if roll < 0.03:
            junk = rng.choice(_JUNK)
            try:
                normalise(junk, DEMO_REGION)
            except InvalidRecipient:
                out.recipients.append(junk)
                out.invalid += 1
                continue
        if roll < 0.13 and earlier:
            number = rng.choice(earlier)
            national = phonenumbers.region_code_for_number(number) == DEMO_REGION
            style = PhoneNumberFormat.NATIONAL if national else PhoneNumberFormat.INTERNATIONAL
            out.recipients.append(phonenumbers.format_number(number, style))
            out.duplicates += 1
            continue
        number = next(numbers)
        earlier.append(number)
        out.recipients.append(phonenumbers.format_number(number, PhoneNumberFormat.E164))
        out.unique += 1
    return out


def run(n: int, *, timeout_s: float = 300.0, as_json: bool = False) -> int:
    from rich.console import Console

    import campaigns
    from campaigns import migrate
    from campaigns.schema import CampaignSpec
    from campaigns.settings import ProviderAccount, configure, get_settings
    from worker.app import configure_app
    from worker.cli.status_view import summary_table, watch
    from worker.emulator import Knobs
    from worker.emulator.process import EmulatorProcess
    from worker.api.http import create_app as api_app
    from worker.api.serving import ServerThread

    console = Console(stderr=as_json)
    started = time.monotonic()
    generated = generate(n)
    emulator = EmulatorProcess(Knobs(report_delay_ms=20, delivered_ratio=0.95, seed=7)).start()
    api = ServerThread(api_app()).start()
    base = get_settings()
    accounts = dict(base.providers)
    accounts["demo"] = ProviderAccount(kind="tikosms", base_url=f"{emulator.url}/tikosms",
                                       token="test-token", prices={"*": "0.05"})
    settings = configure(base.model_copy(update={
        "public_url": api.url, "providers": accounts, "default_provider": "demo",
        "callback_allow_private": True,  # the demo's receivers, if any, are local
    }))
    configure_app(settings)
    migrate.upgrade()
    worker = _InProcessWorker().start()
    try:
        spec = CampaignSpec.model_validate({
            "from": "Herald", "message": "Hello from the Herald demo. Reply STOP to opt out.",
            "default_region": DEMO_REGION, "provider": "demo",
        })
        receipt = campaigns.submit(spec, generated.recipients)
        report = watch(str(receipt.campaign_id), console, 0.2, timeout_s=timeout_s, transient=as_json)
    finally:
        worker.stop()
        api.stop()
        emulator.stop()
    elapsed = time.monotonic() - started
    report["elapsed_s"] = round(elapsed, 2)
    expected_ok = (receipt.accepted == generated.unique and receipt.duplicates == generated.duplicates
                   and receipt.invalid == generated.invalid and report["final"] == receipt.accepted
                   and report["delivered"] + report["failed"] == receipt.accepted)
    if as_json:
        import json

        print(json.dumps({**report, "expected": vars(generated) | {"recipients": n}, "ok": expected_ok}))
    else:
        console.print(summary_table(report))
        console.print(f"elapsed {elapsed:.1f} s")
        if not expected_ok:
            console.print("[red]the report does not match what was generated")
    return 0 if expected_ok else 1


class _InProcessWorker:
    """A real Celery worker (thread pool) inside this process, for the embedded default."""

    def __init__(self, concurrency: int = 8):
        from worker.app import app

        self.controller = app.WorkController(
            pool_cls="threads", concurrency=concurrency, loglevel="WARNING",
            without_heartbeat=True, without_mingle=True, without_gossip=True,
            hostname=f"demo-{random.randrange(10**6)}@herald",
        )
        self.thread = threading.Thread(target=self.controller.start, name="celery", daemon=True)

    def start(self) -> _InProcessWorker:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.controller.stop(in_sighandler=False)
        self.thread.join(timeout=10)
