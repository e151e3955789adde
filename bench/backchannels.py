"""Benchmark: backchannels and interruptions over the bot, on the embedded pipeline (Moonshine hears the
caller for real), with the backchannel rule on (the default) and off.

Each call asks the bundled script for the opening hours (a 7 s answer); about a second into the answer
the caller says one short thing over it, in the caller's voice (Piper, pitched up; synthetic: the real
recordings in ../shared/speech hold no backchannels). Printed per line: whether the bot's answer went
on to the end, how long after the caller's onset its audio stopped (the clear), and what the
recogniser heard. Figures: backchannels that ended the bot's turn (target ≤ 1 of 10), interruptions
that did not, and the median / max audio-stop time after an interruption's onset (target ≤ 300 ms).

    python -m bench.backchannels                # both modes, 10 backchannels + 5 interruptions each
    python -m bench.backchannels --modes on --stt moonshine,whisper
    python -m bench.backchannels --modes on --min-words 2   # a stray misheard word passes; "no" still stops
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from dataclasses import dataclass

from switchboard.caller import BotAudioStarted, CallerEvent, CallerLine, ClearReceived, run_call
from switchboard.config import default_config_path, parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.server import create_app, running

QUESTION = "what are your opening hours"
BACKCHANNELS = ["yeah", "uh-huh", "okay", "right", "sure", "mm-hmm", "yes", "yeah yeah", "okay right",
                "I see"]
INTERRUPTIONS = ["wait", "no, Tuesday", "stop", "hang on a second", "sorry, can I book a table"]


@dataclass
class Outcome:
    said: str
    kind: str  # "backchannel" or "interruption"
    answer_ended: bool  # the bot's answer to the question was cut (its turn interrupted)
    clear_ms: float | None  # audio stop after the caller's onset
    heard: str  # what the recogniser made of it (the next turn's transcript, or "" when there was none)
    backchannels: int
    gap_s: float | None = None  # from the clear to the bot's audio going on (a backchannel's pause)


async def one_call(port: int, said: str, kind: str) -> tuple[str, Outcome]:
    events: list[CallerEvent] = []
    result = await run_call(f"ws://127.0.0.1:{port}/media-stream",
                            [CallerLine(QUESTION), CallerLine(said, barge_in=True)],
                            on_event=events.append, hangup_timeout_s=5)
    clear = next((e.t for e in events if isinstance(e, ClearReceived)), None)
    resumed = next((e.t for e in events if isinstance(e, BotAudioStarted) and clear is not None
                    and e.t > clear), None)
    gap = resumed - clear if clear is not None and resumed is not None else None
    return result.call_sid, Outcome(said, kind, False, result.lines[1].clear_after_onset_ms, "", 0, gap)


async def run_mode(backchannels: bool, concurrency: int, stt: str, min_words: int = 1) -> list[Outcome]:
    text = default_config_path().read_text().replace("backchannels: true",
                                                     f"backchannels: {str(backchannels).lower()}")
    if min_words != 1:
        assert "min_words: 1  #" in text, "the bundled pipeline.yaml no longer says min_words: 1"
        text = text.replace("min_words: 1  #", f"min_words: {min_words}  #", 1)
    if stt != "moonshine":
        text = text.replace("provider: moonshine  #", f"provider: {stt}  #", 1)
        text = text.replace("      model: tiny-en  #", "      # model: tiny-en  #", 1)
    turns: list[TurnMetrics] = []
    app = create_app(parse_config(text), on_turn=turns.append)
    gate = asyncio.Semaphore(concurrency)
    placed: list[tuple[str, Outcome]] = []
    async with running(app) as port:

        async def call(said: str, kind: str) -> None:
            async with gate:
                placed.append(await one_call(port, said, kind))

        await asyncio.gather(*(call(s, "backchannel") for s in BACKCHANNELS),
                             *(call(s, "interruption") for s in INTERRUPTIONS))
        await app.state.host.wait_idle()
    for call_id, outcome in placed:
        replies = sorted((t for t in turns if t.call_id == call_id and t.kind == "reply"),
                         key=lambda t: t.index)
        if replies:
            outcome.answer_ended, outcome.backchannels = replies[0].interrupted, replies[0].backchannels
            outcome.heard = " / ".join(t.transcript for t in replies[1:])
    return [outcome for _, outcome in placed]


def report(mode: str, stt: str, outcomes: list[Outcome], min_words: int = 1) -> None:
    print(f"\n== backchannel rule {mode}, recogniser {stt}, min_words {min_words}")
    for o in sorted(outcomes, key=lambda o: (o.kind, o.said)):
        clear = f"{o.clear_ms:4.0f} ms" if o.clear_ms is not None else "   none"
        print(f"  {o.kind:12s} {o.said!r:28s} answer {'CUT  ' if o.answer_ended else 'whole'}  "
              f"audio stop {clear}  then heard {o.heard!r}")
    bc = [o for o in outcomes if o.kind == "backchannel"]
    it = [o for o in outcomes if o.kind == "interruption"]
    stops = [o.clear_ms for o in it if o.clear_ms is not None]
    gaps = [o.gap_s for o in bc if o.gap_s is not None and not o.answer_ended]
    if gaps:
        print(f"  the bot's pause for a backchannel (clear to going on): "
              f"median {statistics.median(gaps):.2f} s, max {max(gaps):.2f} s")
    print(f"  backchannels that ended the bot's answer: {sum(o.answer_ended for o in bc)} of {len(bc)}")
    print(f"  interruptions that did not: {sum(not o.answer_ended for o in it)} of {len(it)}")
    if stops:
        print(f"  audio stop after an interruption's onset: median {statistics.median(stops):.0f} ms, "
              f"max {max(stops):.0f} ms")


async def main(modes: list[str], concurrency: int, stts: list[str], min_words: int) -> None:
    for stt in stts:
        for mode in modes:
            report(mode, stt, await run_mode(mode == "on", concurrency, stt, min_words), min_words)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="on,off")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--stt", default="moonshine", help="embedded recognisers, comma-separated (whisper)")
    parser.add_argument("--min-words", type=int, default=1, help="interruption.min_words (default 1)")
    args = parser.parse_args()
    asyncio.run(main(args.modes.split(","), args.concurrency, args.stt.split(","), args.min_words))
