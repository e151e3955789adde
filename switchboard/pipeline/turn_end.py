r"""Does what the caller said so far read as a finished turn? It decides how long a pause must last.

A pause after "what time do you close?" is the end of a turn; the same pause after "my number is five
five five" or "I'd like to book a table for, um" is the caller thinking. `reads_finished` sorts a
transcript into one of three:

  COMPLETE    ends a sentence or question (. ? !) on a word that can end one; a full stop after a
              word that needs more ("...a table for.") is a recogniser closing a fragment, not an end
              (neural recognisers put one on every piece of audio), while "...looking for?" is
  INCOMPLETE  ends on a comma / dash / ellipsis, on a word no turn ends on ("and", "so", "um", "the"),
              or on a number being read out (three or more digits in a row), whatever the
              punctuation; or has no sentence end and ends on a word that needs more ("for", "my",
              "is", a number)
  UNKNOWN     anything else: no sentence end and no telling last word (a recognizer that never
              punctuates, such as PocketSphinx, mostly gives these)

With an audio end-of-turn model (`turn.audio_model`, audio/smart_turn.py) the pause is also *heard*:
does the caller sound finished (intonation, a trailing-off voice) or mid-thought? `commit_silence_ms`
combines the two:

  words \ voice   finished       trailing off     (not heard)
  COMPLETE         complete       vad.end_silence  complete
  INCOMPLETE       incomplete     incomplete       incomplete
  UNKNOWN          complete       incomplete       vad.end_silence

(complete / incomplete: `turn.complete_end_silence_ms` / `turn.incomplete_end_silence_ms`). The words
win when they read unfinished: at a digit group's end the voice sounds finished. A full stop after a
voice that trails off is the recogniser's, so it waits the middle silence, not the short one.
"""

from __future__ import annotations

import enum
import re

from switchboard.config import TurnConfig


class Finished(enum.Enum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    UNKNOWN = "unknown"


# Words a turn never ends on, even before a full stop: conjunctions, fillers, articles.
TRAILING_WORDS = frozenset("""
    and or but so because cause though although if unless whereas than
    um umm uh uhh er erm hmm mm like
    the a an
""".split())

# Words a turn rarely ends on when nothing marks an end: prepositions, possessives, auxiliaries.
OPEN_WORDS = frozenset("""
    to for of at in on with from by about into onto over under between after before as per via
    my your our their his her its this these those some any every each
    is are was were am be been being do does did have has had will would can could should shall
    may might must then while until since
    plus minus point dot dash
""".split())

NUMBER_WORDS = frozenset("""
    zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred
    thousand double triple
""".split())
DICTATION_NUMBERS = 3  # this many number words (or digits) in a row at the end: a number being read out

_SENTENCE_END = re.compile(r"[.?!。？！][\"'”’)\]]*$")
_FULL_STOP = re.compile(r"(?<!\.)\.[\"'”’)\]]*$")  # a single "." (not "?", "!" or "...")
_TRAILING_OPEN = re.compile(r"(,|;|:|-|–|—|…|\.\.\.)[\"'”’)\]]*$")
_WORD = re.compile(r"[A-Za-z']+|\d+")


def reads_finished(transcript: str) -> Finished:
    text = transcript.strip()
    words = _WORD.findall(text.lower())
    if not words:
        return Finished.UNKNOWN
    if _TRAILING_OPEN.search(text) or words[-1] in TRAILING_WORDS or _dictating(words):
        return Finished.INCOMPLETE
    if _SENTENCE_END.search(text):
        if words[-1] in OPEN_WORDS and _FULL_STOP.search(text):
            return Finished.INCOMPLETE
        return Finished.COMPLETE
    if words[-1] in OPEN_WORDS or _is_number(words[-1]):
        return Finished.INCOMPLETE
    return Finished.UNKNOWN


# "I would like to book a table." reads finished, and callers go on: "...for two, tonight at eight". A
# request that names what is wanted but none of its details may be the first half of one.
_REQUEST = re.compile(r"^(?:(?:so|um|uh|yes|yeah|hi|hello|okay|ok|and|well)\s+)*(?:i|we)"
                      r"(?:\s+(?:would|will))?(?:'d|'ll)?\s+(?:really\s+)?"
                      r"(?:like|love|want|wanted|need|needed|wanna|have to|am calling|'m calling|am looking"
                      r"|'m looking|was hoping|were hoping|was wondering|am trying|'m trying)\b")
DETAIL_WORDS = frozenset("""
    for at on in to with from by about near around before after until this next tonight today tomorrow
    morning afternoon evening night week weekend please thanks thank monday tuesday wednesday thursday
    friday saturday sunday january february march april may june july august september october
    november december o'clock pm am
""".split())
REQUEST_MAX_WORDS = 10  # a longer request has said enough


def asks_without_details(transcript: str) -> bool:
    """Does the last sentence ask for something ("I'd like to book a table.") but name none of its details
    (no time, number, place, "please")? A full stop after it is weak evidence of an end."""
    sentences = [s for s in re.split(r"[.?!]+", transcript) if s.strip()]
    if not sentences or transcript.rstrip().endswith("?"):
        return False
    last = " ".join(sentences[-1].lower().replace("’", "'").split())
    match = _REQUEST.match(last)
    if match is None:
        return False
    rest = _WORD.findall(last[match.end():])
    rest = rest[1:] if rest[:1] == ["to"] else rest  # "like to book": the verb's "to", not a place
    return (len(_WORD.findall(last)) <= REQUEST_MAX_WORDS
            and not any(w in DETAIL_WORDS or _is_number(w) for w in rest))


def _is_number(word: str) -> bool:
    return word.isdigit() or word in NUMBER_WORDS


def _dictating(words: list[str]) -> bool:
    trailing = 0
    for word in reversed(words):
        if not _is_number(word):
            break
        trailing += len(word) if word.isdigit() else 1  # "555" is three digits read out
    return trailing >= DICTATION_NUMBERS


def commit_silence_ms(reads: Finished, sounds_finished: bool | None, turn: TurnConfig) -> int | None:
    """The silence that ends the turn, from how its words read and (None: not heard) how it sounds.
    None: the pipeline's `vad.end_silence_ms`."""
    if reads is Finished.INCOMPLETE or (sounds_finished is False and reads is Finished.UNKNOWN):
        return turn.incomplete_end_silence_ms
    if reads is Finished.COMPLETE and sounds_finished is False:
        return None  # they disagree: a fragment the recogniser closed with a full stop, or a flat ending
    if reads is Finished.COMPLETE or sounds_finished:
        return turn.complete_end_silence_ms
    return None
