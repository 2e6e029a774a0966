"""Logging setup: plain or JSON lines. Log records carry ids only, never numbers, text or secrets."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from campaigns.errors import Withheld
from campaigns.settings import get_settings

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "msg": record.getMessage()}
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        return json.dumps(data, default=str)


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        return line + ("".join(f" {k}={v}" for k, v in extra.items()) if extra else "")


# A webhook URL's last segment is an HMAC token: a secret, whoever logs the URL (e.g. an access log).
_WEBHOOK_TOKEN = re.compile(r"(/v1/webhooks/[^/\s]+/[^/\s]+/)[^/?\s\"']+")


class RedactWebhookTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _WEBHOOK_TOKEN.sub(r"\1<token>", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


REDACTED = "<redacted>"
# Tasks whose arguments and result may hold numbers and text (their callers put them there).
PERSONAL_TASKS = frozenset({"campaigns.submit"})


def exception_outline(exc: BaseException) -> str:
    """A traceback's frames and exception types, without any exception's message: a message can
    quote the data that failed (a driver's "Key (phone)=(...)", a template's text)."""
    lines = ["Traceback (most recent call last):"]
    for frame in traceback.extract_tb(exc.__traceback__):
        lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
    return "\n".join([*lines, str(Withheld.of(exc))])


class RedactPersonalData(logging.Filter):
    """Tracebacks keep frames and types only; Celery's lines about a personal task lose its
    arguments, result and exception text (the received line's ``data`` extra too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text, record.exc_info = exception_outline(record.exc_info[1]), None
        fields = record.args if isinstance(record.args, dict) else None
        if fields is not None and fields.get("name") in PERSONAL_TASKS:
            record.args = {**fields, **{k: REDACTED for k in ("args", "kwargs", "return_value", "exc")
                                        if k in fields}}
            if isinstance(getattr(record, "data", None), dict):
                record.data = record.args
        return True


_context: contextvars.ContextVar[dict] = contextvars.ContextVar("herald_log_context", default={})


@contextmanager
def log_context(**ids) -> Iterator[None]:
    """Every record logged inside carries these ids (campaign_id, message_id) unless it names its own."""
    token = _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _install_filters(handler: logging.Handler) -> None:
    for f in (ContextIds(), RedactWebhookTokens(), RedactPersonalData()):
        if not any(type(existing) is type(f) for existing in handler.filters):
            handler.addFilter(f)


def setup_logging() -> None:
    settings = get_settings()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_json
                         else PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _install_filters(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # httpx logs every request URL at INFO; webhook URLs carry tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def use_json_if_configured(logger: logging.Logger) -> None:
    """Give Celery's own handlers Herald's filters, and the JSON formatter when HERALD_LOG_JSON is set."""
    for handler in logger.handlers:
        _install_filters(handler)
        if get_settings().log_json:
            handler.setFormatter(JsonFormatter())
