"""Benchmark: what the audio end-of-turn model (Smart Turn v3) hears on the real recordings, and its cost.

Each recording of ../shared/speech goes through the call's own segmenter at the telephone rate (8 kHz);
at every pause it reports (`turn.speculate_after_ms`, 120 ms of silence) the model is asked, as a call
does, whether the speaker sounds finished, and again with more silence after the voice. A pause is
"inside" when more speech follows it, else it is the recording's end. Printed: the probability per pause
and the counts (finished at the end, unfinished inside), and the time per inference (features + model).

    python -m bench.smart_turn
    python -m bench.smart_turn --later-ms 0,200
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from switchboard.audio import smart_turn
from switchboard.audio.resample import resample
from switchboard.audio.segmenter import Pause, Segmenter
from switchboard.audio.wav import read_wav

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"


def pauses(pcm: np.ndarray) -> list[tuple[int, float]]:
    """(sample where the pause was reported, voice end in s) for each pause the segmenter reports."""
    segmenter = Segmenter(speculate_after_ms=120, end_silence_ms=60_000)
    found, t = [], 0.0
    for at in range(0, len(pcm), 160):
        t += 0.02
        for event in segmenter.push(pcm[at:at + 160], t) + segmenter.tick(t):
            if isinstance(event, Pause):
                found.append((at + 160, event.speech_end))
    return found


def main(later_ms: list[int], threshold: float) -> None:
    if not SPEECH.is_dir():
        raise SystemExit(f"the real recordings are not at {SPEECH}")
    model = smart_turn.shared()
    smart_turn.warm()
    took: list[float] = []
    counts = {ms: {"end": [0, 0], "inside": [0, 0]} for ms in later_ms}  # [as expected, all]
    print(f"probability of 'finished' at each pause, with {later_ms} ms more silence; threshold {threshold}")
    for wav in sorted(SPEECH.glob("*.wav")):
        pcm, rate = read_wav(wav)
        pcm = np.concatenate([resample(pcm, rate, 8000), np.zeros(8000, np.int16)])
        found = pauses(pcm)
        cells = []
        for n, (at, voice_end) in enumerate(found):
            where = "end" if n == len(found) - 1 else "inside"
            start = max(0, at - 8 * 8000)
            values = []
            for ms in later_ms:
                began = time.perf_counter()
                p = model.probability(pcm[start:at + ms * 8], 8000)
                took.append(time.perf_counter() - began)
                values.append(p)
                expected = (p >= threshold) == (where == "end")
                counts[ms][where][0] += expected
                counts[ms][where][1] += 1
            cells.append(f"{voice_end:.2f}s {where[0]} " + "/".join(f"{p:.2f}" for p in values))
        print(f"  {wav.stem[:40]:40s} " + "   ".join(cells))
    for ms in later_ms:
        end, inside = counts[ms]["end"], counts[ms]["inside"]
        print(f"+{ms} ms: finished at {end[0]} of {end[1]} ends; unfinished at {inside[0]} of {inside[1]} "
              "pauses inside a recording")
    print(f"inference (features + model, one thread): median {statistics.median(took) * 1000:.0f} ms, "
          f"max {max(took) * 1000:.0f} ms over {len(took)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--later-ms", default="0,200", help="more silence after the pause report, in ms")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    main([int(ms) for ms in args.later_ms.split(",")], args.threshold)
