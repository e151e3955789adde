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
    python -m bench.backchannels --modes on --real   # real listener sounds and interruptions, synthetic hums
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from switchboard.audio.wav import read_wav, write_wav
from switchboard.caller import BotAudioStarted, CallerEvent, CallerLine, ClearReceived, run_call
from switchboard.config import default_config_path, parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.server import create_app, running

QUESTION = "what are your opening hours"
BACKCHANNELS = ["yeah", "uh-huh", "okay", "right", "sure", "mm-hmm", "yes", "yeah yeah", "okay right",
                "I see"]
INTERRUPTIONS = ["wait", "no, Tuesday", "stop", "hang on a second", "sorry, can I book a table"]
SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
REAL_LISTENER_SOUNDS = ["ami_FEE016_mm-hmm_22.32.wav", "ami_FEE016_mm_25.60.wav",
                        "ami_FEE016_oh-yeah_18.52.wav", "ami_MEE014_yeah_42.17.wav",
                        "ami_FEE013_yeah_2.59.wav"]
REAL_INTERRUPTIONS = ["speechcommands_no.wav", "noisy_vctk_p232_113_its_not_fair.wav",
                      "noisy_vctk_p232_208_now_its_all_right.wav", "cards_five_five.wav"]
SYNTHETIC_HUMS = [(95, 0.4, 1, -25), (130, 0.6, 2, -15), (190, 0.3, 1, -30), (240, 0.7, 2, -12)]


@dataclass
class Outcome:
    said: str
    kind: str  # "backchannel" or "interruption"
    answer_ended: bool  # the bot's answer to the question was cut (its turn interrupted)
    clear_ms: float | None  # audio stop after the caller's onset
    heard: str  # what the recogniser made of it (the next turn's transcript, or "" when there was none)
    backchannels: int
    gap_s: float | None = None  # from the clear to the bot's audio going on (a backchannel's pause)


def real_lines(folder: Path) -> list[tuple[str, str, CallerLine]]:
    """--real: the real listener sounds and short interruptions of ../shared/speech at a typical speech
    level (-20 dBFS RMS: the meeting clips are as recorded, some very quiet), and synthetic hums."""
    from tests.speech import hum

    out = []
    for kind, clips in (("backchannel", REAL_LISTENER_SOUNDS), ("interruption", REAL_INTERRUPTIONS)):
        for clip in clips:
            pcm, rate = read_wav(str(SPEECH / clip))
            x = pcm.astype(np.float64)
            x *= 10 ** (-20 / 20) * 32768 / np.sqrt(np.mean(x**2))
            write_wav(str(folder / clip), np.clip(x, -32768, 32767).astype(np.int16), rate)
            out.append((clip.split("_", 2)[-1].rsplit(".", 1)[0], kind, CallerLine(wav=str(folder / clip))))
    for f0, seconds, syllables, level in SYNTHETIC_HUMS:
        name = f"hum {f0} Hz {seconds} s x{syllables} {level} dBFS"
        write_wav(str(folder / f"{name}.wav"), hum(seconds, f0, syllables, level, seed=f0), 8000)
        out.append((name, "backchannel", CallerLine(wav=str(folder / f"{name}.wav"))))
    return out


async def one_call(port: int, said: str, kind: str, line: CallerLine | None = None) -> tuple[str, Outcome]:
    events: list[CallerEvent] = []
    result = await run_call(f"ws://127.0.0.1:{port}/media-stream",
                            [CallerLine(QUESTION), line or CallerLine(said, barge_in=True)],
                            on_event=events.append, hangup_timeout_s=5)
    clear = next((e.t for e in events if isinstance(e, ClearReceived)), None)
    resumed = next((e.t for e in events if isinstance(e, BotAudioStarted) and clear is not None
                    and e.t > clear), None)
    gap = resumed - clear if clear is not None and resumed is not None else None
    return result.call_sid, Outcome(said, kind, False, result.lines[1].clear_after_onset_ms, "", 0, gap)


async def run_mode(backchannels: bool, concurrency: int, stt: str, min_words: int = 1,
                   real: bool = False) -> list[Outcome]:
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

        async def call(said: str, kind: str, line: CallerLine | None = None) -> None:
            async with gate:
                placed.append(await one_call(port, said, kind, line))

        with tempfile.TemporaryDirectory() as folder:
            if real:
                await asyncio.gather(*(call(said, kind, dataclasses.replace(line, barge_in=True))
                                       for said, kind, line in real_lines(Path(folder))))
            else:
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


async def main(modes: list[str], concurrency: int, stts: list[str], min_words: int, real: bool) -> None:
    for stt in stts:
        for mode in modes:
            report(mode, stt, await run_mode(mode == "on", concurrency, stt, min_words, real), min_words)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="on,off")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--stt", default="moonshine", help="embedded recognisers, comma-separated (whisper)")
    parser.add_argument("--min-words", type=int, default=1, help="interruption.min_words (default 1)")
    parser.add_argument("--real", action="store_true",
                        help="real listener sounds, real short interruptions, synthetic hums")
    args = parser.parse_args()
    asyncio.run(main(args.modes.split(","), args.concurrency, args.stt.split(","), args.min_words, args.real))
