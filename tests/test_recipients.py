"""Normalisation and dedup across countries and written forms (pure rules plus SQLite intake)."""

import uuid

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import select

import worker  # noqa: F401  registers the provider kinds intake checks (campaigns/ports.py)
from campaigns import db, intake, suppressions
from campaigns.models import Message
from campaigns.recipients import InvalidRecipient, normalise
from campaigns.schema import CampaignSpec
from campaigns.settings import ProviderAccount, configure

# One mobile number per country, written every way people write it: national, international,
# spaced, punctuated, with the 00 prefix and with the "(0)" trunk-prefix habit.
FORMS = {
    "US": ("+12015550123", ["(201) 555-0123", "201.555.0123", "1-201-555-0123", "+1 201 555 0123",
                            "001 201 555 0123"]),
    "GB": ("+447400123456", ["07400 123456", "07400-123-456", "(07400) 123456", "+44 7400 123456",
                             "0044 7400 123456", "+44 (0)7400 123456"]),
    "KE": ("+254712345678", ["0712 345678", "0712-345-678", "712345678", "+254 712 345 678",
                             "00254712345678", "+254-712-345-678"]),
    "UZ": ("+998912345678", ["91 234 56 78", "91-234-56-78", "(91) 234-56-78", "+998 91 234 56 78",
                             "00998912345678", "912345678"]),
    "UA": ("+380501234567", ["050 123 4567", "(050) 123-45-67", "0501234567", "+380 50 123 4567",
                             "00380501234567", "+380-50-123-45-67"]),
    "DE": ("+4915123456789", ["01512 3456789", "0151/23456789", "0151-234-567-89", "+49 1512 3456789",
                              "0049 151 23456789", "+49 (0)151 23456789"]),
    "IN": ("+919876543210", ["98765 43210", "098765 43210", "98765-43210", "+91 98765 43210",
                             "0091 9876543210", "+91-98765-43210"]),
    "BR": ("+5511961234567", ["(11) 96123-4567", "11 96123 4567", "11961234567", "+55 11 96123-4567",
                              "0055 11 96123 4567", "+55 (11) 9 6123-4567"]),
}
NORMALISES = [(raw, region, e164) for region, (e164, forms) in FORMS.items() for raw in forms]

JUNK = [
    ("", "GB", "empty number"),
    ("   ", "GB", "empty number"),
    ("call me", "GB", "not a phone number"),
    ("12345", "GB", "not a valid number"),
    ("+999 1234567", None, "unknown country code"),
    ("0712345678", None, "without a region"),  # national, and no region to read it in
    ("+254 7", "KE", "too short"),
    ("07400 1234567890", "GB", "too long"),
    ("x" * 300, None, "too long"),
    ("+44 20 7946 0958", None, "fixed line"),
    ("+49 30 123456", "DE", "fixed line"),
    ("+380 44 123 4567", "UA", "fixed line"),
    ("0800 123 4567", "GB", "toll-free"),
    ("+1 800 555 0199", None, "toll-free"),
]


@pytest.mark.parametrize("raw, region, e164", NORMALISES)
def test_every_written_form_normalises_to_one_e164(raw, region, e164):
    assert normalise(raw, region) == normalise(e164) and normalise(raw, region).e164 == e164
    assert normalise(raw, region).region == region


@pytest.mark.parametrize("raw, region, reason", JUNK)
def test_junk_is_rejected_with_a_specific_reason(raw, region, reason):
    with pytest.raises(InvalidRecipient, match=reason) as caught:
        normalise(raw, region)
    if raw.strip():
        assert raw.strip() not in str(caught.value), "a reason never repeats the number"


@pytest.fixture
def store(sqlite_settings):
    """Embedded SQLite with one provider account: intake without the real services."""
    configure(sqlite_settings.model_copy(update={"providers": {
        "tiko": ProviderAccount(kind="tikosms", base_url="http://127.0.0.1:9", prices={"*": "0.01"})}}))
    return sqlite_settings


def _spec(region=None, message="Hello", **extra):
    return CampaignSpec.model_validate({"from": "Herald", "message": message, "default_region": region, **extra})


def _phones(campaign_id):
    with db.session() as s:
        return list(s.scalars(select(Message.phone).where(Message.campaign_id == uuid.UUID(campaign_id)).order_by(Message.id)))


@pytest.mark.parametrize("region", FORMS)
def test_dedup_after_normalisation_per_country(store, region):
    e164, forms = FORMS[region]
    receipt = intake.submit(_spec(region), [e164, *forms, "call me"])
    assert (receipt.accepted, receipt.duplicates, receipt.invalid) == (1, len(forms), 1)
    assert _phones(receipt.campaign_id) == [e164]


