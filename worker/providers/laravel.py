"""The Laravel SMS gateway (seed 001), v1 (username + password) and v2 (API key).

- v1: ``POST /v1/sms/send`` form fields ``numbers`` (comma separated), ``message_body``,
  ``username``, ``password``. Used when the account has a username.
- v2: ``POST /api/v2/sms/send`` with ``X-API-Key``; ``GET /api/v2/account/balance``.

The gateway returns no message id and reports nothing afterwards: ``pushes_reports`` and
``can_poll`` are False, and an accepted message stays ``sent``. Errors: 400 invalid number,
401 bad credentials or missing key; 429 with ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import httpx

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
        fields = {"numbers": ",".join(m.to for m in messages), "message_body": messages[0].body}
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

    def balance(self) -> Decimal | None:
        if self.v1:
            return None  # only the v2 API has a balance endpoint
        return to_decimal(self.call("GET", "/api/v2/account/balance").get("balance"))
