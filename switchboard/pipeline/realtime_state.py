"""A realtime call's shared state: its turns (`Turn`, each reply's `ReplyItem`s), the constants and
the instructions the model is asked to speak by, and `RealtimeState`, the attributes every part of
`RealtimeSession` (pipeline/realtime.py) reads and writes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from switchboard.audio.segmenter import Segmenter
from switchboard.config import PipelineConfig
from switchboard.core.carrier import LINE_RATE, CarrierLink
from switchboard.core.messages import Message
from switchboard.core.metrics import TurnMetrics
from switchboard.core.protocols import TTS
from switchboard.core.realtime import RealtimeConnection, RealtimeModel, ToolRequest
from switchboard.pipeline.context import CallContext
from switchboard.pipeline.player import Player
from switchboard.pipeline.realtime_tools import RealtimeTools
from switchboard.pipeline.recorder import Recorder
from switchboard.pipeline.tools import ToolBox
from switchboard.pipeline.wideband import WideFrames

log = logging.getLogger("switchboard.realtime")

MARK_GRACE_S = 5.0  # past its audio's end, how long we wait for a mark
STALL_S = 0.15  # an ack this much later than its audio's pacing says the carrier stalled
CUT_GRACE_S = 2.0  # a cut reply waits this long at most for its response.done (its usage)
SPEECH_END_GRACE_MS = 300  # past vad.end_silence_ms, how long a finished reply waits for our endpoint
RECONNECTS = 1  # a lost vendor session is reopened this many times per call, then the apology
RENEW_MARGIN_S = 120.0  # reopen a session this long before the vendor's own limit ends it (when idle)
DELAY_MARGIN_MS = 60  # the delay line holds barge_in_min_ms plus this (the VAD's run-up)
ECHO_WINDOW_MS = 300
MAX_KEYPAD_ENTRY = 32
ECHO_RECHECK_EVERY = 5  # frames of voice between echo checks while the bot talks
FILLER_S = 5.0  # the most a filler's own response may take to end, beyond the vendor's first-token deadline
TIME_LIMIT = "time_limit"  # the kind of the turn that says max_call_duration_s's goodbye
VOICEMAIL = "voicemail"  # the kind of the turn that leaves voicemail.message on a machine
TRANSFER_FAILED = "transfer_failed"  # the kind of the turn that says transfer.failed
LAST_RESORT = "last-resort"  # the item id of audio our own voice spoke (nothing to truncate)
FAREWELL = 'Say exactly this farewell to the caller, and nothing else: "{text}"'
GREETING = 'Greet the caller by saying exactly: "{text}"'
SAY = 'Say exactly this to the caller, and nothing else: "{text}"'


@dataclass
class RealtimeProviders:
    """A realtime pipeline's providers: the model, and the last-resort voice for the apology. Offers
    what `CallHost` asks of a pipeline's providers (`pick`, `shadows`, `all_stt`)."""

    model: RealtimeModel
    voice: TTS
    shadows: list = field(default_factory=list)  # a speech-to-speech model has no shadow LLMs
    tools: ToolBox | None = None  # the pipeline's, shared by its calls (None: built from the call's config)

    def pick(self, rng: object) -> tuple[str | None, RealtimeProviders]:
        return None, self

    def all_stt(self) -> list:
        return []


@dataclass
class ReplyItem:
    """One reply item's audio towards the caller: marks at delta boundaries, with the item's ms at each."""

    item_id: str
    sent_ms: int = 0  # audio queued for the caller
    marks: list[tuple[str, int]] = field(default_factory=list)  # (mark, item ms at its end)
    first_sent: float | None = None  # when its first frame went to the carrier
    remainder: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))


@dataclass(eq=False)
class Turn:
    metrics: TurnMetrics
    items: list[ReplyItem] = field(default_factory=list)
    last_mark: str | None = None
    end_call: ToolRequest | None = None  # end_call or transfer_call
    farewell_asked: bool = False
    requests: list[ToolRequest] = field(default_factory=list)  # declared tools called in this response
    rounds: int = 0  # tool rounds run (or refused) in this turn
    tool_round: asyncio.Task | None = None  # the round under way: its requests in flight
    tool_ids: list[str] = field(default_factory=list)  # its call ids
    results_back: bool = False  # the round's tools are done (their results being sent, or refused)
    aside: asyncio.Event | None = None  # a filler response is under way; set at its response.done
    done: bool = False  # the vendor finished the response (or responses)
    barged_in: bool = False  # the caller cut it off: whatever more of it comes is void
    finishing: asyncio.Task | None = None


