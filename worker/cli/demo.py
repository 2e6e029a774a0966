"""`herald demo`: one campaign end to end on whatever the settings name (embedded by default)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
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


# The demo stops waiting once no message has changed status this long (a report that will
# never come), and in any case at its deadline.
STALL_S = 60.0


def deadline_s(n: int) -> float:
    """The longest the demo waits for its campaign: a start-up allowance plus a share per
    recipient, generous for a busy machine (1,000 recipients take about 15 s on two idle cores)."""
    return 120.0 + 0.25 * n


def run(n: int, *, timeout_s: float | None = None, stall_s: float = STALL_S, as_json: bool = False,
        knobs=None) -> int:
    """``knobs``: the emulator's, instead of the demo's own (tests make a campaign that cannot finish)."""
    from rich.console import Console

    import campaigns
    from campaigns import migrate
    from campaigns.schema import CampaignSpec
    from campaigns.settings import ProviderAccount, configure, get_settings
    from worker.app import configure_app
    from worker.cli.status_view import ENDED, summary_table, watch
    from worker.emulator import Knobs
    from worker.emulator.process import EmulatorProcess
    from worker.api.http import create_app as api_app
    from worker.api.serving import ServerThread

    console = Console(stderr=as_json)
    started = time.monotonic()
    timeout_s = deadline_s(n) if timeout_s is None else timeout_s
    generated = generate(n)
    # Start-up allowances for a busy machine: the emulator's imports alone can take 20 s there.
    emulator = EmulatorProcess(knobs or Knobs(report_delay_ms=20, delivered_ratio=0.95, seed=7)).start(timeout=120)
    answers = WebhookAnswers(api_app())
    api = ServerThread(answers).start(timeout=60)
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
    stuck = None
    try:
        spec = CampaignSpec.model_validate({
            "from": "Herald", "message": "Hello from the Herald demo. Reply STOP to opt out.",
            "default_region": DEMO_REGION, "provider": "demo",
        })
        receipt = campaigns.submit(spec, generated.recipients)
        waiting = time.monotonic()
        report = watch(str(receipt.campaign_id), console, 0.2, timeout_s=timeout_s, stall_s=stall_s,
                       transient=as_json)
        if report["status"] not in ENDED:
            stuck = pending(str(receipt.campaign_id), answers, _emulator_stats(emulator.url),
                            time.monotonic() - waiting)
    finally:
        worker.stop()
        api.stop()
        emulator.stop()
    elapsed = time.monotonic() - started
    report["elapsed_s"] = round(elapsed, 2)
    expected_ok = (stuck is None and receipt.accepted == generated.unique
                   and receipt.duplicates == generated.duplicates
                   and receipt.invalid == generated.invalid and report["final"] == receipt.accepted
                   and report["delivered"] + report["failed"] == receipt.accepted)
    if as_json:
        import json

        print(json.dumps({**report, "expected": vars(generated) | {"recipients": n}, "ok": expected_ok,
                          **({"pending": stuck} if stuck else {})}))
    else:
        console.print(summary_table(report))
        console.print(f"elapsed {elapsed:.1f} s")
        if stuck:
            for line in explain(stuck):
                console.print(f"[red]{line}", markup=True, highlight=False)
        elif not expected_ok:
            console.print("[red]the report does not match what was generated")
    return 0 if expected_ok else 1


class WebhookAnswers:
    """ASGI middleware around the demo's API: what it answered to the webhooks (the reports the
    emulator pushed), so a campaign that does not finish can say why."""

    def __init__(self, app, keep: int = 10):
        self.app = app
        self.counts: Counter[int] = Counter()
        self.last: deque[int] = deque(maxlen=keep)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/webhooks/"):
            return await self.app(scope, receive, send)

        async def record(message):
            if message["type"] == "http.response.start":
                self.counts[message["status"]] += 1
                self.last.append(message["status"])
            await send(message)

        await self.app(scope, receive, record)


def _emulator_stats(url: str) -> dict:
    import httpx

    try:
        return httpx.get(f"{url}/_emulator/stats", timeout=5).json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": type(exc).__name__}


def pending(campaign_id: str, answers: WebhookAnswers, emulator: dict, waited_s: float, sample: int = 5) -> dict:
    """What is still pending after the deadline: counts and a few messages of each unfinished
    status (ids, no numbers), the webhook answers, and the emulator's push counts."""
    from campaigns.aggregate import campaign_report
    from campaigns.listing import list_messages
    from campaigns.statuses import PENDING

    counts = {status: n for status, n in campaign_report(campaign_id)["counts"].items()
              if n and status in PENDING}
    messages = [m for status in counts
                for m in list_messages(campaign_id, limit=sample, status=status)["messages"]]
    return {"waited_s": round(waited_s), "counts": counts, "messages": messages,
            "webhook_answers": {str(code): n for code, n in sorted(answers.counts.items())},
            "last_webhook_answers": list(answers.last), "emulator": emulator}


def explain(stuck: dict) -> list[str]:
    """The pending report in words, with the likeliest cause first (a pure function)."""
    answers = {int(code): n for code, n in stuck["webhook_answers"].items()}
    lines = [f"the campaign did not finish (waited {stuck['waited_s']} s); still pending: "
             + ", ".join(f"{n} {status}" for status, n in stuck["counts"].items())]
    for m in stuck["messages"]:
        lines.append(f"  message {m['id']}: {m['status']}" + (f" (provider id {m['provider_message_id']})"
                     if m["provider_message_id"] else "") + (f", error: {m['error']}" if m["error"] else ""))
    lines.append("webhook answers: " + (", ".join(f"{n} × {code}" for code, n in sorted(answers.items()))
                                        or "none") + f"; last: {stuck['last_webhook_answers']}")
    lines.append(f"emulator: {stuck['emulator']}")
    if answers.get(401):
        lines.append("why: the API refused reports for their URL token (401): the key that signed the "
                     "callback URLs is not the one checking them (HERALD_SECRET_KEY)")
    elif "sent" in stuck["counts"] and not answers:
        lines.append("why: no delivery report reached the API's webhooks (see the emulator's push counts)")
    elif any(code >= 400 for code in answers):
        lines.append("why: the API refused some delivery reports (see the answers above)")
    elif "queued" in stuck["counts"] or "sending" in stuck["counts"]:
        lines.append("why: sends have not finished: the in-process worker is still retrying or stopped")
    return lines


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
