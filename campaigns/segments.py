"""SMS encoding and segment counting (3GPP TS 23.038). Pure functions."""

from __future__ import annotations

from typing import NamedTuple

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension characters take two septets (escape + character).
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


class Encoding(NamedTuple):
    name: str  # "GSM7" or "UCS2"
    units: int  # septets for GSM7, UTF-16 code units for UCS2
    segments: int


def encode_info(text: str) -> Encoding:
    septets = 0
    for ch in text:
        if ch in GSM7_BASIC:
            septets += 1
        elif ch in GSM7_EXTENSION:
            septets += 2
        else:
            return _ucs2(text)
    if septets <= 160:
        return Encoding("GSM7", septets, 1)
    # Multi-part: 153 septets a part, and an escape pair never splits across parts.
    parts, used = 1, 0
    for ch in text:
        width = 2 if ch in GSM7_EXTENSION else 1
        if used + width > 153:
            parts, used = parts + 1, 0
        used += width
    return Encoding("GSM7", septets, parts)


def _ucs2(text: str) -> Encoding:
    units = len(text.encode("utf-16-le")) // 2
    if units <= 70:
        return Encoding("UCS2", units, 1)
    # 67 units a part; a surrogate pair (emoji) never splits across parts.
    parts, used = 1, 0
    for ch in text:
        width = 2 if ord(ch) > 0xFFFF else 1
        if used + width > 67:
            parts, used = parts + 1, 0
        used += width
    return Encoding("UCS2", units, parts)
