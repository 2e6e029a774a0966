"""Refuse to run misconfigured: what `herald api`, the Celery worker and beat check as they start.

A process signing webhook URLs with a key no other process shares applies none of the reports
its providers push (every one gets 401), and nothing else would say so. So a process on a real
broker without HERALD_SECRET_KEY does not start; `herald doctor` reports the same findings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_settings import SettingsError

from campaigns.settings import Settings, get_settings

log = logging.getLogger(__name__)

NEW_SECRET = "export HERALD_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')"


@dataclass(frozen=True)
class Finding:
    """One check's outcome: ``fail`` stops a process (and makes `herald doctor` exit 1)."""

    check: str
    status: Literal["ok", "warn", "fail"]
    detail: str
    fix: str = ""


def configuration_findings(settings: Settings) -> list[Finding]:
    """The secret and the public URL, judged from the settings alone (a pure rule)."""
    findings = []
    if settings.secret_key is not None:
        findings.append(Finding("secret", "ok", "HERALD_SECRET_KEY is set"))
    elif settings.embedded:
        findings.append(Finding("secret", "warn", "HERALD_SECRET_KEY is unset: a random key for this "
                                "process only, enough for the embedded demo",
                                f"set the same key on every process: {NEW_SECRET}"))
    else:
        findings.append(Finding("secret", "fail", "HERALD_SECRET_KEY is unset: each process would sign "
                                "webhook URLs with its own random key and reject the others' reports (401)",
                                f"set the same key on every process: {NEW_SECRET}"))
    if _is_loopback(settings.public_url):
        findings.append(Finding("public_url", "warn", f"HERALD_PUBLIC_URL is {settings.public_url}, a "
                                "loopback address: providers elsewhere cannot reach Herald's webhooks",
                                "set HERALD_PUBLIC_URL to the https:// URL at which providers reach `herald api`"))
    return findings


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host.startswith("127.") or host in ("localhost", "::1")


SETTINGS_ERRORS = (ValidationError, SettingsError)


def describe_settings_error(exc: Exception) -> str:
    """What is wrong with the HERALD_* variables, without their values (HERALD_PROVIDERS holds tokens)."""
    if isinstance(exc, ValidationError):
        problems = "; ".join(_variable(e["loc"]) + f": {e['msg']}"
                             for e in exc.errors(include_input=False, include_url=False))
    else:
        problems = str(exc)  # pydantic-settings names the field and the source, not the value
    return f"the settings cannot be read: {problems}"


def _variable(loc: tuple) -> str:
    """("providers", "a", "base_url") -> "HERALD_PROVIDERS a.base_url"."""
    name = f"HERALD_{str(loc[0]).upper()}" if loc else "HERALD_*"
    return " ".join([name, ".".join(map(str, loc[1:]))]).strip()


def refuse_misconfigured(process: str) -> None:
    """Warn, or exit with the reasons (SystemExit: Celery's signal dispatch swallows Exceptions).
    The embedded default (no broker: the demo's in-process worker) is left alone."""
    settings = get_settings()
    if settings.embedded:
        return
    findings = configuration_findings(settings)
    for f in findings:
        if f.status == "warn":
            log.warning("%s; %s", f.detail, f.fix)
    failed = [f for f in findings if f.status == "fail"]
    if failed:
        reasons = "; ".join(f"{f.detail}. Fix: {f.fix}" for f in failed)
        raise SystemExit(f"{process} refuses to start: {reasons}")


def announce(process: str) -> None:
    """The startup log line naming the key's fingerprint: compare it across processes (and /readyz)."""
    from campaigns.signing import secret_fingerprint

    # In the message itself: Celery's log format drops a record's extra fields.
    log.info("%s started, secret fingerprint %s", process, secret_fingerprint())
