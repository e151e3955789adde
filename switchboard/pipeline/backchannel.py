"""Is what the caller said while the bot talked a backchannel ("yeah", "uh-huh", "okay") or an interruption?

Recognisers write the same sound many ways ("Uh-huh.", "uh huh", "Mm-hmm", "mhm", "Okay."), so both the
transcript and the configured words are reduced to lowercase words without punctuation or hyphens
(`core.words`), and the transcript is taken apart greedily into configured words (longest first).
Whatever is left over are the other words: fewer than `min_words` of them is still a backchannel, unless
the utterance holds an interrupt word ("no", "wait", "hold on"): those interrupt however few the words
(as Vapi's `interruptionPhrases` beside its `numWords`), so raising `min_words` never makes "stop" pass.

A hummed "mm-hmm" has no words to read: recognisers write it as whatever words it sounds nearest to
("You need.", "I am."), so a sound that audio/murmur.py hears as a hum is a backchannel whatever it was
written as, unless that holds an interrupt word.
"""

from __future__ import annotations

from collections.abc import Sequence

from switchboard.core.words import words


def other_words(transcript: str, backchannel_words: Sequence[str]) -> list[str]:
    """The words of `transcript` that are not part of a backchannel phrase."""
    phrases = sorted({phrase for phrase in map(words, backchannel_words) if phrase}, key=len, reverse=True)
    said, rest, at = words(transcript), [], 0
    while at < len(said):
        match = next((phrase for phrase in phrases if said[at:at + len(phrase)] == phrase), None)
        if match is None:
            rest.append(said[at])
            at += 1
        else:
            at += len(match)
    return rest


def says_any(transcript: str, phrases: Sequence[str]) -> bool:
    """Does `transcript` hold one of `phrases` as whole words ("no" is not in "nothing")?"""
    said = words(transcript)
    wanted = {phrase for phrase in map(words, phrases) if phrase}
    return any(said[at:at + len(phrase)] == phrase for phrase in wanted for at in range(len(said)))


def is_backchannel(transcript: str, backchannel_words: Sequence[str], min_words: int = 1,
                   interrupt_words: Sequence[str] = (), hummed: bool = False) -> bool:
    """True when `transcript` (what the caller said over the bot) should not stop it. No words at all (a
    breath, a cough) is a backchannel too, and so is a hum (`hummed`: audio/murmur.is_murmur) whatever
    words the recogniser made of it, unless they hold an interrupt word."""
    if says_any(transcript, interrupt_words):  # the whole utterance: "oh no" holds "oh no" and "no"
        return False
    return hummed or len(other_words(transcript, backchannel_words)) < min_words
