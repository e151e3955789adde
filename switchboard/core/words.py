"""Text as words to compare: lowercase, without punctuation or hyphens ("Uh-huh." and "uh huh" are the
same two words), apostrophes kept ("don't"). The backchannel rule, its config check and PocketSphinx's
phrase lists all read words this way."""

from __future__ import annotations

import re

_NOT_A_LETTER = re.compile(r"[^a-z']+")


def words(text: str) -> tuple[str, ...]:
    return tuple(_NOT_A_LETTER.sub(" ", text.lower()).split())
