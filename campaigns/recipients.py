"""Recipient normalisation to E.164 with phonenumbers. Pure functions, no storage."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType, ValidationResult


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
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as exc:
        raise InvalidRecipient(_PARSE_REASONS.get(exc.error_type, "unparseable")) from None
    # number_type is UNKNOWN exactly when the number is invalid, so one call answers both
    # questions: intake runs this a million times and phonenumbers is most of its cost.
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        length = phonenumbers.is_possible_number_with_reason(number)
        raise InvalidRecipient(_LENGTH_REASONS.get(length, "not a valid number for its region"))
    if reason := _NO_SMS.get(kind):
        raise InvalidRecipient(reason)
    regions = _regions(number.country_code)
    region = regions[0] if len(regions) == 1 else phonenumbers.region_code_for_number(number)
    return Normalised(f"+{number.country_code}{phonenumbers.national_significant_number(number)}", region)


@functools.cache
def _regions(country_code: int) -> tuple[str, ...]:
    return tuple(phonenumbers.region_codes_for_country_code(country_code))


def phone_key(e164: str) -> int:
    """A compact dedup key: E.164 digits as an int (distinct numbers never share one)."""
    return int(e164[1:])
