"""`herald doctor`: the first command an operator runs. Each check says what is wrong and how to fix it.

Checks run side by side, each bounded in time, so an address that never answers costs one
timeout, not a hang. Nothing printed holds a secret: URLs are shown without passwords, the key
only as its fingerprint, provider errors as the adapters' own messages (which hold no credentials).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout

import httpx

from campaigns.settings import Settings
from worker.startup import Finding, configuration_findings

CHECK_TIMEOUT_S = 15.0


def _database(settings: Settings) -> list[Finding]:
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url

    from campaigns import migrate

    where = make_url(settings.database_url).render_as_string(hide_password=True)
    try:
        current = migrate.current()
    except Exception as exc:
        return [Finding("database", "fail", f"{where} cannot be reached ({type(exc).__name__})",
                        "start PostgreSQL, or correct HERALD_DATABASE_URL")]
    head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    if current != head:
        return [Finding("database", "fail", f"{where} is at revision {current}, the code at {head}",
                        "run `herald db upgrade`")]
    if settings.database_url.startswith("sqlite"):
        return [Finding("database", "warn", f"{where}: the embedded SQLite file, for the demo",
                        "set HERALD_DATABASE_URL to PostgreSQL (postgresql://user@host:5432/herald)")]
    return [Finding("database", "ok", f"{where} at the migration head ({head})")]


def _broker(settings: Settings) -> list[Finding]:
    from worker.api.health import check_broker

    if settings.embedded:
        return [Finding("broker", "fail", "HERALD_BROKER_URL is unset: an in-process broker, for the demo only",
                        "set HERALD_BROKER_URL=redis://host:6379/0")]
    try:
        check_broker()
    except Exception as exc:
        return [Finding("broker", "fail", f"the broker cannot be reached ({type(exc).__name__})",
                        "start Redis, or correct HERALD_BROKER_URL")]
    return [Finding("broker", "ok", "the broker answers")]


def _limits(settings: Settings) -> list[Finding]:
    from campaigns.resources import redis_client

    if settings.redis_url is None:
        return [Finding("limits", "warn", "HERALD_REDIS_URL is unset: rate limits hold within one process only",
                        "set HERALD_REDIS_URL=redis://host:6379/0 (the broker's Redis will do)")]
    try:
        redis_client(settings.redis_url).ping()
    except Exception as exc:
        return [Finding("limits", "fail", f"the limits Redis cannot be reached ({type(exc).__name__})",
                        "start Redis, or correct HERALD_REDIS_URL")]
    return [Finding("limits", "ok", "the limits Redis answers")]


def _public_url(settings: Settings) -> list[Finding]:
    """Herald's own /healthz at the public URL, and the same key there (its /readyz fingerprint)."""
    from campaigns.signing import secret_fingerprint

    base = settings.public_url.rstrip("/")
    fix = "start `herald api` there, or set HERALD_PUBLIC_URL to the URL at which it is served"
    try:
        with httpx.Client(timeout=5) as client:
            alive = client.get(f"{base}/healthz")
            ready = client.get(f"{base}/readyz")
    except httpx.HTTPError as exc:
        return [Finding("public_url", "fail", f"{base}/healthz does not answer ({type(exc).__name__})", fix)]
    try:
        theirs = ready.json().get("secret_fingerprint")
        herald = alive.status_code == 200 and alive.json().get("status") == "ok" and theirs is not None
    except (ValueError, AttributeError):
        herald = False
    if not herald:
        return [Finding("public_url", "fail", f"{base} answers, but not as Herald (/healthz {alive.status_code})", fix)]
    ours = secret_fingerprint()
    if theirs != ours:
        return [Finding("public_url", "fail", f"the API at {base} signs with another key (fingerprint {theirs}, "
                        f"here {ours}): its webhooks refuse this process's tokens",
                        "give every process the same HERALD_SECRET_KEY and restart them")]
    return [Finding("public_url", "ok", f"{base} answers as Herald, with the same key")]


def _providers(settings: Settings) -> list[Finding]:
    from worker.providers import get_provider

    if not settings.providers:
        return [Finding("providers", "fail", "HERALD_PROVIDERS names no account: nothing can be sent",
                        'set HERALD_PROVIDERS=\'{"name": {"kind": "tikosms", "base_url": "...", "token": "..."}}\'')]
    findings = []
    for name in settings.providers:
        check = f"provider {name}"
        try:
            balance = get_provider(name).balance()
        except Exception as exc:
            findings.append(Finding(check, "fail", f"{type(exc).__name__}: {exc}",
                                    f"check base_url and the credentials of {name!r} in HERALD_PROVIDERS"))
            continue
        findings.append(Finding(check, "ok", f"balance {balance}") if balance is not None else
                        Finding(check, "ok", "its API has no cheap authenticated call: credentials not checked"))
    return findings


CHECKS: tuple[Callable[[Settings], list[Finding]], ...] = (
    configuration_findings, _database, _broker, _limits, _public_url, _providers)


def diagnose(settings: Settings) -> list[Finding]:
    with ThreadPoolExecutor(len(CHECKS)) as pool:
        futures = [(check, pool.submit(check, settings)) for check in CHECKS]
        findings = []
        for check, future in futures:
            try:
                findings += future.result(timeout=CHECK_TIMEOUT_S)
            except FutureTimeout:
                name = check.__name__.strip("_")
                findings.append(Finding(name, "fail", f"no answer in {CHECK_TIMEOUT_S:.0f} s",
                                        "check that the address in its setting is right and reachable"))
        # A check that timed out keeps its thread: do not wait for it on the way out.
        pool.shutdown(wait=False, cancel_futures=True)
    return findings


def run(as_json: bool) -> int:
    """Print every finding (and the webhook URLs to register); 1 if any check failed."""
    import json

    from campaigns.settings import get_settings
    from campaigns.signing import account_webhooks, secret_fingerprint

    findings = diagnose(get_settings())
    webhooks, fingerprint = account_webhooks(), secret_fingerprint()
    ok = all(f.status != "fail" for f in findings)
    if as_json:
        print(json.dumps({"ok": ok, "secret_fingerprint": fingerprint, "findings": [vars(f) for f in findings],
                          "webhooks": webhooks}))
    else:
        _print(findings, webhooks, fingerprint, ok)
    return 0 if ok else 1


def _print(findings: list[Finding], webhooks: list[dict], fingerprint: str, ok: bool) -> None:
    from rich.console import Console
    from rich.markup import escape

    marks = {"ok": "[green]  ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
    console = Console(soft_wrap=True)
    for f in findings:
        console.print(f"{marks[f.status]} [bold]{escape(f.check)}[/]: {escape(f.detail)}")
        if f.fix and f.status != "ok":
            console.print(f"     fix: {escape(f.fix)}")
    console.print(f"secret fingerprint {fingerprint}: every process shows the same one in its startup log and /readyz")
    if webhooks:
        console.print("account-level webhook URLs to register at the providers:")
        for w in webhooks:
            console.print(f"  {w['account']} {w['event']}: {escape(w['url'])}")
    console.print("[green]no problem found[/]" if ok else "[red]problems found: fix each FAIL above[/]")
