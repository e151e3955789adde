"""From LLM text deltas to pieces worth handing to TTS.

`SentenceChunker` cuts a streamed reply into chunks as soon as each is complete, so speech starts on
the first sentence (or first long clause) instead of the whole reply. Its output does not depend on how
the stream was split into deltas. `speakable` removes what an LLM writes for screens (markdown, URLs)
and a voice should not read out; apply it to each chunk and skip chunks it leaves empty.
"""

from __future__ import annotations

import re

# Words that end with a period without ending the sentence ("Dr. Rossi", "e.g. pasta").
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "st", "mt", "jr", "sr", "vs", "e.g", "i.e", "cf", "approx",
})

_CLOSERS = "\"'”’)]"
_CANDIDATE = re.compile(
    rf"(?P<sentence>[.!?…]+[{re.escape(_CLOSERS)}]*)(?=\s)"  # sentence end, decided by what follows the space
    r"|(?P<clause>[,;:])(?=\s)"  # not "1,000" or "7:30"
    r"|(?P<dash>—|(?<=\s)–(?=\s))"  # em dash, or a spaced en dash (not "12–3")
    r"|(?P<newline>\n\s*)"  # a blank line ends a sentence; a single newline is a clause boundary
)
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")


class SentenceChunker:
    """Accumulates streamed text and returns speakable chunks as soon as each one is complete.

    A chunk ends at a sentence end (`.`, `!`, `?` followed by whitespace, not after an abbreviation
    and not before a lowercase word), at a clause boundary (`,` `;` `:` `—` or a line break) once the
    chunk has at least `min_clause_chars` characters, or, with no boundary within `max_chars`, at the
    last space before that limit.
    """

    def __init__(self, min_clause_chars: int = 60, max_chars: int = 200) -> None:
        if not 0 < min_clause_chars <= max_chars:
            raise ValueError(f"need 0 < min_clause_chars <= max_chars, got {min_clause_chars}, {max_chars}")
        self.min_clause_chars = min_clause_chars
        self.max_chars = max_chars
        self._buffer = ""

    def push(self, delta: str) -> list[str]:
        """Add a piece of the stream; return the chunks it completed (often none)."""
        self._buffer += delta
        chunks = []
        while (chunk := self._next_chunk()) is not None:
            chunks.append(chunk)
        return chunks

    def flush(self) -> str | None:
        """The end of the stream: return what is left (None if nothing speakable) and start afresh."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None

    def _next_chunk(self) -> str | None:
        self._buffer = self._buffer.lstrip()
        end = self._find_end(self._buffer)
        if end is None:
            return None
        chunk, self._buffer = self._buffer[:end].rstrip(), self._buffer[end:]
        return chunk

    def _find_end(self, text: str) -> int | None:
        """Where the first chunk of `text` ends, or None until more text decides it.

        Candidates are examined strictly left to right and an undecided one stops the search, so the
        result never depends on where the deltas were split.
        """
        for candidate in _CANDIDATE.finditer(text):
            length = len(text[:candidate.end()].rstrip())  # of the chunk it would end
            if length > self.max_chars:
                break
            verdict = self._is_boundary(text, candidate, length >= self.min_clause_chars)
            if verdict is None:
                return None
            if verdict:
                return candidate.end()
        return _cut_long(text, self.max_chars)

    @staticmethod
    def _is_boundary(text: str, candidate: re.Match[str], long_enough: bool) -> bool | None:
        """Whether the candidate ends a chunk; None if the text after it is needed and not here yet."""
        if candidate.group("sentence"):
            return _ends_sentence(text, candidate)
        if candidate.group("newline") is not None:
            if candidate.group("newline").count("\n") > 1 or long_enough:
                return True
            return None if candidate.end() == len(text) else False  # a blank line may still follow
        return long_enough


def _ends_sentence(text: str, candidate: re.Match[str]) -> bool | None:
    following = text[candidate.end():].lstrip()
    if not following:
        return None
    if following[0].islower():  # "at 7 p.m. on Fridays", "well... maybe"
        return False
    word = _WORD_BEFORE.search(text, 0, candidate.start())
    return not (candidate.group() == "." and word is not None and word.group(1).lower() in ABBREVIATIONS)


def _cut_long(text: str, max_chars: int) -> int | None:
    """Cut a run with no boundary at the last space within `max_chars` (or the first after it)."""
    if len(text) <= max_chars:
        return None
    last_space = text.rfind(" ", 0, max_chars + 1)
    if last_space > 0:
        return last_space
    first_space = re.search(r"\s", text[max_chars:])
    return max_chars + first_space.start() if first_space else None


# --- speakable -----------------------------------------------------------------------------------------

_MARKDOWN_LINK = re.compile(r"\[([^\]]+)\]\([^)\s]*\)")
_URL = re.compile(
    r"\b(?:https?://(?:www\.)?|www\.)"
    r"([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)"  # the host, spoken instead of the whole URL
    r"\S*?(?=[.,;:!?)\]]*(?:\s|$))"  # path and query, but not the sentence's punctuation after it
)
_BULLET = re.compile(r"^[ \t]*(?:[-*+•]|#{1,6})[ \t]+", re.MULTILINE)
_RULE_LINE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.MULTILINE)  # --- or ***
_NOISE = re.compile(r"[*`#]|(?<!\w)_+|_+(?!\w)")  # emphasis, code, headings; keeps snake_case
_LINE_END_PUNCTUATION = tuple(".,;:!?…")


def speakable(text: str) -> str:
    """`text` without markdown noise: links become their text, URLs their host, bullets and emphasis
    marks go, and lines are joined (with a comma after a line that has no punctuation of its own)."""
    text = _MARKDOWN_LINK.sub(r"\1", text)
    text = _URL.sub(r"\1", text)
    text = _RULE_LINE.sub("", text)
    text = _BULLET.sub("", text)
    text = _NOISE.sub("", text)
    return _join_lines(text)


def _join_lines(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.splitlines()]
    joined = ""
    for line in filter(None, lines):
        if joined:
            joined += " " if joined.endswith(_LINE_END_PUNCTUATION) else ", "
        joined += line
    return joined
