"""A simulated Twilio caller: plays Twilio's side of a Media Streams call against any server.

With ``carrier="exotel"`` it plays Exotel's Voicebot applet instead (snake_case messages, PCM16 "slin"
chunks of 100 ms, outbound chunks checked against Exotel's size rules): see `ExotelWire`; Plivo, Vonage
and Telnyx are in `switchboard/callers/`.

It connects to a server's media WebSocket, sends `connected` and `start`, then 20 ms μ-law `media`
frames (the caller's scripted lines, silence in between), and plays the bot's audio back on a
simulated clock the way Twilio does: `mark`s are echoed once the audio before them has played,
`clear` drops the queued audio and echoes every pending mark at once.

All times are simulated call time in seconds since the call started. With ``speed`` N the whole
simulation (frame pacing, playback, pauses, timeouts) runs N times faster than the wall clock.

Library use::

    result = await run_call("ws://127.0.0.1:8000/media-stream",
                            [CallerLine("what are your opening hours"),
                             CallerLine("actually, never mind", barge_in=True)])

CLI use (wired up in cli.py): ``add_arguments(parser)`` and ``run_from_args(args)``.

The package, one job a module, each importing only those above it in this list:

- `timeline`: the simulated clock, audio on the 8 kHz call timeline, `Playback` (the carrier's buffer
  of the bot's audio: marks, clear, what is audible when);
- `lines`: the script (`CallerLine`), its audio (`prepare_audio`, `synthesize_line`), `Echo`, noise;
- `events`: the `CallerEvent`s and their transcript lines; `results`: `CallResult`, its summary, the
  recording;
- `wire`: Twilio's and Exotel's wire formats, `make_wire`; `sender`: `MediaSender`, the paced frames;
- `session`: `run_call` and the call's tasks (receiver, playback ticker, script);
- `cli`: ``switchboard call``.
"""

from __future__ import annotations

from switchboard.caller.cli import add_arguments, run_from_args
from switchboard.caller.events import (
    BotAudioEnded,
    BotAudioStarted,
    CallerEvent,
    ClearReceived,
    EventCallback,
    Hangup,
    LineEnded,
    LineStarted,
    MalformedMessage,
    MarkEchoed,
    Notice,
    StopSent,
    format_event,
    make_printer,
    print_event,
)
from switchboard.caller.lines import (
    DEFAULT_VOICE,
    PIPER_PITCH,
    CallerLine,
    Echo,
    background_noise,
    prepare_audio,
    synthesize_line,
)
from switchboard.caller.results import CallResult, LineResult, format_summary, talk_over_s
from switchboard.caller.sender import MediaSender
from switchboard.caller.session import (
    BARGE_IN_AFTER_S,
    DEFAULT_CUSTOM_PARAMETERS,
    MAX_MALFORMED_EXAMPLES,
    PAUSE_BEFORE_LINE_S,
    run_call,
)
from switchboard.caller.timeline import BOT_IDLE_S, FRAME_S, FRAME_SAMPLES, RATE, Playback, Segment, SimClock
from switchboard.caller.wire import CARRIERS, ExotelWire, TwilioWire, make_wire

__all__ = [
    "BARGE_IN_AFTER_S",
    "BOT_IDLE_S",
    "CARRIERS",
    "DEFAULT_CUSTOM_PARAMETERS",
    "DEFAULT_VOICE",
    "FRAME_S",
    "FRAME_SAMPLES",
    "MAX_MALFORMED_EXAMPLES",
    "PAUSE_BEFORE_LINE_S",
    "PIPER_PITCH",
    "RATE",
    "BotAudioEnded",
    "BotAudioStarted",
    "CallResult",
    "CallerEvent",
    "CallerLine",
    "ClearReceived",
    "Echo",
    "EventCallback",
    "ExotelWire",
    "Hangup",
    "LineEnded",
    "LineResult",
    "LineStarted",
    "MalformedMessage",
    "MarkEchoed",
    "MediaSender",
    "Notice",
    "Playback",
    "Segment",
    "SimClock",
    "StopSent",
    "TwilioWire",
    "add_arguments",
    "background_noise",
    "format_event",
    "format_summary",
    "make_printer",
    "make_wire",
    "prepare_audio",
    "print_event",
    "run_call",
    "run_from_args",
    "synthesize_line",
    "talk_over_s",
]
