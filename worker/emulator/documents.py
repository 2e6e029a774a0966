"""The providers' own OpenAPI documents (``specs/``) and the request checks built from them.

AikData's document is the seed's JSON as is; TikoSMS's and MobSMS's are rebuilt from their seeds'
flattened text, each change noted in the file (``x-herald-change``). An emulator asks
``refusal(...)`` before serving a request and answers its provider's own error with the words
it returns. Those words name the field and the rule, never the value: a refused number or text
must not come back into Herald's logs through the provider's error message.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from openapi_schema_validator import OAS30Validator

SPECS = Path(__file__).with_name("specs")
FILES = {"aikdata": "aikdata.json", "tikosms": "tikosms.yaml", "mobsms": "mobsms.yaml"}


@functools.cache
def document(provider: str) -> dict:
    text = (SPECS / FILES[provider]).read_text()
    if FILES[provider].endswith(".json"):
        return json.loads(text)
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 10x faster


def prepare() -> None:
    """Read every document and build every request check now, not on a provider's first request
    (which would then answer late enough to look ambiguous to a client with a short timeout)."""
    for provider in FILES:
        for path, item in document(provider)["paths"].items():
            for method in item:
                if method in ("get", "post", "put", "delete", "patch"):
                    _operation(provider, method, path)


def _validator(schema: dict) -> OAS30Validator:
    return OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER)


@dataclass(frozen=True)
class Operation:
    """One method of one path: what its body and query parameters must be."""

    body: OAS30Validator | None
    body_required: bool
    params: tuple[tuple[str, bool, dict, OAS30Validator], ...]  # each query parameter

    def refusal(self, body: object, query: dict[str, str]) -> str | None:
        """Why the document refuses this request (the first problem), or None.

        ``body`` is the parsed JSON body, or ``NOT_JSON`` when there was one that does not parse.
        """
        for name, required, schema, validator in self.params:
            if name not in query:
                if required:
                    return f"The {name} field is required."
                continue
            problem = _first_problem(validator, _from_query(query[name], schema), name)
            if problem:
                return problem
        if self.body is None:
            return None
        if body is NOT_JSON:
            return "The request body must be JSON."
        if body is None:
            return "The request body is required." if self.body_required else None
        return _first_problem(self.body, body)


NOT_JSON = object()


def operation(provider: str, method: str, path: str) -> Operation:
    return _operation(provider, method.lower(), path)


@functools.cache
def _operation(provider: str, method: str, path: str) -> Operation:
    item = document(provider)["paths"][path]
    op = item[method]
    params = tuple((p["name"], bool(p.get("required")), p.get("schema") or {}, _validator(p.get("schema") or {}))
                   for p in [*item.get("parameters", []), *op.get("parameters", [])] if p["in"] == "query")
    request_body = op.get("requestBody")
    if request_body is None:
        return Operation(None, False, params)
    schema = request_body["content"]["application/json"]["schema"]
    return Operation(_validator(schema), bool(request_body.get("required")), params)


def response_schema(provider: str, method: str, path: str, status: int) -> dict | None:
    """The schema the document gives this answer, or None where it lists no such answer."""
    answer = document(provider)["paths"][path][method.lower()]["responses"].get(str(status))
    if not answer or "content" not in answer:
        return None
    media = answer["content"]["application/json"]
    return media.get("schema") or {"example": media.get("example")}


def _from_query(value: str, schema: dict):
    """Query values are text: read them as the schema's type where they can be."""
    if schema.get("type") == "integer":
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _first_problem(validator: OAS30Validator, instance: object, name: str | None = None) -> str | None:
    error = next(iter(sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))), None)
    if error is None:
        return None
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        # "'to' is a required property": the one word between quotes is the missing field.
        path.append(error.message.split("'")[1])
        field = name or ".".join(path)
        return f"The {field} field is required."
    field = name or ".".join(path) or "body"
    rule = error.validator_value
    words = {
        "type": f"must be {'an' if rule in ('object', 'array', 'integer') else 'a'} {rule}",
        "maxLength": f"must not be greater than {rule} characters",
        "maxItems": f"must not have more than {rule} items",
        "minimum": f"must be at least {rule}",
        "maximum": f"must not be greater than {rule}",
        "enum": "is invalid",
        "format": f"must be a valid {rule}",
        "oneOf": "is invalid",
    }
    return f"The {field} field {words.get(error.validator, 'is invalid')}."


__all__ = ["NOT_JSON", "Operation", "document", "operation", "prepare", "response_schema"]
