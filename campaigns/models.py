"""SQLAlchemy models. Keep in step with campaigns/migrations (a test compares them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, Numeric, String, Text, UniqueConstraint, Uuid,
    false, func, text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a real bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Money = Numeric(14, 6)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}


class Service(Base):
    """A tenant: a service that uses Herald. It owns API keys, campaigns, idempotency keys and
    suppressions; every API request sees only its own service's rows."""

    __tablename__ = "services"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # May submit `"priority": "high"` campaigns (campaigns/services.py, check_priority).
    high_priority: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


# The service the migration made to own everything that existed before services did.
DEFAULT_SERVICE_ID = 1


class Campaign(Base):
    __tablename__ = "campaigns"
    # Idempotency keys are per service: two services may use the same key independently.
    __table_args__ = (UniqueConstraint("service_id", "idempotency_key", name="uq_campaigns_service_idempotency"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    sender: Mapped[str] = mapped_column(String(32))
    template: Mapped[str] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(String(64))
    default_region: Mapped[str | None] = mapped_column(String(2))
    scheduled_at: Mapped[datetime | None]
    send_window: Mapped[dict | None] = mapped_column(JSON)
    concurrency: Mapped[int | None] = mapped_column(Integer)
    max_cost: Mapped[Decimal | None] = mapped_column(Money)
    callback_url: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # Per field of the first submission, a digest: a reuse of the key with another body is
    # refused naming the fields that differ, never answered with the first receipt.
    idempotency_digest: Mapped[dict | None] = mapped_column(JSON)
    meta: Mapped[dict | None] = mapped_column("metadata", JSON)
    # The receipt as first returned, so an idempotent resubmission returns it unchanged.
    receipt: Mapped[dict | None] = mapped_column(JSON)
    submitted: Mapped[int] = mapped_column(Integer, default=0)
    segments: Mapped[int] = mapped_column(Integer, default=0)
    estimated_cost: Mapped[Decimal | None] = mapped_column(Money)
    # Highest message id already published by fan-out: a crash resumes after it.
    fanout_checkpoint: Mapped[int] = mapped_column(BigInteger, default=0)
    # When fan-out last moved the checkpoint: the sweeper restarts a fan-out that stopped moving.
    fanout_at: Mapped[datetime | None]
    # Dispatch window (worker/send/fanout.py): the priority class's queue, the live refill
    # chain's number (an older chain's refill does nothing), the window's size and why it last waited.
    priority: Mapped[str] = mapped_column(String(8), default="normal", server_default="normal")
    window_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    window_size: Mapped[int | None] = mapped_column(Integer)
    window_wait: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class Message(Base):
    """One row per unique normalised recipient of a campaign."""

    __tablename__ = "messages"
    __table_args__ = (
        # With the id: a window's in-flight count and fan-out's next keyset page are range scans.
        Index("ix_messages_campaign_status", "campaign_id", "status", "id"),
        # Only a sent message has a provider's reference, and only by one is a message looked up
        # here: intake's million queued rows stay out of the index.
        Index("ix_messages_provider_ref", "provider", "provider_message_id",
              postgresql_where=text("provider_message_id IS NOT NULL"),
              sqlite_where=text("provider_message_id IS NOT NULL")),
        # Only waiting messages have not_before: the release job scans just those.
        Index("ix_messages_not_before", "not_before", postgresql_where=text("not_before IS NOT NULL"),
              sqlite_where=text("not_before IS NOT NULL")),
        # The report poller walks sent messages per account, least recently polled first; the
        # expiry walks sent messages of every account (some providers give no reference). Only
        # sent messages: intake's queued rows and the claim's `sending` ones stay out of it.
        Index("ix_messages_poll", "provider", "polled_at", postgresql_where=text("status = 'sent'"),
              sqlite_where=text("status = 'sent'")),
        # The store itself refuses a doubled recipient, whatever intake does.
        UniqueConstraint("campaign_id", "phone", name="uq_messages_campaign_phone"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    phone: Mapped[str] = mapped_column(String(20))
    region: Mapped[str | None] = mapped_column(String(2))
    # Rendered text when the template has placeholders; NULL means the campaign template verbatim.
    body: Mapped[str | None] = mapped_column(Text)
    encoding: Mapped[str] = mapped_column(String(5), default="GSM7")
    segments: Mapped[int] = mapped_column(Integer, default=1)
    client_ref: Mapped[str | None] = mapped_column(String(255))
    callback_url: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(String(64))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    raw_status: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cost: Mapped[Decimal | None] = mapped_column(Money)
    not_before: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    # When the retry published for this queued message is due; the sweeper republishes it once
    # that is long past (the task was lost). NULL: published by fan-out (see Campaign.fanout_at).
    due_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    final_at: Mapped[datetime | None]
    # Last time the report poller asked the provider about this message.
    polled_at: Mapped[datetime | None]


class Rejection(Base):
    """A submitted recipient that became no message: duplicate, invalid or suppressed."""

    __tablename__ = "rejections"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str | None] = mapped_column(Text)


class DeliveryReport(Base):
    """Every report as received, append-only; message status is derived from these."""

    __tablename__ = "delivery_reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    provider: Mapped[str] = mapped_column(String(64))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    raw_status: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str | None] = mapped_column(String(16))
    # Multi-part messages are reported part by part; the parts fold into one message status.
    part: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[Decimal | None] = mapped_column(Money)
    at: Mapped[datetime | None]  # the provider's own time of the event
    payload: Mapped[dict] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Suppression(Base):
    """Numbers that opted out of one service (``service_id``), or of all (NULL: the global list)."""

    __tablename__ = "suppressions"
    __table_args__ = (
        UniqueConstraint("service_id", "phone", name="uq_suppressions_service_phone"),
        # NULLs never collide in a unique constraint: the global list needs its own index.
        Index("uq_suppressions_global_phone", "phone", unique=True, postgresql_where=text("service_id IS NULL"),
              sqlite_where=text("service_id IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"))
    phone: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ApiKey(Base):
    """A caller of the HTTP API. Only the key's SHA-256 is stored; the key is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    # The key's first characters, so an operator can tell keys apart without the key itself.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"))
    scopes: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None]
class Callback(Base):
    """An outbound callback (campaign summary or one recipient's final status), retried until it lands.

    Rows are written in the same transaction as the state they announce, so none is lost.
    """

    __tablename__ = "callbacks"
    __table_args__ = (
        # One campaign summary per campaign and one final status per message, however often queued.
        UniqueConstraint("kind", "campaign_id", "message_id", name="uq_callbacks_subject"),
        Index("ix_callbacks_due", "delivered_at", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # "campaign" or "message"
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    # 0 for a campaign summary, so the unique constraint holds (NULLs never collide).
    message_id: Mapped[int] = mapped_column(BigInteger, default=0)
    url: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    gave_up_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
