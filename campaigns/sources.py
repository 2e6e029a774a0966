"""Recipient files, streamed one recipient at a time: a million-row file is never held whole."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from campaigns.recipients import InvalidRecipient

NUMBER_COLUMNS = ("to", "number")


def read_recipients(path: Path) -> Iterator[Any]:
    """Recipients from JSONL (``.jsonl``/``.ndjson``: one string or object a line), CSV with a
    header naming a ``to`` or ``number`` column (other columns are template fields), or plain
    text with one number a line. An unreadable line becomes an invalid recipient, never an abort.
    """
    with path.open(newline="", encoding="utf-8-sig") as f:
        if path.suffix in (".jsonl", ".ndjson"):
            for line in f:
                if line.strip():
                    yield _json_line(line)
            return
        header = next(csv.reader([f.readline()]), [])
        f.seek(0)
        if any(column.strip().lower() in NUMBER_COLUMNS for column in header):
            reader = csv.reader(f)
            names = [column.strip().lower() for column in next(reader)]
            for row in reader:
                if row:
                    yield dict(zip(names, row))
        else:
            for line in f:
                if line.strip():
                    yield line.strip()


def _json_line(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return InvalidRecipient("a line that is not valid JSON")
