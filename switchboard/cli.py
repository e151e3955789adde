"""The `switchboard` command: serve, demo, call, check.

switchboard serve [--config pipeline.yaml] [--host H] [--port P] [--workers N] [--watch] [--insecure-dev]
switchboard dial  +15551234567 [--pipeline NAME] [--from +1…] [--amd] [--carrier twilio|…]
                  [--config pipeline.yaml]
switchboard demo  [--record demo-call.wav] [--speed N]
switchboard call ws://host:port/media-stream --say "…" [--barge-in "…"] [--wav f.wav] [--record call.wav]
                 [--carrier exotel [--sample-rate 16000]]   (e.g. ws://host:port/exotel)
                 [--carrier plivo|vonage]                   (e.g. http://host:port: the answer webhook first)
switchboard check [pipeline.yaml] [--ping]
switchboard report [--since 24h] [--pipeline NAME] [--variant NAME] [--db switchboard.db]
                   [--config pipeline.yaml] [--json] [--html report.html] [--include-evals]
switchboard report --evals RUN|latest [--json] [--html eval.html] [--gate "pass_rate>=0.9"]
switchboard eval   [evals.yaml] [--pipeline A,B] [--concurrency N] [--url ws://…] [--db …] [--gate …]
switchboard eval   --replay [--since 24h] --pipeline NAME [--from-pipeline NAME] [--limit 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable

from switchboard import caller
from switchboard.config import ConfigError, PipelineConfig, default_config_path, load_config
from switchboard.core.errors import StartupError
from switchboard.core.metrics import TurnMetrics
from switchboard.telephony.dialing import DEFAULT_CARRIER, DIALERS

DEMO_LINES = [
    caller.CallerLine(text="what are your opening hours"),
    caller.CallerLine(text="i would like to book a table", barge_in=True),
    caller.CallerLine(text="for four people at seven"),
    # free speech: no rule lists these words; the recogniser hears them, the menu rule's pattern finds them
    caller.CallerLine(text="what sort of pasta and pizza dishes do you make"),
    caller.CallerLine(text="thank you goodbye"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard", description="Put an LLM on the phone.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the Twilio webhook and media WebSocket")
    serve.add_argument(
        "--config", help="pipeline.yaml (default: $SWITCHBOARD_CONFIG, ./pipeline.yaml, bundled)"
    )
    serve.add_argument("--host", help="default $HOST or 0.0.0.0")
    serve.add_argument("--port", type=int, help="default $PORT or 5050")
    serve.add_argument("--workers", type=int, default=int(os.environ.get("SWITCHBOARD_WORKERS", "1")),
                       help="server processes on the port (default $SWITCHBOARD_WORKERS or 1); more than one "
                            "needs a PostgreSQL database_url")
    serve.add_argument("--watch", action="store_true",
                       help="reload pipeline.yaml whenever it changes (development; SIGHUP always reloads)")
    serve.add_argument(
        "--insecure-dev", action="store_true",
        help="do not check Twilio request signatures (local development only; logs a loud warning)",
    )

    dial = commands.add_parser("dial", help="place an outbound call through a carrier onto a pipeline")
    dial.add_argument("to", help="the number to call, E.164 (e.g. +15551234567)")
    dial.add_argument("--pipeline", help="the pipeline that answers (default: default_pipeline)")
    dial.add_argument(
        "--from", dest="from_", metavar="FROM",
        help="caller id, E.164 (default: the carrier's, e.g. $TWILIO_FROM_NUMBER)"
    )
    dial.add_argument("--carrier", choices=list(DIALERS), default=DEFAULT_CARRIER,
                      help=f"who places the call (default {DEFAULT_CARRIER})")
    dial.add_argument("--config", help="pipeline.yaml (default: as for serve)")
    dial.add_argument("--amd", dest="machine_detection", action="store_true",
                      help="answering machine detection: a machine gets the pipeline's voicemail: "
                           "(leave a message after the beep, or hang up)")

    demo = commands.add_parser("demo", help="a simulated call against an in-process server, offline")
    demo.add_argument("--config", help="pipeline.yaml to demo (default: the bundled one)")
    demo.add_argument(
        "--record", default="demo-call.wav", help="stereo WAV of the call (caller left, bot right)"
    )
    demo.add_argument("--speed", type=float, default=1.0, help="run the caller N times faster than real time")
    demo.add_argument("-v", "--verbose", action="store_true", help="show the server's log")
    demo.add_argument("--no-store", action="store_true",
                      help="don't record the call in the call store (database_url; default ./switchboard.db)")

    call = commands.add_parser("call", help="play Twilio's (or Exotel's) part against a media WebSocket")
    caller.add_arguments(call)

    check = commands.add_parser("check", help="validate pipeline.yaml; show providers and credentials")
    check.add_argument("config", nargs="?", help="pipeline.yaml (default: as for serve)")
    check.add_argument("--ping", action="store_true", help="send one tiny real request per provider")

    from switchboard import evals, report

    report_parser = commands.add_parser("report", help="compare vendors: latency, errors per model")
    report.add_arguments(report_parser)
    evals.add_report_arguments(report_parser)
    evals.add_arguments(commands.add_parser("eval", help="simulated callers on pipelines: checked, judged, "
                                                         "compared (evals.yaml)"))

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            from switchboard.server import serve as run_server

            return run_server(args.config, args.host, args.port, insecure_dev=args.insecure_dev,
                              workers=args.workers, watch=args.watch)
        if args.command == "dial":
            return run_dial(args.config, args.to, args.pipeline, args.from_, args.machine_detection,
                            args.carrier)
        if args.command == "demo":
            return asyncio.run(run_demo(args.config, args.record, args.speed, args.verbose,
                                        store=not args.no_store))
        if args.command == "check":
            return run_check(args.config, args.ping)
        if args.command == "report":
            return evals.run_report(args) if args.evals else report.run(args)
        if args.command == "eval":
            return evals.run(args)
        return caller.run_from_args(args)
    except ConfigError as exc:
        print(f"switchboard: {exc.source}:\n{exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run_dial(config_path: str | None, to: str, pipeline: str | None, from_: str | None,
             machine_detection: bool = False, carrier: str = "twilio") -> int:
    from switchboard.config.tools import detection_mode
    from switchboard.telephony.dialing import DialError, dial

    config = load_config(config_path or default_config_path())
    name = pipeline or config.default_pipeline
    mode = detection_mode(config.pipelines, name, machine_detection)
    try:
        placed = dial(carrier, to, name, list(config.pipelines), from_, machine_detection=mode)
    except DialError as exc:
        print(f"switchboard dial: {exc}", file=sys.stderr)
        return 2
    print(f"placed call {placed.call_sid} to {placed.to} from {placed.from_} on pipeline {placed.pipeline!r} "
          f"through {placed.carrier}")
    return 0


def run_check(config_path: str | None, ping: bool) -> int:
    from switchboard import check

    path = config_path or default_config_path()
    config = load_config(path)
    print(f"{path}: valid")
    lines, complete = check.describe(config)
    print("\n".join(lines))
    if ping:
        print("ping (time to first result):")
        print("\n".join(asyncio.run(check.ping_all(config))))
    return 0 if complete else 1


def _print_turn(metrics: TurnMetrics) -> None:
    v2v = metrics.voice_to_voice_ms
    if metrics.kind == "greeting":
        print(f"  bot said    : {metrics.reply_heard or metrics.reply_text!r} (greeting)", flush=True)
        return
    print(f"  caller said : {metrics.transcript!r}", flush=True)
    heard = metrics.reply_heard
    if metrics.interrupted:
        print(f"  bot said    : {heard!r} … interrupted (of {metrics.reply_text!r})", flush=True)
    else:
        print(f"  bot said    : {heard or metrics.reply_text!r}", flush=True)
    if metrics.tools_used:  # the tool calls behind this reply (name:status), and how long they took
        print(f"  tool calls  : {', '.join(metrics.tools_used)} ({metrics.tool_ms:.0f} ms)", flush=True)
    if v2v is not None:
        print(f"  voice-to-voice: {v2v:.0f} ms", flush=True)
    if metrics.error:
        print(f"  error       : {metrics.error}", flush=True)


def latency_table(turns: list[TurnMetrics]) -> str:
    """One row per answered turn: milliseconds after the caller stopped speaking."""
    columns = ("endpoint", "stt_done", "llm_first_token", "tts_first_byte", "first_audio_sent")
    header = (
        f"{'turn':>4}  {'endpoint':>8}  {'stt':>6}  {'llm 1st':>7}  {'tts 1st':>7}  {'v2v':>6}  transcript"
    )
    rows = [header, "-" * len(header)]
    for t in turns:
        if t.kind != "reply" or t.speech_end is None:
            continue
        cells = [t.since_speech_end(getattr(t, c)) for c in columns]
        text = "  ".join(
            f"{'-' if v is None else f'{v:.0f}':>{w}}" for v, w in zip(cells, (8, 6, 7, 7, 6), strict=True)
        )
        rows.append(f"{t.index:>4}  {text}  {t.transcript!r}{' (interrupted)' if t.interrupted else ''}")
    return "\n".join(rows)


async def run_demo(config_path: str | None, record: str, speed: float, verbose: bool = False,
                   store: bool = True) -> int:
    from switchboard import logs
    from switchboard.demo import booking_service
    from switchboard.server import create_app, running

    logs.configure(logging.INFO if verbose else logging.WARNING)
    config = load_config(config_path or default_config_path())
    turns: list[TurnMetrics] = []
    store_url = (config.database_url or None) if store else None  # recorded as `serve` records calls
    app = create_app(config, on_turn=_collect(turns, _print_turn), store_url=store_url)
    async with running(app) as port, booking_service(_print_booking) as bookings:  # demo.py
        print(f"Switchboard demo: server on 127.0.0.1:{port}, pipeline {config.default_pipeline!r}, offline.")
        print(f"Its booking service (for the book_table tool): {bookings.url}")
        url = f"ws://127.0.0.1:{port}/media-stream"
        result = await caller.run_call(
            url, DEMO_LINES, speed=speed, record_path=record, on_event=caller.print_event
        )
        await asyncio.wait_for(app.state.host.wait_idle(), 10)  # the call's last turn is recorded
    print()
    print(latency_table(turns))
    print()
    print(f"Recording (caller left, bot right): {result.record_path}")
    if store_url:
        print(f"Recorded in the call store ({store_url}): compare vendors with `switchboard report`, or run "
              "`switchboard serve` and open http://127.0.0.1:5050/dashboard")
    pipeline = config.pipelines[config.default_pipeline]
    # another config (--config) without the bundled book_table tool is not asked to book
    books = isinstance(pipeline, PipelineConfig) and any(tool.name == "book_table" for tool in pipeline.tools)
    ok = demo_went_as_scripted(result, turns, bookings.made if books else None)
    if not ok:
        print("demo: the call did not go as scripted (see above)", file=sys.stderr)
    return 0 if ok else 1


def demo_went_as_scripted(result: caller.CallResult, turns: list[TurnMetrics],
                          bookings: list[dict] | None) -> bool:
    """The demo's verdict: every line was heard and answered, the barge-in cut the bot, the booking was
    made through the book_table tool and its reference spoken (None: the pipeline has no such tool), the
    bot hung up."""
    replies = [t for t in turns if t.kind == "reply" and t.transcript]
    booked = bookings is None or (bool(bookings) and any(
        "book_table:ok" in t.tools_used and bookings[-1]["reference"] in t.reply_heard for t in replies))
    return result.hangup and len(replies) >= len(DEMO_LINES) and any(t.interrupted for t in turns) and booked


def _print_booking(booking: dict) -> None:
    print(f"  booking svc : booked {booking['summary']}, reference {booking['reference']}", flush=True)


def _collect(turns: list[TurnMetrics], then: Callable[[TurnMetrics], None]) -> Callable[[TurnMetrics], None]:
    def on_turn(metrics: TurnMetrics) -> None:
        turns.append(metrics)
        then(metrics)

    return on_turn


if __name__ == "__main__":
    sys.exit(main())
