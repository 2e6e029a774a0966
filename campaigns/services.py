"""Services (tenants): who owns a campaign, and what a caller may see.

Every interface acts for a :class:`Tenant`: an API key's service, or admin (the CLI, and keys
with the ``admin`` scope), which sees every service's rows. Another service's campaign answers
exactly like a missing one (NotFound), so a caller learns nothing about ids it does not own.

A service may be granted ``high_priority``: only then may its campaigns ask for the ``high``
send queue (worker/queues.py), whichever interface submits them (HTTP, Celery, Python).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update

from campaigns import clock, db
from campaigns.errors import NotFound, NotPermitted, SubmissionError
from campaigns.models import DEFAULT_SERVICE_ID, Campaign, Service

DEFAULT = "default"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class Tenant:
    """Who is acting: ``service_id`` owns what it creates; ``admin`` also sees every other service's rows."""

    service_id: int
    admin: bool = False

    def owns(self, service_id: int) -> bool:
        return self.admin or service_id == self.service_id


ADMIN = Tenant(DEFAULT_SERVICE_ID, admin=True)


@dataclass(frozen=True)
class ServiceInfo:
    id: int
    name: str
    created_at: datetime | None
    high_priority: bool = False

    def as_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "high_priority": self.high_priority,
                "created_at": self.created_at.isoformat() if self.created_at else None}


def create(name: str, *, high_priority: bool = False) -> ServiceInfo:
    if not _NAME.match(name):
        raise SubmissionError.at(["name"], "a service name is 1-64 of a-z, 0-9, '_', '.', '-'", "invalid_name")
    with db.session() as s:
        if s.scalar(select(Service.id).where(Service.name == name)) is not None:
            raise SubmissionError.at(["name"], f"a service named {name!r} exists", "duplicate_name")
        sid = s.scalar(insert(Service).values(name=name, high_priority=high_priority, created_at=clock.now())
                       .returning(Service.id))
        return _info(s.get(Service, sid))


def grant_high_priority(service: str | int, allowed: bool) -> ServiceInfo:
    """Allow (or stop) ``service``'s new campaigns asking for ``high``; campaigns already
    submitted keep their class."""
    sid = resolve(service)
    with db.session() as s:
        s.execute(update(Service).where(Service.id == sid).values(high_priority=allowed))
        return _info(s.get(Service, sid))


def list_services() -> list[ServiceInfo]:
    with db.session() as s:
        return [_info(row) for row in s.scalars(select(Service).order_by(Service.id))]


def resolve(service: str | int | None) -> int:
    """The id of a service named (or numbered) ``service``; None means ``default``. NotFound otherwise."""
    if service is None:
        return DEFAULT_SERVICE_ID
    column = Service.id if isinstance(service, int) else Service.name
    with db.session() as s:
        sid = s.scalar(select(Service.id).where(column == service))
    if sid is None:
        raise NotFound(f"no service {service!r}")
    return sid


def check_priority(service_id: int, priority: str) -> None:
    """NotPermitted (naming ``priority``) when the service asks for ``high`` without the grant."""
    if priority != "high":
        return
    with db.session() as s:
        if not s.scalar(select(Service.high_priority).where(Service.id == service_id)):
            raise NotPermitted.at(["priority"], "this service may not submit high-priority campaigns "
                                  "(`herald services set NAME --high-priority` grants it)", "priority_not_permitted")


def check_campaign(campaign_id: str | uuid.UUID, tenant: Tenant) -> uuid.UUID:
    """The campaign's id if ``tenant`` may see it; NotFound for a missing one and another service's alike."""
    cid = uuid.UUID(str(campaign_id))
    with db.session() as s:
        owner = s.scalar(select(Campaign.service_id).where(Campaign.id == cid))
    if owner is None or not tenant.owns(owner):
        raise NotFound(f"no campaign {cid}")
    return cid


def _info(row: Service) -> ServiceInfo:
    return ServiceInfo(row.id, row.name, row.created_at, row.high_priority)
