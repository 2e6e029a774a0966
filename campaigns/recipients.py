"""Reading and normalising recipients (E.164 with phonenumbers). Pure functions, no storage.

Intake's pool processes import this module alone (campaigns/intake.py): keep its imports light.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE, NumberParseException, PhoneMetadata, PhoneNumber, PhoneNumberType,
    ValidationResult,
)
# Not exported: the steps of phonenumbers.parse and number_type that normalise takes one by one
# (see _e164_parts and region_and_type; tests/test_recipients.py holds both to the public functions).
from phonenumbers.phonenumberutil import (
    _maybe_strip_national_prefix_carrier_code, _number_type_helper, re_compile,
)

from campaigns.schema import unstorable, url_problem
from campaigns.templates import MissingField, render

CLIENT_REF_MAX = 255
CALLBACK_URL_MAX = 2048


class InvalidRecipient(ValueError):
    """Carries a reason safe to store and show: it never repeats the number itself."""


@dataclass(frozen=True, slots=True)
class Normalised:
    e164: str
    region: str | None


# Types that can never receive an SMS; FIXED_LINE_OR_MOBILE and UNKNOWN get the benefit of the doubt.
_NO_SMS = {
    PhoneNumberType.FIXED_LINE: "a fixed line cannot receive SMS",
    PhoneNumberType.TOLL_FREE: "a toll-free number cannot receive SMS",
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number cannot receive SMS",
    PhoneNumberType.SHARED_COST: "a shared-cost number cannot receive SMS",
    PhoneNumberType.PAGER: "a pager number cannot receive SMS",
    PhoneNumberType.UAN: "a UAN number cannot receive SMS",
    PhoneNumberType.VOICEMAIL: "a voicemail number cannot receive SMS",
}

_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country code, or a national number without a region",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}

_LENGTH_REASONS = {
    ValidationResult.TOO_SHORT: "too short for its country",
    ValidationResult.TOO_LONG: "too long for its country",
    ValidationResult.INVALID_LENGTH: "a length its country never uses",
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
}


def normalise(raw: str, default_region: str | None = None) -> Normalised:
    """Return the E.164 form of ``raw``, or raise InvalidRecipient with a specific reason."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidRecipient("empty number")
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    number = None
    if (parts := _e164_parts(text)) is None:
        try:
            number = phonenumbers.parse(text, default_region)
        except NumberParseException as exc:
            raise InvalidRecipient(_PARSE_REASONS.get(exc.error_type, "unparseable")) from None
        parts = number.country_code, phonenumbers.national_significant_number(number)
    country_code, national = parts
    region, kind = region_and_type(country_code, national)
    if kind == PhoneNumberType.UNKNOWN:
        number = number or PhoneNumber(country_code=country_code, national_number=int(national))
        length = phonenumbers.is_possible_number_with_reason(number)
        raise InvalidRecipient(_LENGTH_REASONS.get(length, "not a valid number for its region"))
    if reason := _NO_SMS.get(kind):
        raise InvalidRecipient(reason)
    return Normalised(f"+{country_code}{national}", region)


# Already E.164, as most lists are written: ASCII digits only (\d would take other scripts' digits).
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def _e164_parts(text: str) -> tuple[int, str] | None:
    """The country code and national significant number ``phonenumbers.parse`` finds in ``text``
    if it is a plain E.164 number, or None where parse must decide. Intake runs this a million
    times: parse's search for a number inside any text was half of phonenumbers' time, and for
    E.164 the country code and the national number are simply the digits. Parse's own steps are
    kept where they can change the digits: a national number starting with 0 (Italy's leading
    zero) or with a national prefix that parse would strip is handed to parse."""
    if not _E164.fullmatch(text):
        return None
    for end in (2, 3, 4):  # country codes are prefix-free: the first known one is the one
        country_code = int(text[1:end])
        if country_code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None  # parse says why
    national = text[end:]
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(
        country_code, COUNTRY_CODE_TO_REGION_CODE[country_code][0])
    if national[0] == "0" or metadata is None or _maybe_strip_national_prefix_carrier_code(
            national, metadata)[1] != national:
        return None
    return country_code, national


