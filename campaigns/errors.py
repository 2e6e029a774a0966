"""Herald's one error tree. Messages never contain a phone number, message text or secret.

HeraldError
├── ConfigurationError        settings that cannot work (unknown provider account, ...)
├── SubmissionError           a campaign refused whole, nothing written; ``errors`` holds each
│   │                         problem as {"loc": [field path], "msg", "type"} (HTTP: 422)
│   ├── TooManyRecipients     more than HERALD_MAX_RECIPIENTS; the message names the limit
│   ├── IdempotencyMismatch   an idempotency key reused with another body; names the fields (HTTP: 409)
│   └── NotPermitted          a field asks for what the service may not (`priority: high`) (HTTP: 403)
├── NotFound                  an id that names nothing, or another service's (HTTP: 404 alike)
├── Forbidden                 the caller's service may not do this (HTTP: 403)
├── UnknownScope              an API key asked for a scope Herald does not have
├── InvalidTransition         a lifecycle action the campaign's state does not allow (resume a completed one)
├── InvalidReport             a webhook body that is not a report its provider could have sent
├── Withheld                  an unexpected error passed on by its type only (see below)
└── ProviderError             raised by adapters, mapped at the HTTP boundary
    ├── Retryable             5xx, connection errors, timeouts before the request was sent
    ├── Permanent             this message can never be sent (invalid number, ...)
    ├── ProviderUnavailable   the account cannot send now (credentials, permission, credit): fail over
    │   └── NoRoute           the account cannot carry this destination (no rate): fail over
    ├── RateLimited           429; carries retry_after in seconds
    └── Ambiguous             the request may have reached the provider: resolve by lookup
"""

from __future__ import annotations


class HeraldError(Exception):
    """Base of every error Herald raises on purpose."""


class ConfigurationError(HeraldError):
    pass


class SubmissionError(HeraldError):
    """The submission is refused whole; ``errors`` lists each problem with its field path.

    Paths are relative to the submission (``["recipients"]``, ``["send_window", "start"]``);
    the HTTP API prefixes ``"body"`` as FastAPI does for its own validation errors.
    """

    def __init__(self, message: str, errors: list[dict] | None = None):
        # Both in args, so the error survives Celery's JSON result backend whole.
        errors = errors or [{"loc": [], "msg": message, "type": "invalid"}]
        super().__init__(message, errors)
        self.errors = errors

    def __str__(self) -> str:
        return str(self.args[0])

    @classmethod
    def at(cls, loc: list, msg: str, type_: str) -> SubmissionError:
        """One problem at one field path."""
        return cls(msg, [{"loc": loc, "msg": msg, "type": type_}])


class TooManyRecipients(SubmissionError):
    pass


class IdempotencyMismatch(SubmissionError):
    """An idempotency key reused with another body: 409 naming the fields that differ."""


class NotPermitted(SubmissionError):
    """The submission asks for what its service is not granted (``"priority": "high"``): 403
    naming the field."""


class Forbidden(HeraldError):
    """The caller's service may not do this (only admin edits the global suppression list): 403."""


class NotFound(HeraldError):
    pass


class UnknownScope(HeraldError):
    pass


class InvalidTransition(HeraldError):
    pass


class InvalidReport(HeraldError):
    pass


class Withheld(HeraldError):
    """An unexpected error (a database's) passed on to a caller by its types only: its message
    may quote the data that failed (a driver's "Key (phone)=(...)", a COPY line)."""

    @classmethod
    def of(cls, exc: BaseException) -> Withheld:
        chain, cause = [type(exc).__qualname__], exc.__cause__ or exc.__context__
        while cause is not None and len(chain) < 10:
            chain.append(type(cause).__qualname__)
            cause = cause.__cause__ or cause.__context__
        return cls(" <- ".join(chain) + " (message withheld)")


class ProviderError(HeraldError):
    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class Retryable(ProviderError):
    pass


class Permanent(ProviderError):
    pass


class ProviderUnavailable(ProviderError):
    pass


class NoRoute(ProviderUnavailable):
    """Only this destination is refused by the account; the account stays usable for others."""


class RateLimited(ProviderError):
    def __init__(self, message: str, *, retry_after: float = 1.0, status_code: int | None = 429):
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class Ambiguous(ProviderError):
    pass
