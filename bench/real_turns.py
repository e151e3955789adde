"""Benchmark: turn-taking with real people's recordings on the embedded pipeline (Moonshine hears them for
real, with its own punctuation), each mode on the same lines.

The callers are the recordings in ../shared/speech with pauses inside (read sentences with 0.3-0.6 s
pauses, commas, digits dictated in groups with 1.3 s gaps) and short questions; each is one line of a
call, played once the bot has finished its previous answer (a short one: "Okay."). Printed per mode:

  talk-over   the bot's audio that played while the caller was still in the middle of their line (from
              its first frame to the clear that stopped it, or the line's end), per line and in all
  undone      replies stopped because the caller went on right after they started
  turns       turns answered for the lines (more than one per line = the bot answered half a sentence)
  delay       first bot audio after the line's last word, median

Modes: ``default`` (the pipeline's defaults), ``no-undo`` (``turn.undo_reply_within_ms: 0``: the bot is
stopped by ordinary barge-in, after ``vad.barge_in_min_ms``), ``plain`` (no speculation, a fixed
600 ms endpoint, no undo: the rule before issue 6).

    python -m bench.real_turns
    python -m bench.real_turns --modes default,no-undo
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path

from switchboard.caller import (
    BotAudioStarted,
    CallerEvent,
    CallerLine,
    ClearReceived,
    LineEnded,
    LineStarted,
    run_call,
)
from switchboard.config import default_config_path, parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.server import create_app, running

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
CLIPS = ["ljspeech_LJ050-0131_two_phrases.wav", "librivox_austen_0870_long_sentence.wav",
         "arctic_aew_a0002_us_male_commas.wav", "librispeech_251_i_tell_you_she_cried.wav",
         "digits_vosk_three_groups.wav", "librispeech_251_testing_routine_question.wav",
         "arctic_axb_a0004_indian_female_commas.wav"]
MODES = ["default", "no-undo", "plain"]


def config_text(mode: str) -> str:
    text = default_config_path().read_text()
    if mode in ("no-undo", "plain"):
        text = text.replace("undo_reply_within_ms: 1000", "undo_reply_within_ms: 0", 1)
    if mode == "plain":
        text = text.replace("speculate_after_ms: 120", "speculate_after_ms: 0", 1)
    # a short answer to anything, so that the lines follow each other quickly
    start = text.index("      fallback: ")
    return text[:start] + '      fallback: "Okay."' + text[text.index("\n", start):]


def talk_over(events: list[CallerEvent]) -> list[float]:
    """Per caller line: seconds of bot audio that started while the line was still playing, until the
    clear that stopped it or the line's end."""
    out, speaking, started_at, total = [], False, None, 0.0
    for event in events:
        if isinstance(event, LineStarted):
            speaking, started_at, total = True, None, 0.0
        elif isinstance(event, BotAudioStarted) and speaking and started_at is None:
            started_at = event.t
        elif isinstance(event, ClearReceived) and speaking and started_at is not None:
            total += event.t - started_at
            started_at = None
        elif isinstance(event, LineEnded):
            if started_at is not None:
                total += event.t - started_at
            out.append(total)
            speaking, started_at = False, None
    return out


async def run_mode(mode: str) -> dict[str, object]:
    turns: list[TurnMetrics] = []
    events: list[CallerEvent] = []
    app = create_app(parse_config(config_text(mode)), on_turn=turns.append)
    async with running(app) as port:
        result = await run_call(f"ws://127.0.0.1:{port}/media-stream",
                                [CallerLine(wav=str(SPEECH / clip)) for clip in CLIPS],
                                on_event=events.append, hangup_timeout_s=2, reply_timeout_s=20)
        await app.state.host.wait_idle()
    replies = [t for t in turns if t.kind == "reply"]
    delays = [line.response_delay_ms for line in result.lines if line.response_delay_ms is not None]
    over = talk_over(events)
    return {"over": over, "undone": sum(t.undone for t in replies), "turns": len(replies),
            "answered": sum(bool(t.reply_heard) and not t.undone for t in replies),
            "delay": statistics.median(delays) if delays else None,
            "transcripts": [t.transcript for t in replies]}


async def main(modes: list[str]) -> None:
    if not SPEECH.is_dir():
        raise SystemExit(f"the real recordings are not at {SPEECH}")
    print(f"{len(CLIPS)} real recordings as caller lines, embedded pipeline (Moonshine)\n")
    print("mode      talk-over total  worst line  lines talked over  undone  turns  answered  delay median")
    for mode in modes:
        r = await run_mode(mode)
        over = r["over"]
        delay = f"{r['delay'] / 1000:.2f} s" if r["delay"] is not None else "-"
        talked_over = sum(o > 0 for o in over)
        print(f"{mode:9s} {sum(over):10.2f} s {max(over, default=0):9.2f} s {talked_over:10d} of "
              f"{len(over)} {r['undone']:8d} {r['turns']:6d} {r['answered']:9d}     {delay}", flush=True)
        for transcript in r["transcripts"]:
            print(f"            heard: {transcript!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    asyncio.run(main(args.modes.split(",")))
