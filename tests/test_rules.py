"""Pure rules: normalisation, segments, templates, statuses, backoff."""

import pytest

from campaigns.recipients import InvalidRecipient, normalise
from campaigns.segments import encode_info
from campaigns.statuses import MessageStatus, can_move
from campaigns.templates import MissingField, render
from worker.send.dispatch import backoff


@pytest.mark.parametrize("raw, region, e164", [
    ("0701234567", "KE", "+254701234567"),
    ("+254 701 234567", None, "+254701234567"),
    ("07400 123456", "GB", "+447400123456"),
    ("0044 7400 123456", None, "+447400123456"),
    ("(201) 555-0123", "US", "+12015550123"),
])
def test_normalise_to_e164(raw, region, e164):
    assert normalise(raw, region).e164 == e164


@pytest.mark.parametrize("raw, region, reason", [
    ("", None, "empty"),
    ("call me", "GB", "not a phone number"),
    ("0701234567", None, "region"),
    ("+44 20", None, "too short"),
    ("+44 20 7946 0958", None, "fixed line"),
])
def test_invalid_numbers_have_specific_reasons(raw, region, reason):
    with pytest.raises(InvalidRecipient, match=reason):
        normalise(raw, region)


@pytest.mark.parametrize("text, encoding, segments", [
    ("a" * 160, "GSM7", 1),
    ("a" * 161, "GSM7", 2),
    ("€" * 80, "GSM7", 1),          # extension characters count twice: 160 septets
    ("€" * 81, "GSM7", 2),
    ("a" * 152 + "€", "GSM7", 1),   # 154 septets still fit in one
    ("я" * 70, "UCS2", 1),
    ("я" * 71, "UCS2", 2),
    ("😀" * 35, "UCS2", 1),          # each emoji is two UTF-16 units
    ("😀" * 36, "UCS2", 2),
    ("^{}\\[~]|€" * 8 + "ab", "GSM7", 1),   # nine extension characters are 18 septets: 146
    ("^{}\\[~]|€" * 9, "GSM7", 2),          # 162 septets
    ("a" * 306, "GSM7", 2),           # 2 × 153
    ("a" * 307, "GSM7", 3),
    ("a" * 152 + "€" + "a" * 10, "GSM7", 2),  # the escape pair moves whole to the second part
    ("€" * 153, "GSM7", 3),           # 306 septets, but 76 pairs a part: 76 + 76 + 1
    ("Café, 10€ {ok}\n@£$¥", "GSM7", 1),
    ("ç", "UCS2", 1),                 # only capital Ç is in the GSM-7 alphabet
    ("a" * 159 + "ç", "UCS2", 3),     # one non-GSM character makes the whole text UCS-2: 160 units
    ("я" * 134, "UCS2", 2),           # 2 × 67
    ("я" * 135, "UCS2", 3),
    ("я" * 66 + "😀" + "я" * 10, "UCS2", 2),  # the surrogate pair moves whole to the second part
    ("😀" * 67, "UCS2", 3),           # 134 units, but 33 pairs a part: 33 + 33 + 1
])
def test_segments(text, encoding, segments):
    info = encode_info(text)
    assert (info.name, info.segments) == (encoding, segments)


def test_template_fills_fields_and_never_evaluates():
    assert render("Hi {name}, {{literal}}", {"name": "Ann"}) == "Hi Ann, {literal}"
    assert render("{name.__class__}", {"name": "x"}) == "{name.__class__}"
    with pytest.raises(MissingField):
        render("Hi {name}", {})


def test_statuses_only_move_forward():
    assert can_move(MessageStatus.SENT, MessageStatus.DELIVERED)
    assert not can_move(MessageStatus.DELIVERED, MessageStatus.SENT)
    assert not can_move(MessageStatus.DELIVERED, MessageStatus.FAILED)


def test_backoff_is_capped_and_jittered():
    assert backoff(1, rng=lambda: 1.0) == 0.5
    assert backoff(30, rng=lambda: 1.0) == 60.0
    assert backoff(3, rng=lambda: 0.0) == 0.0
