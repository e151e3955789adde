"""The three provider interfaces. A vendor module implements STT, LLM or TTS (or several) and raises
`ProviderError` for anything that goes wrong.

Capabilities are declared, not probed: every provider says whether the call's failover should hold it
to deadlines (`timeouts`: a cloud adapter's, None for an embedded engine), every STT can be asked to
`warm` up before the first caller speaks (build decoders, load a model; a no-op for most), and says
whether it hears better with a wideband call's own audio than with its 8 kHz audio upsampled
(`wideband`: README's *Talk to it from the browser* gives the figures).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import numpy as np

from switchboard.core.messages import LLMEvent, Message, Tool, Transcript
from switchboard.core.settings import Timeouts


class STT(Protocol):
    vendor: str
    model: str
    sample_rate: int  # what it wants; the call resamples the utterance for it
    # a browser call's 16 kHz audio (True) or its 8 kHz audio upsampled (False) for it: a phone call has
    # only the 8 kHz; pipeline/wideband.py
    wideband: bool
    timeouts: Timeouts | None  # first-result and total deadlines (pipeline/failover.py); None: none

    async def warm(self) -> None: ...  # called once at server start-up
    async def transcribe(self, pcm: np.ndarray) -> Transcript: ...


class LLM(Protocol):
    vendor: str
    model: str
    timeouts: Timeouts | None

    def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]: ...


class TTS(Protocol):
    vendor: str
    model: str
    sample_rate: int  # what it produces
    timeouts: Timeouts | None

    def stream(self, text: str) -> AsyncIterator[np.ndarray]: ...  # int16 mono chunks
