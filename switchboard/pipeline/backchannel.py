"""Is what the caller said while the bot talked a backchannel ("yeah", "uh-huh", "okay") or an interruption?

Recognisers write the same sound many ways ("Uh-huh.", "uh huh", "Mm-hmm", "mhm", "Okay."), so both the
transcript and the configured words are reduced to lowercase words without punctuation or hyphens, and
the transcript is taken apart greedily into configured words (longest first). Whatever is left over are
the other words: fewer than `min_words` of them is still a backchannel, unless one of them is an
interrupt word ("no", "wait", "hold on"): those interrupt however few the words (as Vapi's
`interruptionPhrases` beside its `numWords`), so raising `min_words` never makes "stop" pass.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NOT_A_LETTER = re.compile(r"[^a-z']+")


def _words(text: str) -> list[str]:
    return _NOT_A_LETTER.sub(" ", text.lower().replace("-", " ")).split()


def other_words(transcript: str, backchannel_words: Sequence[str]) -> list[str]:
    """The words of `transcript` that are not part of a backchannel phrase."""
    phrases = sorted({tuple(_words(phrase)) for phrase in backchannel_words if _words(phrase)},
                     key=len, reverse=True)
    words, rest, at = _words(transcript), [], 0
    while at < len(words):
        match = next((phrase for phrase in phrases if tuple(words[at:at + len(phrase)]) == phrase), None)
        if match is None:
            rest.append(words[at])
            at += 1
        else:
            at += len(match)
    return rest


def _says_any(words: list[str], phrases: Sequence[str]) -> bool:
    wanted = {tuple(_words(phrase)) for phrase in phrases if _words(phrase)}
    return any(tuple(words[at:at + len(phrase)]) == phrase for phrase in wanted for at in range(len(words)))


def is_backchannel(transcript: str, backchannel_words: Sequence[str], min_words: int = 1,
                   interrupt_words: Sequence[str] = ()) -> bool:
    """True when `transcript` (what the caller said over the bot) should not stop it. No words at all (a
    breath, a cough) is a backchannel too."""
    rest = other_words(transcript, backchannel_words)
    return len(rest) < min_words and not _says_any(rest, interrupt_words)
