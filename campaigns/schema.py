"""The one submission schema every interface shares, and the receipt every interface returns."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from campaigns.errors import SubmissionError


# Here, not in callbacks.py: the intake pool's processes check every recipient's URL, and
# importing the delivery side (httpx, SQLAlchemy) cost each of them about 40 MB.
def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a callback URL (not http(s), no host), or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "callback_url is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "callback_url must be an http:// or https:// URL with a host"
    return None


_HH_MM = r"^([01]\d|2[0-3]):[0-5]\d$"


class SendWindow(BaseModel):
    """Local hours in which messages may be sent: [start, end), across midnight if end < start."""

    start: str = Field(pattern=_HH_MM, examples=["09:00"])
    end: str = Field(pattern=_HH_MM, examples=["20:00"])
    timezone: str | None = Field(default=None, description="fixed zone; default: each recipient's own")

    @model_validator(mode="after")
    def _valid(self) -> SendWindow:
        if self.start == self.end:
            raise ValueError("send_window start and end must differ")
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.timezone!r}") from None
        return self


def unstorable(text: str) -> bool:
    """PostgreSQL text holds neither NUL nor a lone surrogate (it cannot be UTF-8 encoded)."""
    if "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _has_unstorable(value: Any) -> bool:
    if isinstance(value, str):
        return unstorable(value)
    if isinstance(value, dict):
        return any(_has_unstorable(k) or _has_unstorable(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_unstorable(v) for v in value)
    return False


class ShapeError(ValueError):
    """A JSON body nested too deeply or with too many items; ``too_large`` answers 413, else 422."""

    def __init__(self, message: str, path: list, too_large: bool):
        super().__init__(message)
        self.path, self.too_large = path, too_large


def check_shape(value: Any, *, max_depth: int, max_items: int | None = None, path: list | None = None) -> None:
    """Refuse (ShapeError) JSON nested deeper than ``max_depth``, an array or object of more
    than ``max_items`` items, or a string PostgreSQL cannot store. Stops at the first problem."""
    path = path or []
    if isinstance(value, str):
        if unstorable(value):
            raise ShapeError("text may not contain NUL (\\u0000) or lone surrogate characters", path, False)
        return
    if not isinstance(value, dict | list):
        return
    if len(path) >= max_depth:
        raise ShapeError(f"JSON nested deeper than {max_depth} levels", path, False)
    if max_items is not None and len(value) > max_items:
        raise ShapeError(f"more than {max_items:,} items in one array or object", path, True)
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(key, str) and unstorable(key):
            raise ShapeError("a key may not contain NUL or lone surrogate characters", path, False)
        check_shape(item, max_depth=max_depth, max_items=max_items, path=[*path, key])


class CampaignSpec(BaseModel):
    """Everything about a campaign except its recipients, which may be streamed."""

    model_config = ConfigDict(populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # PostgreSQL text cannot hold NUL or a lone surrogate: refuse them here, by name, rather
        # than fail at the database.
        if _has_unstorable(data):
            raise ValueError("text may not contain NUL (\\u0000) or lone surrogate characters")
        return data

    sender: str = Field(alias="from", min_length=1, max_length=32)
    message: str = Field(min_length=1, max_length=1600)
    default_region: str | None = Field(default=None, min_length=2, max_length=2)
    provider: str | None = Field(default=None, max_length=64)
    route: str | None = Field(default=None, max_length=64)
    scheduled_at: datetime | None = None
    send_now: bool = False
    send_window: SendWindow | None = None
    concurrency: int | None = Field(default=None, ge=1, le=100)
    # The send queue workers drain first to last (worker/queues.py); "high" only for a service
    # granted it (campaigns/services.py).
    priority: Literal["high", "normal", "bulk"] = "normal"
    # The column is NUMERIC(14, 6): a larger cap would fail at the database instead of here.
    max_cost: Decimal | None = Field(default=None, ge=0, lt=10**8, max_digits=14, decimal_places=6,
                                     allow_inf_nan=False)
    callback_url: str | None = Field(default=None, max_length=2048,
                                     description="http(s) URL told when the campaign ends")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None

    @field_validator("callback_url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        if value is not None and (problem := url_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("metadata")
    @classmethod
    def _shallow(cls, value: dict | None) -> dict | None:
        if value is not None:
            check_shape(value, max_depth=8, max_items=1000)
        return value

    @field_validator("scheduled_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # A time without an offset is UTC; stored as UTC so every database compares it alike.
        if value is None:
            return None
        try:
            return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        except OverflowError:  # year 9999 with a negative offset is past the end of time in UTC
            raise ValueError("scheduled_at is out of range") from None


# Over the wire a recipient is a string or an object: its fields are checked per recipient at
# intake, so one bad recipient is rejected with its reason instead of failing the whole request.
RawRecipient = str | dict[str, Any]


class Submission(CampaignSpec):
    recipients: list[RawRecipient] = Field(
        min_length=1,
        description="numbers as strings, or objects with the number under `to` or `number` and "
                    "optional `name`, `client_ref`, `callback_url` and other template fields",
        examples=[["+447400123456", {"to": "0701234567", "name": "Amina", "client_ref": "r-1"}]],
    )


def parse(model: type[CampaignSpec], data: Any) -> CampaignSpec:
    """Validate ``data`` as ``model``, or raise SubmissionError naming the path of each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SubmissionError(
            f"{exc.error_count()} invalid field(s) in the submission",
            # Only loc, msg and type: pydantic's `input` could echo a number or the message text.
            [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()],
        ) from None


class InvalidSample(BaseModel):
    position: int
    reason: str


class Receipt(BaseModel):
    campaign_id: str
    status: str
    submitted: int
    accepted: int
    duplicates: int
    invalid: int
    suppressed: int
    invalid_reasons: list[InvalidSample] = []
    segments: int
    estimated_cost: Decimal | None = None