def region_and_type(country_code: int, national: str) -> tuple[str | None, int]:
    """``(phonenumbers.region_code_for_number, phonenumbers.number_type)`` of a number, its type
    UNKNOWN exactly when the number is invalid. For a code many regions share (+1, +44), finding
    the region already checks the number against a region's types, and number_type would find
    the region again to check them once more: here each is done once."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if not regions:
        return None, PhoneNumberType.UNKNOWN
    if len(regions) == 1:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, regions[0])
        kind = PhoneNumberType.UNKNOWN if metadata is None else _number_type_helper(national, metadata)
        return regions[0], kind
    for region in regions:  # as region_code_for_number walks them
        metadata = PhoneMetadata.metadata_for_region(region, None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            if re_compile(metadata.leading_digits).match(national):
                return region, _number_type_helper(national, metadata)
        elif (kind := _number_type_helper(national, metadata)) != PhoneNumberType.UNKNOWN:
            return region, kind
    return None, PhoneNumberType.UNKNOWN


def phone_key(e164: str) -> int:
    """A compact dedup key: E.164 digits as an int (distinct numbers never share one)."""
    return int(e164[1:])


# PostgreSQL text cannot hold NUL; a file with one in a field loses that recipient, not the campaign.
NUL_REASON = "a field holds a NUL (\\u0000) or lone surrogate character, which text cannot hold"


def read_recipient(raw: Any) -> tuple[str, Mapping[str, Any] | None, str | None, str | None]:
    """``(number, template fields, client_ref, callback_url)`` of one raw recipient.

    Plain code rather than a pydantic model per row: this runs once per recipient, a million
    times for a large campaign. Empty strings (a blank CSV cell) count as absent.
    """
    if isinstance(raw, str):
        return raw, None, None, None
    if isinstance(raw, InvalidRecipient):  # a source could not read this one (campaigns.sources)
        raise raw
    if not isinstance(raw, Mapping):
        raise InvalidRecipient("a recipient must be a string or an object")
    phone = raw.get("to") or raw.get("number")
    if not phone:
        raise InvalidRecipient("no number under 'to' or 'number'")
    if not isinstance(phone, str):
        raise InvalidRecipient("the number must be a string")
    client_ref = raw.get("client_ref") or None
    if client_ref is not None and (not isinstance(client_ref, str) or len(client_ref) > CLIENT_REF_MAX):
        raise InvalidRecipient(f"client_ref must be a string of at most {CLIENT_REF_MAX} characters")
    callback_url = raw.get("callback_url") or None
    if callback_url is not None and not (isinstance(callback_url, str) and len(callback_url) <= CALLBACK_URL_MAX
                                         and url_problem(callback_url) is None):
        raise InvalidRecipient(f"callback_url must be an http(s) URL with a host, at most {CALLBACK_URL_MAX} characters")
    if unstorable(f"{client_ref or ''}{callback_url or ''}"):
        raise InvalidRecipient(NUL_REASON)
    return phone, raw, client_ref, callback_url


# (e164, region, body, client_ref, callback_url), or why the recipient is invalid.
Prepared = tuple[str, str | None, str | None, str | None, str | None] | str


def prepare(chunk: list[Any], default_region: str | None, template: str | None) -> list[Prepared]:
    """Each raw recipient as ``(e164, region, body, client_ref, callback_url)``, or the reason it
    is invalid. Pure, and what the pool processes run: ``template`` None when it has no fields."""
    out: list[Prepared] = []
    for raw in chunk:
        try:
            phone, values, client_ref, callback_url = read_recipient(raw)
            number = normalise(phone, default_region)
            body = render(template, values or {}) if template is not None else None
            if body is not None and unstorable(body):
                raise InvalidRecipient(NUL_REASON)
        except (InvalidRecipient, MissingField) as exc:
            out.append(str(exc))
            continue
        out.append((number.e164, number.region, body, client_ref, callback_url))
    return out
