"""``switchboard call``: its arguments (`add_arguments`) and the call they place (`run_from_args`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from websockets.exceptions import InvalidHandshake, InvalidURI

from switchboard.caller.events import make_printer
from switchboard.caller.lines import DEFAULT_VOICE, CallerLine, Echo
from switchboard.caller.results import format_summary
from switchboard.caller.session import DEFAULT_CUSTOM_PARAMETERS, run_call
from switchboard.caller.timeline import RATE
from switchboard.caller.wire import CARRIERS


class _AppendLine(argparse.Action):
    """Collect --say / --barge-in / --wav into one ordered script."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option: Any = None) -> None:
        script = list(getattr(namespace, self.dest, None) or [])
        kind = self.const
        script.append(
            CallerLine(wav=value) if kind == "wav" else CallerLine(text=value, barge_in=kind == "barge")
        )
        setattr(namespace, self.dest, script)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``switchboard call``."""
    parser.add_argument("url", help="the server's media WebSocket, e.g. ws://127.0.0.1:8000/media-stream")
    parser.add_argument(
        "--carrier",
        choices=CARRIERS,
        default="twilio",
        help="whose protocol to speak: twilio (default), exotel (e.g. ws://127.0.0.1:8000/exotel), or "
             "plivo / vonage (the server's http address: the caller plays the answer webhook, signed with "
             "PLIVO_AUTH_TOKEN / VONAGE_SIGNATURE_SECRET when set, then the socket it names), or telnyx "
             "(its TeXML webhook, unsigned, then its stream; or the ws:// stream URL)",
    )
    parser.add_argument(
        "--sample-rate",
        type=int,
        choices=(8000, 16000, 24000),
        default=RATE,
        help="exotel: the PCM rate negotiated in start.media_format; vonage at a ws:// URL: the L16 rate "
             "(over http the NCCO says it); telnyx: 16000 speaks L16 at 16 kHz, not PCMU (default 8000)",
    )
    parser.add_argument(
        "--say",
        dest="script",
        action=_AppendLine,
        const="say",
        metavar="TEXT",
        help="a line spoken once the bot has finished talking (repeatable, in order); '[0.8s]' in it "
        "is a pause",
    )
    parser.add_argument(
        "--barge-in",
        dest="script",
        action=_AppendLine,
        const="barge",
        metavar="TEXT",
        help="a line spoken over the bot's reply, ~1 s into it",
    )
    parser.add_argument(
        "--wav",
        dest="script",
        action=_AppendLine,
        const="wav",
        metavar="FILE",
        help="a line played from a WAV file (resampled to 8 kHz)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="run the whole simulation N times faster than real time (default 1)",
    )
    parser.add_argument("--record", metavar="WAV", help="write a stereo 8 kHz WAV: left caller, right bot")
    parser.add_argument(
        "--voice", default=DEFAULT_VOICE,
        help=f"the caller's voice: piper (the embedded natural voice, pitched up) or an eSpeak NG voice such "
             f"as en-us+klatt4 (default {DEFAULT_VOICE})"
    )
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        type=_key_value,
        default=None,
        metavar="KEY=VALUE",
        help="a start.customParameters entry (repeatable; default from/to test numbers)",
    )
    parser.add_argument(
        "--no-silence-frames",
        dest="silence_frames",
        action="store_false",
        help="send no media frames while the caller is silent (some real calls do this)",
    )
    parser.add_argument(
        "--hangup-timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="after the last line, send stop if the bot is silent this long (default 15)",
    )
    parser.add_argument(
        "--reply-timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="speak the next line anyway if the bot has not replied within S (default 15)",
    )
    parser.add_argument(
        "--echo",
        type=float,
        metavar="DB",
        help="feed the bot's voice back into the caller's line this many dB down, e.g. -15 (a speakerphone)",
    )
    parser.add_argument("--echo-delay", type=float, default=120.0, metavar="MS",
                        help="the echo's delay after the bot's audio plays (default 120)")
    parser.add_argument("--verbose", action="store_true", help="also print mark echoes and audio ends")
    parser.set_defaults(script=[])


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``switchboard call``; exit code 0 ok, 1 the call failed, 2 the server sent malformed messages."""
    if args.speed <= 0:
        print("--speed must be > 0", file=sys.stderr)
        return 1
    missing = [line.wav for line in args.script if line.wav is not None and not Path(line.wav).is_file()]
    if missing:
        print(f"no such WAV file: {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.carrier in ("twilio", "plivo") and args.sample_rate != RATE:
        print("--sample-rate is for --carrier exotel, vonage or telnyx (Twilio's and Plivo's media is 8 kHz "
              "μ-law)", file=sys.stderr)
        return 1
    if args.carrier == "telnyx" and args.sample_rate == 24000:
        print("--sample-rate for telnyx: 8000 (PCMU) or 16000 (L16)", file=sys.stderr)
        return 1
    params = dict(DEFAULT_CUSTOM_PARAMETERS)
    params.update(dict(args.params or []))
    try:
        result = asyncio.run(
            run_call(
                args.url,
                args.script,
                speed=args.speed,
                custom_parameters=params,
                record_path=args.record,
                voice=args.voice,
                silence_frames=args.silence_frames,
                on_event=make_printer(verbose=args.verbose),
                hangup_timeout_s=args.hangup_timeout,
                reply_timeout_s=args.reply_timeout,
                carrier=args.carrier,
                sample_rate=args.sample_rate,
                echo=Echo(args.echo_delay, args.echo) if args.echo is not None else None,
            )
        )
    except ImportError as exc:  # text lines need the eSpeak NG provider
        print(f"cannot synthesise the caller's lines: {exc}", file=sys.stderr)
        return 1
    except (OSError, InvalidURI, InvalidHandshake, TimeoutError) as exc:
        print(f"call to {args.url} failed: {exc}", file=sys.stderr)
        return 1
    print(format_summary(result))
    return 2 if result.malformed_count else 0
