r"""Benchmark: turn-taking with real people's recordings on the embedded pipeline (Moonshine hears them for
real, with its own punctuation), each mode on the same lines.

The callers are all the recordings in ../shared/speech (read sentences with 0.3-1.0 s pauses, commas,
digits dictated in groups 1.3 s apart, questions, accents, noise, one-word answers), each trimmed of the
silence after its last word (so a line ends when the speaker does); each is one line of a call, played
once the bot has finished its previous answer (a short one: "Okay."). Printed per line and mode:

  talk-over   the bot's audio that played while the caller was still in the middle of their line (from
              its first frame to the clear that stopped it, or the line's end)
  delay       first bot audio after the line's end

and per mode: talk-over in all and the worst line, undone replies (stopped because the caller went on
right after they started), turns answered for the lines (more than one per line = the bot answered half
a sentence), the median delay. ``-v`` prints each turn's transcript, how its words read and the audio
model's probability.

Modes: ``default`` (the pipeline's defaults), ``words-only`` (``turn.audio_model: none``), ``smart-turn``
(``turn.audio_model: smart-turn-v3``: the words and how the pause sounds), ``no-undo``
(``turn.undo_reply_within_ms: 0``: the bot is stopped by ordinary barge-in, after
``vad.barge_in_min_ms``), ``plain`` (no speculation, a fixed 600 ms endpoint, no undo: the rule before
issue 6). ``--edit 'OLD=>NEW'`` changes the pipeline.yaml text in every mode.

    python -m bench.real_turns
    python -m bench.real_turns --modes words-only,smart-turn -v
    python -m bench.real_turns --modes words-only \
        --edit "incomplete_end_silence_ms: 1600=>incomplete_end_silence_ms: 1200"
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

import numpy as np

from switchboard.audio.wav import read_wav, write_wav
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
# every recording: read sentences with pauses and commas, digits in groups, questions, accents, noise,
# one-word answers
CLIPS = sorted(p.name for p in SPEECH.glob("*.wav")) if SPEECH.is_dir() else []
# each mode: config edits on the bundled pipeline.yaml (text replaced once)
MODES: dict[str, list[tuple[str, str]]] = {
    "default": [],
    "words-only": [("audio_model: smart-turn-v3", "audio_model: none")],
    "smart-turn": [("audio_model: none", "audio_model: smart-turn-v3")],
    "no-undo": [("undo_reply_within_ms: 1000", "undo_reply_within_ms: 0")],
    "plain": [("undo_reply_within_ms: 1000", "undo_reply_within_ms: 0"),
              ("speculate_after_ms: 120", "speculate_after_ms: 0"),
              ("audio_model: smart-turn-v3", "audio_model: none")],
}


def config_text(mode: str, edits: list[tuple[str, str]]) -> str:
    text = default_config_path().read_text()
    for old, new in [*MODES[mode], *edits]:
        text = text.replace(old, new, 1)
    # a short answer to anything, so that the lines follow each other quickly
    start = text.index("      fallback: ")
    return text[:start] + '      fallback: "Okay."' + text[text.index("\n", start):]


def trimmed(clip: str, folder: Path) -> str:
    """The recording without the silence after its last word (kept: 50 ms), so that a line "ends" when
    the speaker does: the bot's reply to a line must not count as talking over its trailing silence."""
    pcm, rate = read_wav(str(SPEECH / clip))
    frame = rate // 100
    frames = pcm[: len(pcm) // frame * frame].astype(np.float64).reshape(-1, frame)
    levels = np.sqrt(np.mean(frames**2, axis=1))
    last = int(np.nonzero(levels >= levels.max() * 0.05)[0][-1])  # within 26 dB of the loudest 10 ms
    path = folder / clip
    write_wav(str(path), pcm[: (last + 6) * frame], rate)
    return str(path)


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


async def run_mode(mode: str, edits: list[tuple[str, str]]) -> dict[str, object]:
    turns: list[TurnMetrics] = []
    events: list[CallerEvent] = []
    app = create_app(parse_config(config_text(mode, edits)), on_turn=turns.append)
    with tempfile.TemporaryDirectory() as folder:
        lines = [CallerLine(wav=trimmed(clip, Path(folder))) for clip in CLIPS]
        async with running(app) as port:
            result = await run_call(f"ws://127.0.0.1:{port}/media-stream", lines,
                                    on_event=events.append, hangup_timeout_s=2, reply_timeout_s=20)
            await app.state.host.wait_idle()
    replies = [t for t in turns if t.kind == "reply"]
    delays = [line.response_delay_ms for line in result.lines]
    known = [d for d in delays if d is not None]
    return {"over": talk_over(events), "delays": delays, "undone": sum(t.undone for t in replies),
            "turns": len(replies), "answered": sum(bool(t.reply_heard) and not t.undone for t in replies),
            "delay": statistics.median(known) if known else None,
            "heard": [(t.transcript, t.reads, t.sounds_finished) for t in replies]}


def _ms(value: float | None) -> str:
    return "    -" if value is None else f"{value / 1000:5.2f}"


async def main(modes: list[str], edits: list[tuple[str, str]], verbose: bool) -> None:
    if not SPEECH.is_dir():
        raise SystemExit(f"the real recordings are not at {SPEECH}")
    print(f"{len(CLIPS)} real recordings as caller lines, embedded pipeline (Moonshine)"
          + (f"; edits {edits}" if edits else "") + "\n")
    results = {}
    for mode in modes:
        results[mode] = r = await run_mode(mode, edits)
        if verbose:
            for transcript, reads, sounds in r["heard"]:
                print(f"  {mode}: heard {transcript!r} reads {reads} sounds finished {sounds}")
    print("per line: bot audio while the caller was mid-line (s) / first bot audio after the line (s)")
    print(f"{'line':42s}" + "".join(f"{mode:>16s}" for mode in modes))
    for i, clip in enumerate(CLIPS):
        cells = "".join(f"{r['over'][i]:7.2f} / {_ms(r['delays'][i])}" if i < len(r["over"])
                        else f"{'-':>16s}" for r in results.values())
        print(f"{clip[:42]:42s}{cells}")
    print("\nmode         talk-over total  worst line  lines talked over  undone  turns  answered"
          "  delay median")
    for mode, r in results.items():
        over = r["over"]
        delay = f"{r['delay'] / 1000:.2f} s" if r["delay"] is not None else "-"
        talked_over = sum(o > 0 for o in over)
        print(f"{mode:12s} {sum(over):10.2f} s {max(over, default=0):9.2f} s {talked_over:10d} of "
              f"{len(over)} {r['undone']:8d} {r['turns']:6d} {r['answered']:9d}     {delay}", flush=True)


def _edit(text: str) -> tuple[str, str]:
    old, _, new = text.partition("=>")
    return old, new


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="default,words-only,no-undo,plain")
    parser.add_argument("--edit", action="append", default=[], type=_edit,
                        help="'OLD=>NEW': one more edit of the pipeline.yaml text, in every mode")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each turn's transcript")
    args = parser.parse_args()
    asyncio.run(main(args.modes.split(","), args.edit, args.verbose))