class RealtimeState:
    """What every part of a realtime call reads and writes: set up here, once."""

    def __init__(
        self,
        call_id: str,
        config: PipelineConfig,
        providers: RealtimeProviders,
        link: CarrierLink,
        on_turn: Callable[[TurnMetrics], None] | None = None,
        variant: str | None = None,
    ) -> None:
        self.call_id, self.config, self.link = call_id, config, link
        self.model, self.voice = providers.model, providers.voice
        self.on_turn, self.variant = on_turn, variant
        vad = config.vad
        self.segmenter = Segmenter(
            aggressiveness=vad.aggressiveness, min_speech_ms=vad.min_speech_ms, pre_roll_ms=vad.pre_roll_ms,
            end_silence_ms=vad.end_silence_ms, max_utterance_s=vad.max_utterance_s,
            barge_in_min_ms=vad.barge_in_min_ms, speculate_after_ms=0,
        )
        self.recorder = Recorder(time.monotonic()) if config.record else None
        self.recording: Path | None = None
        self.player = Player(link, lead_ms=config.player.lead_ms + link.holds_ms, recorder=self.recorder)
        self.turns: list[TurnMetrics] = []
        self.history: list[Message] = []  # what was said and heard, replayed to a reopened session
        self.closed = asyncio.Event()
        self.started_at = time.monotonic()
        self._conn: RealtimeConnection | None = None
        self._session_started = 0.0
        self._reconnects = 0
        self._reply_cut = False  # a drop cut the answer the caller was owed: the new session asks again
        self._runner: asyncio.Task | None = None
        self._ticker: asyncio.Task | None = None
        self._turn: Turn | None = None
        self._playing_out: set[Turn] = set()  # earlier turns whose audio is still being heard
        self._next_kind = "reply"
        self._next_transcript = ""  # a keypad entry's text
        self._endpoint: float | None = None  # the vendor's end of the caller's turn
        self._transcript_for: TurnMetrics | None = None  # the turn the next caller transcript belongs to
        self._heard_text = ""  # the vendor's transcript of the caller, before its reply began
        self._utterance_ended = asyncio.Event()  # our VAD endpointed an utterance
        self._utterances: list[tuple[float, float]] = []  # (speech start, speech end) by our VAD
        self._expect_by: float | None = None  # a reply was asked for: its first sign of life is due
        # our VAD endpointed the caller: the vendor's own reply may be on its way until then
        self._reply_owed_until: float | None = None
        self._reply_began = 0.0  # when the latest turn opened (monotonic)
        self._responding = False  # the vendor is generating (between its first event and response.done)
        self._failures: list[str] = []  # vendor failures not yet recorded on a turn
        self._acked: dict[str, float] = {}  # mark -> when the carrier said it played
        self._echo = False
        self._echo_checks = 0
        # a browser call's 16 kHz copy of the caller goes to a vendor that takes it (pipeline/wideband.py)
        wide = link.wideband_rate
        self.wide = WideFrames(wide, call_id) if wide and wide in self.model.input_rates else None
        self.vendor_rate = LINE_RATE if self.wide is None else self.wide.rate  # of the audio sent to it
        self._delay_line: deque[np.ndarray] = deque()  # caller audio held back while the bot talks
        self._delayed = 0  # samples in it (at vendor_rate)
        self._delay_samples = (vad.barge_in_min_ms + DELAY_MARGIN_MS) * self.vendor_rate // 1000
        self._ending = False
        self._renewing = False
        self._renewal: asyncio.Task | None = None
        self._expiring = False  # the vendor announced the session's end (Gemini's goAway)
        self._cut = False  # a reply was cut and its response.done has not come: its late events are void
        self._deferred: tuple[str, str | None, str] | None = None  # a reply asked for meanwhile
        self._greeted = False  # the greeting's reply has begun
        self._asked = False  # we asked for a reply and nothing of it has come yet
        self._digits = ""
        self._digits_due: float | None = None
        self.tools = RealtimeTools.of(config, link, providers.tools)  # pipeline/realtime_tools.py
        self.call_info: dict[str, str] = {"call_id": call_id}  # what the context webhook is told
        self.context = CallContext(config)  # the greeting and instructions (pipeline/context.py)
        self.answered_by: str | None = None  # outbound with machine detection: Twilio's AnsweredBy
        self.voicemail: str | None = None  # a machine answered: "left_message" or "hung_up"


def heard_words(text: str, heard_ms: int, total_ms: int) -> str:
    """The words of a reply the caller heard: all of it, or the share of its words its audio played
    (the vendor's transcript carries no word timings)."""
    text = text.strip()
    if total_ms <= 0 or heard_ms >= total_ms - 20:
        return text if total_ms > 0 else ""
    words = text.split()
    return " ".join(words[: int(len(words) * heard_ms / total_ms)])

