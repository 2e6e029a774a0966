"""Herald's settings: one typed object, built once per process from ``HERALD_*`` variables.

Every variable is documented in the README. Nothing else in Herald reads the environment.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from campaigns.resources import per_process


class ProviderAccount(BaseModel):
    """One account at one provider. Several accounts of one provider kind may coexist."""

    kind: str = Field(description="adapter name: tikosms, aikdata, laravel, mobsms, smsforai")
    base_url: str
    token: SecretStr = SecretStr("")
    username: str = ""
    password: SecretStr = SecretStr("")
    timeout_s: float = 10.0
    # Limits shared by every worker (worker/throttle.py): sends per second (with `burst` allowed
    # back to back), per minute and per day, and requests in flight at once.
    rate_per_s: float | None = None
    burst: int = 1
    per_minute: int | None = None
    per_day: int | None = None
    max_in_flight: int | None = None
    # Price per segment by destination region ("*" for any other), for cost estimates.
    prices: dict[str, Decimal] = Field(default_factory=dict)
    # How numbers are written to a provider that takes them either way (the Laravel gateway's
    # examples are national, 0701234567; which form it wants is per gateway).
    number_format: Literal["e164", "national"] = "e164"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")

    # Where campaigns live. The default is the embedded SQLite file in the working directory.
    database_url: str = "sqlite:///herald.db"
    # Celery broker. Unset means the embedded in-process broker (``memory://``), demo only.
    broker_url: str | None = None
    # Redis for limits shared by every worker. Unset means an in-process limiter (one process only).
    redis_url: str | None = None
    # Signs webhook URL tokens and campaign callbacks. Must be the same on every process.
    secret_key: SecretStr | None = None
    # Base URL at which providers reach Herald's webhooks.
    public_url: str = "http://127.0.0.1:8000"
    # Provider accounts as JSON: {"name": {"kind": "tikosms", "base_url": ..., "token": ...}}.
    providers: dict[str, ProviderAccount] = Field(default_factory=dict)
    # Account used when a campaign names none.
    default_provider: str | None = None
    # Routes as JSON: {"name": {"GB": ["acct-a", "acct-b"], "*": ["acct-c"]}} (region -> accounts).
    routes: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    # Upper bound of recipients in one campaign.
    max_recipients: int = 1_000_000
    # Per-recipient tasks published per fan-out batch.
    fanout_batch: int = 1000
    # The most sends one running campaign may have published and not yet finished (its dispatch
    # window; smaller when its concurrency or its account's limits let fewer run). A send of
    # another campaign waits behind at most this many: a little more than the threads of two
    # default workers (2 x 24), enough to keep them busy at a 50 ms provider latency.
    dispatch_window: int = Field(64, ge=1)
    # A campaign held back by its own `concurrency` has its next message sent by the send that
    # freed the slot, for up to this long (worker/send/fanout.py), before it goes through the
    # queue again: it bounds how long one campaign may hold a worker thread. 0: never.
    follow_on_s: float = Field(0.5, ge=0)
    # Processes that normalise a large submission's recipients (campaigns/intake.py); unset: one
    # per CPU; 1: in this process only.
    intake_processes: int | None = Field(default=None, ge=1)
    # Testing only: a Redis key (in redis_url) through which every process reads a shifted or
    # frozen time (campaigns.clock.RedisClock). Unset: the system clock.
    clock_key: str | None = None
    # A message with no final report this long after it was sent becomes `expired` (48 h).
    message_validity_s: float = 48 * 3600
    # Messages asked about per provider account per poll run (also capped by its rate_per_s).
    poll_batch: int = 200
    # Pushing providers are polled only for messages still unreported this long after sending.
    poll_fallback_after_s: float = 600
    # Providers without push are asked again about one message at most this often.
    poll_interval_s: float = 30
    # Signs outbound campaign and recipient callbacks; unset means the secret key signs them.
    callback_secret: SecretStr | None = None
    # Deliveries of one callback before it is given up.
    callback_max_attempts: int = 12
    # Callbacks to loopback, private, link-local, multicast or reserved addresses are refused
    # (a callback URL must not reach the host's own network); tests and the demo allow them.
    callback_allow_private: bool = False
    # Request body limits, refused with 413 from Content-Length or while streaming. Intake's
    # default (None) is sized for max_recipients: 256 bytes per recipient plus 64 KiB.
    webhook_max_bytes: int = Field(default=1_000_000, ge=1)
    intake_max_bytes: int | None = Field(default=None, ge=1)
    request_max_bytes: int = Field(default=4_000_000, ge=1)
    # Reports (array items) in one webhook body, and nesting depth of any JSON body.
    webhook_max_reports: int = Field(default=1000, ge=1)
    json_max_depth: int = Field(default=32, ge=2)
    # Limits over every provider account together; unset means none.
    global_rate_per_s: float | None = None
    global_burst: int = 1
    global_max_in_flight: int | None = None
    # Retries of a send the provider refused for now (5xx, timeouts before sending): full-jitter
    # exponential backoff from retry_backoff_s, capped at retry_backoff_cap_s; failed after max_attempts.
    max_attempts: int = 8
    retry_backoff_s: float = 0.5
    retry_backoff_cap_s: float = 60.0
    # A granted send may sleep this long for its reserved rate slot instead of being requeued.
    throttle_inline_wait_s: float = 0.5
    # The sweeper (scheduler/sweep.py). A claim older than stale_claim_s is resolved: by asking the
    # provider where it can be asked, else by stale_claim_policy: "unknown" (never resend blindly)
    # or "resend" (at least once: may double a message the provider did get).
    stale_claim_s: float = 120.0
    stale_claim_policy: Literal["unknown", "resend"] = "unknown"
    # A stale claim that a pushed report (or a lookup that failed, tried again) may still settle
    # waits this long after stale_claim_s before the policy applies.
    stale_report_wait_s: float = Field(default=360.0, ge=0)
    # A running campaign none of whose messages moved (claimed, sent, final) for this long is
    # flagged stalled in `herald status`, its report and /metrics: no worker sends it.
    stalled_after_s: float = Field(default=300.0, gt=0)
    # A queued message whose task has been due this long without running is published again.
    republish_after_s: float = 300.0
    # A message whose worker died this many times while sending it ends failed (a poison message).
    max_deliveries: int = 3
    # How often beat runs the sweeper.
    sweep_interval_s: float = 15.0
    log_json: bool = False
    log_level: str = "INFO"
    # A worker's main process serves its host's worker metrics on this port (unset: not served).
    worker_metrics_port: int | None = None
    # prometheus_client's own variable: where prefork children write their samples (see worker/metrics.py).
    prometheus_multiproc_dir: str | None = Field(
        None, validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"))

    @model_validator(mode="after")
    def _routes_name_accounts(self) -> Settings:
        for name, route in self.routes.items():
            if name in self.providers:
                raise ValueError(f"route {name!r} has the name of a provider account")
            unknown = {a for accounts in route.values() for a in accounts} - set(self.providers)
            if unknown:
                raise ValueError(f"route {name!r} names unknown accounts: {sorted(unknown)}")
        return self

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @property
    def celery_broker(self) -> str:
        # A host named: without one kombu warns "No hostname was supplied" to every newcomer.
        return self.broker_url or "memory://localhost/"

    @property
    def secret(self) -> bytes:
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        return _process_secret()

    @property
    def callback_key(self) -> bytes:
        if self.callback_secret is not None:
            return self.callback_secret.get_secret_value().encode()
        return self.secret

    def provider(self, name: str | None) -> tuple[str, ProviderAccount]:
        from campaigns.errors import ConfigurationError

        name = name or self.default_provider or (next(iter(self.providers), None))
        if name is None or name not in self.providers:
            raise ConfigurationError(f"no provider account named {name!r} is configured")
        return name, self.providers[name]


@per_process
def _process_secret() -> bytes:
    # Without HERALD_SECRET_KEY, tokens are valid only inside this process: enough for the demo.
    return secrets.token_bytes(32)


_settings: Settings | None = None
_generation = [0]  # bumped by configure(): what was built from the old settings is built anew


def generation() -> int:
    return _generation[0]


def get_settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


def configure(settings: Settings) -> Settings:
    """Install ``settings`` as this process's settings (the demo, tests and the CLI use this)."""
    global _settings
    _settings = settings
    _generation[0] += 1
    return settings


def sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix):]) if url.startswith(prefix) else None
