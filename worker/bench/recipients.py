"""The benchmark's recipients: the demo's mix (about 10% duplicates, 3% invalid), streamed to a file.

Unlike ``worker.cli.demo.generate`` nothing here grows with N, so a million recipients cost a few MB:
distinct numbers come from a counter (no set of numbers seen) and duplicates repeat a bounded
window of recent numbers. The file is written once per (N, seed) and reused, so generating it is
never part of what the benchmark times.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from campaigns.recipients import InvalidRecipient, normalise
from worker.cli.demo import _JUNK, _REGIONS, DEMO_REGION

TAILS = 10 ** 6
_STRIDE = 7919  # prime, so coprime with TAILS: k -> k * _STRIDE % TAILS visits every tail once
_RECENT = 10_000


def _junk() -> list[str]:
    bad = []
    for junk in _JUNK:
        try:
            normalise(junk, DEMO_REGION)
        except InvalidRecipient:
            bad.append(junk)
    return bad


def _distinct_numbers() -> Iterator[phonenumbers.PhoneNumber]:
    """Distinct valid numbers, round robin over the demo's regions (up to ~8 million of them)."""
    bases = []
    for region in _REGIONS:
        kind = PhoneNumberType.FIXED_LINE_OR_MOBILE if region == "US" else PhoneNumberType.MOBILE
        example = phonenumbers.example_number_for_type(region, kind)
        bases.append((example.country_code, str(example.national_number)[:-6]))
    for k in range(TAILS):
        tail = str(k * _STRIDE % TAILS).zfill(6)
        for country_code, head in bases:
            number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(head + tail))
            if phonenumbers.is_valid_number(number):
                yield number


def recipients(n: int, seed: int = 2026) -> Iterator[str]:
    """``n`` raw recipients as a submitter would write them."""
    rng = random.Random(seed)
    junk = _junk()
    numbers = _distinct_numbers()
    recent: deque[phonenumbers.PhoneNumber] = deque(maxlen=_RECENT)
    for _ in range(n):
        roll = rng.random()
        if roll < 0.03:
            yield rng.choice(junk)
        elif roll < 0.13 and recent:
            # The same number in another written form, as real lists hold them.
            number = recent[rng.randrange(len(recent))]
            national = phonenumbers.region_code_for_number(number) == DEMO_REGION
            yield phonenumbers.format_number(
                number, PhoneNumberFormat.NATIONAL if national else PhoneNumberFormat.INTERNATIONAL)
        else:
            number = next(numbers)
            recent.append(number)
            yield phonenumbers.format_number(number, PhoneNumberFormat.E164)


def recipients_file(n: int, seed: int = 2026, directory: str | None = None) -> Path:
    """A file of ``n`` recipients, one a line, made once and reused."""
    path = Path(directory or tempfile.gettempdir()) / f"herald-bench-recipients-{n}-{seed}.txt"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.part")
        with partial.open("w", encoding="utf-8") as f:
            for raw in recipients(n, seed):
                f.write(raw + "\n")
        partial.replace(path)
    return path


def read_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield line.rstrip("\n")