def test_dedup_across_countries_keeps_the_first_occurrences_fields(store):
    # National forms need their own region, so objects from several countries arrive in E.164
    # and international forms, interleaved with their national twins for the campaign region (KE).
    recipients = [{"to": "0701234567", "client_ref": "first"}, {"to": "+254 701 234567", "client_ref": "second"}]
    for e164, forms in FORMS.values():
        recipients += [{"to": forms[3], "client_ref": "first"}, {"number": e164, "client_ref": "second"}]
    receipt = intake.submit(_spec("KE"), recipients)
    assert (receipt.submitted, receipt.accepted, receipt.duplicates) == (18, 9, 9)
    with db.session() as s:
        refs = set(s.scalars(select(Message.client_ref).where(Message.campaign_id == uuid.UUID(receipt.campaign_id))))
    assert refs == {"first"}


# --- the property: every submitted recipient is counted exactly once ---------------------------

_VALID = [e164 for e164, _ in FORMS.values()] + [f for _, forms in FORMS.values() for f in forms[3:]]
recipient = st.one_of(
    st.sampled_from(_VALID),
    st.sampled_from([f for _, forms in FORMS.values() for f in forms[:3]]),  # national: GB reads few
    st.sampled_from([raw for raw, _, _ in JUNK]),
    st.text(max_size=12),
    st.from_regex(r"\+?(44|254|49)[ 0-9()-]{6,12}", fullmatch=True),
    st.builds(lambda to, ref: {"to": to, "client_ref": ref}, st.sampled_from(_VALID), st.text(max_size=5)),
    st.just({"name": "no number"}),
    st.just(42),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(recipient, min_size=1, max_size=40), st.lists(st.sampled_from(_VALID), max_size=4))
def test_every_recipient_is_counted_once(store, recipients, opted_out):
    suppressions.add(opted_out, service_id=1)
    receipt = intake.submit(_spec("GB"), recipients)

    assert receipt.accepted + receipt.duplicates + receipt.invalid + receipt.suppressed == len(recipients)
    phones = _phones(receipt.campaign_id)
    assert len(phones) == receipt.accepted == len(set(phones))
    suppressed = {e.phone for e in suppressions.entries(service_id=1)}
    assert not suppressed & set(phones)
    for phone in phones:
        parsed = phonenumbers.parse(phone)
        assert phonenumbers.is_valid_number(parsed)
        assert phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == phone


def _examples() -> list[phonenumbers.PhoneNumber]:
    from phonenumbers import PhoneNumberType

    examples = [phonenumbers.example_number_for_type(region, kind)
                for region in sorted(phonenumbers.SUPPORTED_REGIONS) for kind in range(PhoneNumberType.UNKNOWN)]
    examples += [phonenumbers.example_number_for_non_geo_entity(cc)
                 for cc in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)]
    return list(filter(None, examples))


def test_region_and_type_are_phonenumbers_own_for_every_region_and_type():
    """recipients.region_and_type calls a phonenumbers helper that is not exported: hold it to the
    public functions over every region's example of every type, each also one digit off."""
    from campaigns.recipients import region_and_type

    checked = 0
    for example in _examples():
        for national in (example.national_number, example.national_number // 10,
                         example.national_number * 10 + 7):
            number = phonenumbers.PhoneNumber(country_code=example.country_code, national_number=national)
            got = region_and_type(number.country_code, phonenumbers.national_significant_number(number))
            assert got == (phonenumbers.region_code_for_number(number), phonenumbers.number_type(number)), \
                (example.country_code, national)
            checked += 1
    assert checked > 3000


def _public_normalise(raw: str, region: str | None):
    """normalise as phonenumbers' public functions alone give it: what the fast path must equal."""
    from phonenumbers import PhoneNumberType

    from campaigns.recipients import _LENGTH_REASONS, _NO_SMS, _PARSE_REASONS, Normalised

    text = raw.strip()
    text = "+" + text[2:] if text.startswith("00") else text
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        return _PARSE_REASONS.get(exc.error_type, "unparseable")
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        return _LENGTH_REASONS.get(phonenumbers.is_possible_number_with_reason(number),
                                   "not a valid number for its region")
    return _NO_SMS.get(kind) or Normalised(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
                                           phonenumbers.region_code_for_number(number))


def _ours(raw: str, region: str | None):
    try:
        return normalise(raw, region)
    except InvalidRecipient as exc:
        return str(exc)


def test_e164_numbers_normalise_as_phonenumbers_parses_them():
    """The E.164 fast path (no phonenumbers.parse) gives parse's number, or leaves it to parse:
    every region's example of every type written in E.164, and the same with a digit dropped,
    added, or a 0 or 1 put in front (Italy's leading zero, national prefixes parse strips)."""
    checked = 0
    for example in _examples():
        national = phonenumbers.national_significant_number(example)
        for digits in (national, national[:-1], national + "7", "0" + national, "1" + national, national[1:]):
            raw = f"+{example.country_code}{digits}"
            for region in ("GB", None):
                assert _ours(raw, region) == _public_normalise(raw, region), raw
                checked += 1
    assert checked > 10000


@settings(max_examples=2000, deadline=None)
@given(st.from_regex(r"\A(\+|00)[0-9]{4,16}\Z"), st.sampled_from(["GB", "US", "IT", None]))
def test_any_plus_and_digits_normalise_as_phonenumbers_parses_them(raw, region):
    assert _ours(raw, region) == _public_normalise(raw, region)
