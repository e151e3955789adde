"""A cascade call's turn in the making (`Turn`), what the caller said (an `Utterance` of theirs, or a
`Keypad` entry; `joined`: two utterances as one) and what the bot said in it (`Spoken`: a chunk and its
mark)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from switchboard.audio.segmenter import Pause, Utterance
from switchboard.core.messages import Message
from switchboard.core.metrics import TurnMetrics


@dataclass
class Spoken:
    mark: str
    text: str
    audio_s: float


@dataclass
class Keypad:
    """Digits the caller pressed, and the user message they become (the pipeline's `dtmf.format`)."""

    digits: str
    text: str


def joined(first: Utterance | None, then: Utterance) -> Utterance:
    """Two utterances, one after the other, as one (for the recogniser and the turn); `then` alone when
    there is no `first` (nothing carried, nothing said before on the hold). Its wideband copy is both
    copies joined, if both have one; its `start` is the first's."""
    if first is None:
        return then
    wide = None if first.wide is None or then.wide is None else np.concatenate([first.wide, then.wide])
    return Utterance(np.concatenate([first.pcm, then.pcm]), first.speech_start, then.speech_end,
                     first.voiced_ms + then.voiced_ms, then.forced, first.start, wide)


def so_far(pause: Pause) -> Utterance:
    """What the caller said up to a pause in their utterance, as an utterance (its wideband copy too)."""
    return Utterance(pause.pcm, pause.speech_start, pause.speech_end, pause.voiced_ms, False, pause.start,
                     pause.wide)


@dataclass(eq=False)
class Turn:
    """A turn in the making. Nobody hears it until `committed` is set: a speculative turn, started at a
    pause, transcribes, asks the LLM and synthesises its first chunk meanwhile, and is cancelled
    unheard if the caller goes on."""

    metrics: TurnMetrics
    heard: Utterance | Keypad | None  # None: the greeting
    committed: asyncio.Event = field(default_factory=asyncio.Event)
    spoken: list[Spoken] = field(default_factory=list)
    user: Message | None = None  # what the caller said, once known
    in_history: bool = False
    playing: bool = False  # its first audio has been queued for the caller
    undone: bool = False  # the caller went on right after it started: as if it had never been said
    task: asyncio.Task | None = None
    exchanges: list[Message] = field(default_factory=list)  # its tool calls and their results
    sounds: asyncio.Future[float | None] | None = None  # at a pause: the audio model's "finished" probability
