"""Experiment: does recognising only the audio added since the last pause give the embedded recogniser's
(Moonshine tiny) transcript of the whole utterance?

Speculation re-runs the recogniser on the whole utterance so far at every pause (`turn.speculate_after_ms`)
and once more at its end: an utterance with k pauses is recognised k + 1 times from its start. If the
pieces between pauses, recognised alone and joined, read the same, each pause would cost only its new
audio. Every real recording in ../shared/speech goes through the telephone path (its rate -> 8 kHz μ-law
-> back), then through the call's segmenter with the bundled pipeline's `vad:` and `turn:` settings on a
simulated clock, as on a call; every utterance with a pause is recognised both ways and scored against
the manifest's transcript (bench.stt_accuracy's word normalising and word error rate).

    python -m bench.incremental_stt
"""

from __future__ import annotations

import csv
import itertools
import time

import numpy as np

from bench.stt_accuracy import SPEECH, normalise, telephone, word_errors
from switchboard.audio.resample import resample
from switchboard.audio.segmenter import Pause, Segmenter, Utterance
from switchboard.audio.wav import read_wav
from switchboard.config import BUNDLED_CONFIG, load_config
from switchboard.providers.moonshine import _engine

FRAME = 160


def utterances(pcm8k: np.ndarray) -> list[tuple[list[np.ndarray], np.ndarray]]:
    """Each utterance the call's segmenter finds: the audio of each of its pauses, and its own."""
    pipeline = load_config(BUNDLED_CONFIG).pipelines["default"]
    vad = pipeline.vad
    segmenter = Segmenter(vad.aggressiveness, vad.min_speech_ms, vad.pre_roll_ms, vad.end_silence_ms,
                          vad.max_utterance_s, vad.barge_in_min_ms,
                          speculate_after_ms=pipeline.turn.speculate_after_ms)
    audio = np.concatenate([pcm8k, np.zeros(8000 * 2, np.int16)])  # silence to endpoint the last one
    found, pauses = [], []
    for k in range(len(audio) // FRAME):
        now = k * 0.02
        events = segmenter.push(audio[k * FRAME:(k + 1) * FRAME], now) + segmenter.tick(now + 0.019)
        for event in events:
            if isinstance(event, Pause):
                pauses.append(event.pcm)
            elif isinstance(event, Utterance):
                found.append((pauses, event.pcm))
                pauses = []
    return found


def main() -> None:
    engine = _engine("tiny-en")

    def hear(pcm8k: np.ndarray) -> str:
        return engine.recognize(resample(pcm8k, 8000, 16000)) if len(pcm8k) >= 1600 else ""

    with open(SPEECH / "MANIFEST.tsv", newline="") as manifest:
        rows = list(csv.DictReader(manifest, delimiter="\t"))
    same = total = errors_whole = errors_pieces = words = 0
    cost_whole = cost_pieces = 0.0
    print(f"{'recording':<44} {'pauses':>6}  whole utterance | pieces since each pause")
    for row in rows:
        pcm, rate = read_wav(SPEECH / row["file"])
        for pauses, final in utterances(resample(telephone(pcm, rate), 16000, 8000)):
            if not pauses:
                continue
            started = time.process_time()
            whole = hear(final)
            for paused in pauses:  # what speculation does now: the utterance so far, at every pause
                hear(paused)
            cost_whole += time.process_time() - started
            started = time.process_time()
            cuts = [0, *(len(paused) for paused in pauses), len(final)]
            pieces = " ".join(hear(final[a:b]) for a, b in itertools.pairwise(cuts) if b > a)
            cost_pieces += time.process_time() - started
            reference = normalise(row["transcript"])
            total += 1
            same += normalise(whole) == normalise(pieces)
            errors_whole += word_errors(reference, normalise(whole))
            errors_pieces += word_errors(reference, normalise(pieces))
            words += len(reference)
            print(f"{row['file']:<44} {len(pauses):>6}  {whole!r} | {pieces!r}")
    if not total:
        print("no utterance with a pause")
        return
    print(f"\n{total} utterances with pauses: the same words both ways in {same}; word error rate "
          f"{errors_whole / words:.1%} whole vs {errors_pieces / words:.1%} in pieces (over the whole "
          "recording's transcript, so a recording cut into several utterances scores each against it all)")
    print(f"recogniser CPU: {cost_whole:.2f} s for whole utterances at every pause and the end, "
          f"{cost_pieces:.2f} s for the pieces ({cost_pieces / cost_whole:.2f}x)")


if __name__ == "__main__":
    main()
