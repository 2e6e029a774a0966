"""The Laravel SMS gateway (seed 001), v1 (username + password) and v2 (API key).

- v1: ``POST /v1/sms/send`` form fields ``numbers`` (comma separated), ``message_body``,
  ``username``, ``password``. Used when the account has a username.
- v2: ``POST /api/v2/sms/send`` with ``X-API-Key``; ``GET /api/v2/account/balance``.

The gateway returns no message id and reports nothing afterwards: ``pushes_reports`` and
``can_poll`` are False, and an accepted message stays ``sent``. Errors: 400 invalid number,
401 bad credentials or missing key; 429 with ``x-ratelimit-*`` headers.

Unverified, because the document does not show them: the v2 send body (the Swagger page the
document links is not part of it; sent here as the v1 fields, ``numbers`` and ``message_body``,
in JSON) and the balance answer (``balance`` read). Numbers go as the account's
``number_format`` says: ``e164`` (``+254712345678``) or ``national`` (``0712345678``, as the
document's examples write them).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import ClassVar

import httpx
import phonenumbers

from campaigns.settings import ProviderAccount
from campaigns.statuses import MessageStatus
from worker.providers.base import (
    Accepted, BaseProvider, Outgoing, classify, error_text, http_client, json_body, to_decimal,
    transport_errors,
)


class LaravelProvider(BaseProvider):
    kind: ClassVar[str] = "laravel"
    pushes_reports: ClassVar[bool] = False
    can_poll: ClassVar[bool] = False

    def __init__(self, account: ProviderAccount, client: httpx.Client | None = None):
        self.v1 = bool(account.username)
        self.national = account.number_format == "national"
        self.credentials = {"username": account.username,
                            "password": account.password.get_secret_value()}
        headers = {} if self.v1 else {"X-API-Key": account.token.get_secret_value()}
        self.client = client or http_client(account, Accept="application/json", **headers)

    def send(self, message: Outgoing) -> Accepted:
        return self.send_many([message])

    def send_many(self, messages: list[Outgoing]) -> Accepted:
        """One call for several recipients of one text (``numbers`` is comma separated).

        The gateway answers for the call as a whole: one invalid number refuses them all.
        """
        if len({m.body for m in messages}) != 1 or any("," in m.to for m in messages):
            raise ValueError("one text, and numbers without commas")
        fields = {"numbers": ",".join(self._number(m.to) for m in messages), "message_body": messages[0].body}
        with transport_errors():
            if self.v1:
                response = self.client.post("/v1/sms/send", data={**fields, **self.credentials})
            else:
                response = self.client.post("/api/v2/sms/send", json=fields)
        data = json_body(response)
        if response.status_code not in (200, 201):
            raise classify(response, error_text(data))
        ref = data.get("id") or data.get("message_id")
        return Accepted(str(ref) if ref else None, "accepted", MessageStatus.SENT)

    def _number(self, e164: str) -> str:
        if not self.national:
            return e164
        national = phonenumbers.format_number(phonenumbers.parse(e164), phonenumbers.PhoneNumberFormat.NATIONAL)
        return re.sub(r"\D", "", national)

    def balance(self) -> Decimal | None:
        if self.v1:
            return None  # only the v2 API has a balance endpoint
        return to_decimal(self.call("GET", "/api/v2/account/balance").get("balance"))
