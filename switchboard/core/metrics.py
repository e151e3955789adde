"""Per-turn timings and facts: what vendor comparisons are built on.

All times are `time.monotonic()` seconds from the one clock of the server process; the derived
figures are milliseconds relative to `speech_end` (the end of the caller's last voiced frame).
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from dataclasses import asdict, dataclass, field

log = logging.getLogger("switchboard.metrics")


STAGES = ("endpoint", "stt_done", "llm_first_token", "first_chunk", "tts_first_byte", "first_audio_sent")

# The stages of a turn as the caller lived them, the one definition every view draws (the report's charts,
# the dashboard's pages and its live view): (label, the reading it starts at, the reading it ends at), in
# ms since the end of the caller's speech (None = 0). A stage that ended before its start reading (STT, LLM
# or TTS work done during the caller's silence, before the endpoint: speculative turns) starts at the
# latest earlier reading instead, so it overlaps the endpointing, never stacks after it.
WATERFALL: tuple[tuple[str, str | None, str], ...] = (
    ("endpointing", None, "endpoint_ms"),
    ("STT", "endpoint_ms", "stt_done_ms"),
    ("LLM first token", "stt_done_ms", "llm_first_token_ms"),
    ("TTS first byte", "first_chunk_ms", "tts_first_byte_ms"),
    ("first audio", "tts_first_byte_ms", "first_audio_sent_ms"),
)


def stage_spans(turn: dict) -> list[tuple[str, float, float]]:
    """The turn's stages as (label, start ms, end ms) on one time axis (0 = end of the caller's speech),
    from its summary / store row. The last span ends at the turn's voice-to-voice: the total the caller
    waited, never the sum of the stages (they overlap when work was done before the endpoint)."""
    spans: list[tuple[str, float, float]] = []
    ends = [0.0]
    for label, start_key, end_key in WATERFALL:
        end = turn.get(end_key)
        if end is None:
            continue
        start = turn.get(start_key) if start_key else 0.0
        start = ends[-1] if start is None else start
        if start > end:
            start = max(value for value in ends if value <= end) if min(ends) <= end else end
        spans.append((label, float(max(start, 0.0)), float(max(end, 0.0))))
        ends.append(float(end))
    return spans


# one entry of TurnMetrics.hedges (pipeline/failover.py writes it, the report and /metrics read it)
HEDGE = re.compile(r"^(?P<stage>\w+) (?P<vendor>\S+) -> (?P<partner>\S+): (?P<outcome>\w+)$")


def hedge_counts(turns: list[dict] | list[list[str]]) -> dict[str, dict[str, int]]:
    """Hedged requests per "stage vendor/model" (the late one), from turns' `hedges` (summaries / store
    rows, or the lists themselves): {"tts openai/tts-1": {"hedged": 3, "won": 2}} (won: the hedge
    answered first)."""
    counts: dict[str, dict[str, int]] = {}
    for turn in turns:
        entries = turn if isinstance(turn, list) else (turn.get("hedges") or [])
        for entry in entries:
            match = HEDGE.match(entry)
            if match is None:
                continue
            count = counts.setdefault(f"{match['stage']} {match['vendor']}", {"hedged": 0, "won": 0})
            count["hedged"] += 1
            count["won"] += match["outcome"] == "won"
    return dict(sorted(counts.items()))


@dataclass
class TurnMetrics:
    call_id: str
    index: int
    # "reply", "keypad"; or a line of the bot's own: "greeting", "reminder", "idle_goodbye", "time_limit"
    kind: str = "reply"
    variant: str | None = None  # the call's A/B variant (pipeline/variants.py), None without variants
    # clock readings (monotonic seconds), None when the stage never happened
    speech_start: float | None = None
    speech_end: float | None = None
    endpoint: float | None = None
    stt_start: float | None = None  # the request that gave the transcript (at a pause, before the endpoint)
    stt_done: float | None = None
    llm_first_token: float | None = None
    first_chunk: float | None = None
    tts_first_byte: float | None = None
    first_audio_sent: float | None = None
    turn_done: float | None = None
    # what happened
    transcript: str = ""
    reply_text: str = ""  # everything the LLM produced for speaking
    reply_heard: str = ""  # what the caller actually heard (marks acknowledged before any clear)
    interrupted: bool = False
    ended_call: bool = False
    error: str | None = None  # what made the turn fail (the caller heard the apology)
    failures: list[str] = field(default_factory=list)  # every provider failure, recovered or not
    # every stalled request hedged (pipeline/hedging.py): "stage late-vendor -> hedge-vendor: outcome",
    # outcome won (the hedge answered first), lost (the late request did), failed or cancelled
    hedges: list[str] = field(default_factory=list)
    vendors: dict[str, str] = field(default_factory=dict)  # stage -> "vendor/model"
    tokens_in: int | None = None
    tokens_out: int | None = None
    # a speech-to-speech model's audio tokens (its text tokens are tokens_in / tokens_out)
    audio_tokens_in: int | None = None
    audio_tokens_out: int | None = None
    tts_chars: int = 0
    bot_audio_ms: int = 0
    # turn-taking: speculative turns started at pauses in this utterance, and those dropped because the
    # caller went on (their vendor requests were wasted); how the last pause's transcript read
    speculated: int = 0
    speculation_dropped: int = 0
    reads: str | None = None  # "complete", "incomplete" or "unknown" (pipeline/turn_end.py)
    sounds_finished: float | None = None  # the audio end-of-turn model's probability at that pause
    # the caller's "yeah", "uh-huh" while the bot spoke: it paused, then went on (no clear, no new turn)
    backchannels: int = 0
    # the caller went on just as the bot started this reply: stopped at once, undone, their words joined
    # to what they said next (one turn answers both)
    undone: bool = False
    # tools (pipeline/tools.py): calls of declared tools the LLM made, those that failed (HTTP error,
    # bad answer, timeout), those refused (unknown tool, arguments against the schema), their latencies
    tool_calls: int = 0
    tool_errors: int = 0
    tool_invalid: int = 0
    tool_ms: float = 0.0  # summed over the turn's tool calls
    tool_fillers: int = 0  # fillers said while a tool ran
    tools_used: list[str] = field(default_factory=list)  # "name:status", in order
    tool_args: list[dict] = field(default_factory=list)  # {"name", "status", "arguments"} of each, in order
    transferred_to: str | None = None  # the number or SIP URI the call was handed to (transfer_call)

    def note_tool(self, name: str, status: str, ms: float, arguments: dict | None = None) -> None:
        """One tool call: status ok, error, timeout, invalid (arguments) or unknown (no such tool)."""
        self.tool_calls += 1
        self.tool_errors += status in ("error", "timeout")
        self.tool_invalid += status in ("invalid", "unknown")
        self.tool_ms = round(self.tool_ms + ms, 1)
        self.tools_used.append(f"{name}:{status}")
        self.tool_args.append({"name": name, "status": status, "arguments": dict(arguments or {})})

    def since_speech_end(self, reading: float | None) -> float | None:
        if reading is None or self.speech_end is None:
            return None
        return round((reading - self.speech_end) * 1000, 1)

    @property
    def voice_to_voice_ms(self) -> float | None:
        return self.since_speech_end(self.first_audio_sent)

    def summary(self) -> dict:
        """The turn as one flat dict: derived milliseconds plus the facts (no raw clock readings)."""
        stages = STAGES
        out = {f"{stage}_ms": self.since_speech_end(getattr(self, stage)) for stage in stages}
        facts = asdict(self)
        for key in (*stages, "speech_start", "speech_end", "turn_done", "stt_start"):
            facts.pop(key)
        if self.stt_start is not None and self.stt_done is not None:
            out["stt_ms"] = round((self.stt_done - self.stt_start) * 1000, 1)  # the STT's own latency
        out["voice_to_voice_ms"] = self.voice_to_voice_ms
        if self.speech_start is not None and self.speech_end is not None:
            out["speech_ms"] = round((self.speech_end - self.speech_start) * 1000, 1)
        return {**facts, **out}

    def log(self) -> None:
        if log.isEnabledFor(logging.INFO):  # 100 calls' turns: don't build JSON nobody reads
            log.info("turn %s", json.dumps(self.summary(), sort_keys=True))


@dataclass
class ShadowResult:
    """What one shadow answered to one live turn (a `shadow_results` row)."""

    call_id: str
    turn_index: int
    name: str
    vendor: str  # "vendor/model"
    ttft_ms: float | None = None  # request sent -> first token (text or tool call)
    total_ms: float | None = None  # request sent -> stream finished; None when it failed
    tokens_in: int | None = None
    tokens_out: int | None = None
    error: str | None = None  # "vendor: kind: message", e.g. "openai: timeout: no first token within 5 s"
    text: str = ""  # what it would have said (so far, when it failed)
    tool_calls: int = 0  # calls of the pipeline's tools it asked for (never run: it gets no result)
    tool_invalid: int = 0  # of those, the ones naming no offered tool or with arguments against the schema



def call_summary(turns: list[TurnMetrics], **facts: object) -> dict:
    """Medians over a call's answered turns, for the line logged at call end; then the call's `facts`
    (recording, context_error, answered_by, ...) that are not None."""
    v2v = [t.voice_to_voice_ms for t in turns if t.voice_to_voice_ms is not None]
    summary = {
        "turns": len(turns),
        "answered": len(v2v),
        "interrupted": sum(t.interrupted for t in turns),
        "errors": sum(t.error is not None for t in turns),
        "voice_to_voice_ms_median": round(statistics.median(v2v), 1) if v2v else None,
        "voice_to_voice_ms_max": max(v2v) if v2v else None,
        "speculated": sum(t.speculated for t in turns),  # speculative starts, and those the caller
        "speculation_dropped": sum(t.speculation_dropped for t in turns),  # talked on through
        "transferred_to": next((t.transferred_to for t in turns if t.transferred_to), None),
    }
    return summary | {name: value for name, value in facts.items() if value is not None}
