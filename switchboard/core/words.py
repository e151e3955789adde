"""Words as the turn rules compare them: lowercase, without punctuation or hyphens ("Uh-huh." and
"uh huh" are the same two words), apostrophes kept ("don't")."""

from __future__ import annotations

import re

_NOT_A_LETTER = re.compile(r"[^a-z']+")


def words(text: str) -> tuple[str, ...]:
    return tuple(_NOT_A_LETTER.sub(" ", text.lower().replace("-", " ")).split())
