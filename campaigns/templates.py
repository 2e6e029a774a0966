"""Message templates with ``{field}`` placeholders (the MobSMS bulk convention).

Rendering is plain substitution: no attribute access, indexing or format specs, so a template
can never execute code. ``{{`` and ``}}`` stand for literal braces.
"""

from __future__ import annotations

import re

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


class MissingField(KeyError):
    def __init__(self, field: str):
        super().__init__(field)
        self.field = field

    def __str__(self) -> str:
        return f"missing template field '{self.field}'"


def fields(template: str) -> set[str]:
    return {m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)}


def render(template: str, values: dict[str, object]) -> str:
    def substitute(m: re.Match) -> str:
        name = m.group(1)
        if name is None:
            return m.group(0)[0]
        value = values.get(name)
        if value is None or value == "":
            raise MissingField(name)
        return str(value)

    return _PLACEHOLDER.sub(substitute, template)
