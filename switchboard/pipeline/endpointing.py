r"""When is the caller's turn over? One `Endpointing` per call: how long a pause must last, learned as the
call goes on.

At each pause (`turn.speculate_after_ms` into the silence) the call asks for a reply that nobody hears
yet; how long the silence must last before that reply is committed is set here:

* while the pause's transcript is pending: `turn.incomplete_end_silence_ms` (never commit blind);
* once it is in: from how the words read and, with `turn.audio_model`, how the voice sounds
  (`turn_end.commit_silence_ms`: 300 ms for a finished sentence, 1600 ms for "…a table for");
* at least `REQUEST_END_SILENCE_MS` (1 s) after a request that names none of its details ("I would
  like to book a table." is often followed by "for two, tonight at eight":
  `turn_end.asks_without_details`), whatever the full stop or the voice says: a punctuating
  recogniser's full stop is weak evidence alone, and on such a line Smart Turn v3 said "finished" with
  0.91-0.98 (eSpeak and Piper voices: a synthetic or read phrase ends with a falling pitch whether or
  not more follows);
* never less than what this caller's own pauses have shown (below).

**The caller's rhythm.** People differ: some pause a second between sentences, some never. When the
caller goes on after the bot took a pause for their end (its reply was undone as it started, or a
committed turn was taken back before it was heard: `went_on`), the bot misjudged *this* caller, and from
then on a pause has to outlast the pauses they have shown mid-turn: `floor_ms` is the longest of their
recent pauses that read finished (`PAUSES_KEPT`), stretched by `STRETCH` plus `MARGIN_MS`, at most
`turn.incomplete_end_silence_ms`. A caller who finishes crisply never goes on after a commit and keeps the
fast one. Only pauses whose words read finished count: a pause the words already wait out ("…for", a
digit group) says nothing about the fast commit.

All of it runs at pauses and turns, never per audio frame.
"""

from __future__ import annotations

from collections import deque

from switchboard.config import TurnConfig
from switchboard.pipeline.turn_end import Finished, asks_without_details, commit_silence_ms, reads_finished

PAUSES_KEPT = 6  # the caller's latest pauses that read finished, remembered for the floor
STRETCH = 1.25  # a caller's next pause may be this much longer than the longest one seen...
MARGIN_MS = 100  # ...plus this
# "I'd like to book a table." [0.45 s: 0.66 s of silence between a Piper voice's words] "For two...": a
# request that names none of its details is given this long to go on
REQUEST_END_SILENCE_MS = 1000


class Endpointing:
    """The commit silence of each pause of one call, and what the caller's pauses have taught it."""

    def __init__(self, turn: TurnConfig, end_silence_ms: int) -> None:
        self.turn = turn
        self.end_silence_ms = end_silence_ms  # vad.end_silence_ms: the words and the voice can't tell
        self.pauses: deque[int] = deque(maxlen=PAUSES_KEPT)  # ms; the caller went on after each
        self.misjudged = 0  # times the caller went on after the bot took their pause for the end
        self._finished_read = False  # the current pause's words read finished (or gave no clue)

    @property
    def floor_ms(self) -> int:
        """The least silence that ends this caller's turn: 0 until the bot misjudged them."""
        if not self.misjudged or not self.pauses:
            return 0
        return min(self.turn.incomplete_end_silence_ms, round(max(self.pauses) * STRETCH) + MARGIN_MS)

    def pending_ms(self) -> int:
        """The commit silence while the pause's transcript is not in yet."""
        self._finished_read = False
        return self.turn.incomplete_end_silence_ms

    def judge(self, transcript: str, probability: float | None) -> tuple[Finished, int]:
        """How the pause's words read, and its commit silence; `probability`: the audio model's "finished"
        (None: not heard)."""
        reads = reads_finished(transcript)
        sounds = None if probability is None else probability >= self.turn.audio_finished_threshold
        waits = self.commit_ms(reads, sounds)
        if reads is not Finished.INCOMPLETE and asks_without_details(transcript):
            waits = max(waits, min(REQUEST_END_SILENCE_MS, self.turn.incomplete_end_silence_ms))
        return reads, waits

    def commit_ms(self, reads: Finished, sounds_finished: bool | None) -> int:
        """The commit silence of the current pause, from how its words read and how it sounds."""
        base = commit_silence_ms(reads, sounds_finished, self.turn)
        waits = self.end_silence_ms if base is None else base
        self._finished_read = waits < self.turn.incomplete_end_silence_ms
        return max(waits, self.floor_ms)

    def resumed(self, pause_ms: float) -> None:
        """The caller went on after a pause mid-utterance, before it was taken for the end."""
        if self._finished_read:
            self.pauses.append(round(pause_ms))
        self._finished_read = False

    def went_on(self, pause_ms: float) -> None:
        """The caller went on after the bot had taken their pause (`pause_ms` long) for the end of the turn:
        its reply was undone or taken back. Their pauses are waited out from now on. A pause longer than
        `turn.incomplete_end_silence_ms` is no pause mid-turn: a caller who waited that long had finished."""
        if pause_ms > self.turn.incomplete_end_silence_ms:
            return
        self.misjudged += 1
        self.pauses.append(round(pause_ms))
        self._finished_read = False
