"""API keys for callers of the HTTP API: shown once, stored only as SHA-256 hashes, with scopes.

A key is 32 random bytes, so a plain (unsalted) SHA-256 is enough: nobody can guess a preimage,
and hashing lets every request look its key up by an indexed column.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update

from campaigns import clock, db, services
from campaigns.errors import NotFound, UnknownScope
from campaigns.models import DEFAULT_SERVICE_ID, ApiKey
from campaigns.services import Tenant

READ = "campaigns:read"
WRITE = "campaigns:write"
# Sees every service's rows and edits the global suppression list; never given by default.
ADMIN = "admin"
SCOPES = (READ, WRITE)
ALL_SCOPES = (READ, WRITE, ADMIN)
_PREFIX = "hk_"


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime | None
    revoked_at: datetime | None
    service_id: int = DEFAULT_SERVICE_ID

    @property
    def tenant(self) -> Tenant:
        return Tenant(self.service_id, admin=ADMIN in self.scopes)

    def as_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "prefix": self.prefix, "scopes": self.scopes,
                "service_id": self.service_id,
                "created_at": self.created_at.isoformat() if self.created_at else None,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.name, row.prefix, list(row.scopes), row.created_at, row.revoked_at,
                   row.service_id)


def create_key(name: str, scopes: list[str] | tuple[str, ...] = SCOPES, *,
               service: str | int | None = None) -> tuple[KeyInfo, str]:
    """A new key of ``service`` (default: ``default``): its record and the key itself, which is
    never stored and cannot be shown again."""
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown or not scopes:
        raise UnknownScope(f"scopes must be among {', '.join(ALL_SCOPES)}; got {', '.join(unknown) or 'none'}")
    service_id = services.resolve(service)
    key = _PREFIX + secrets.token_urlsafe(32)
    with db.session() as s:
        key_id = s.scalar(insert(ApiKey).values(
            name=name, prefix=key[:10], key_hash=hash_key(key), scopes=sorted(set(scopes)),
            created_at=clock.now(), service_id=service_id,
        ).returning(ApiKey.id))
        return _info(s.get(ApiKey, key_id)), key


def list_keys() -> list[KeyInfo]:
    with db.session() as s:
        return [_info(row) for row in s.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_key(key_id: int) -> KeyInfo:
    """Revoke a key for good; revoking it again changes nothing."""
    with db.session() as s:
        s.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                  .values(revoked_at=clock.now()))
        row = s.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"no API key with id {key_id}")
        return _info(row)


def authenticate(key: str) -> KeyInfo | None:
    """The live key matching ``key``, or None for an unknown or revoked one."""
    if not key.startswith(_PREFIX):
        return None
    with db.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)))
        return _info(row) if row else None
