"""Benchmark: how well the embedded PocketSphinx STT hears eSpeak NG callers on a phone line.

Each test phrase is spoken by each caller voice, taken through the inbound telephone path — 22,050 Hz ->
8 kHz -> μ-law and back -> the VAD segmenter (with line noise around the speech, so the utterance
has its real pre-roll and tail) -> 16 kHz — and recognised in every mode. The recognizer's phrases
are all the bundled pipeline's rule phrases (as on a call), so a grammar has to pick among all of them.

Prints, per voice and mode: word error rate, utterances recognised exactly, utterances that reach the
same scripted rule as the words actually spoken (what matters to the call), and CPU per utterance;
then decoder build time and resident memory per mode.

Run from the repository root:  python -m bench.stt_accuracy [--voices en-us+klatt4 en-us+m3] [--all]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import numpy as np

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.resample import resample
from switchboard.audio.segmenter import Segmenter, Utterance
from switchboard.config import load_config
from switchboard.providers.espeak import SAMPLE_RATE as TTS_RATE
from switchboard.providers.espeak import synthesize
from switchboard.providers.pocketsphinx import PocketsphinxSTT, PocketsphinxSTTConfig, build_decoder
from switchboard.providers.scripted import ScriptedLLM
from tests.speech import quiet

BUNDLED = Path(__file__).resolve().parent.parent / "pipeline.yaml"
VOICES = ["en-us+klatt4", "en-us+m3", "en-us+f2"]
MODES = ("grammar", "keyphrase", "lm")
PHRASES_PER_RULE = 2  # the first phrases of each rule, unless --all


def telephone_utterance(text: str, voice: str) -> np.ndarray:
    """`text` spoken by `voice` as the STT receives it on a call: the segmenter's utterance, at 16 kHz."""
    line = ulaw_decode(ulaw_encode(resample(synthesize(text, voice=voice), TTS_RATE, 8000)))
    stream = np.concatenate([quiet(1.0, seed=1), line, quiet(1.5, seed=2)])
    segmenter = Segmenter()
    for index in range(0, len(stream) - 159, 160):
        for event in segmenter.push(stream[index : index + 160], now=index / 8000):
            if isinstance(event, Utterance):
                return resample(event.pcm, 8000, 16000)
    raise RuntimeError(f"the segmenter found no utterance in {text!r} ({voice})")


def word_errors(reference: str, hypothesis: str) -> int:
    """Levenshtein distance between the two word sequences."""
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, heard in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != heard))
    return row[-1]


async def score(stt: PocketsphinxSTT, llm: ScriptedLLM, cases: list[tuple[str, np.ndarray]]) -> dict:
    errors = words = exact = same_rule = 0
    cpu: list[float] = []
    for phrase, pcm in cases:
        started = time.process_time()
        heard = (await stt.transcribe(pcm)).text
        cpu.append(time.process_time() - started)
        errors += word_errors(phrase, heard)
        words += len(phrase.split())
        exact += heard == phrase
        same_rule += llm.respond(heard) == llm.respond(phrase)
    n = len(cases)
    return {"wer": 100 * errors / words, "exact": f"{exact}/{n}", "rule": f"{same_rule}/{n}",
            "cpu_ms": 1000 * statistics.median(cpu)}


def build_cost(mode: str, phrases: list[str], repeats: int = 3) -> tuple[float, float, float]:
    """(median build seconds, MB resident for the first decoder, MB for each further one).

    Runs in a fresh process, so the model files' pages a previous decoder loaded don't hide the cost."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as child:
        return child.submit(_build_cost, mode, phrases, repeats).result()


def _build_cost(mode: str, phrases: list[str], repeats: int) -> tuple[float, float, float]:
    def rss_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    kept, times, sizes = [], [], []
    for _ in range(repeats):
        before, started = rss_mb(), time.perf_counter()
        kept.append(build_decoder(mode, phrases))
        times.append(time.perf_counter() - started)
        sizes.append(rss_mb() - before)
    return statistics.median(times), sizes[0], statistics.median(sizes[1:])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voices", nargs="+", default=VOICES, help="caller voices (eSpeak NG names)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--all", action="store_true", help="test every rule phrase, not the first 2 per rule")
    args = parser.parse_args()

    llm_cfg = load_config(BUNDLED).pipeline(None).llm
    llm = ScriptedLLM(llm_cfg)
    per_rule = None if args.all else PHRASES_PER_RULE
    tested = [phrase for rule in llm_cfg.rules for phrase in rule.phrases[:per_rule]]
    print(f"{len(tested)} test phrases; the recognizer knows {len(llm.phrases())} phrases\n")
    print(f"{'caller voice':<16}{'mode':<11}{'WER %':>7}{'exact':>8}{'same rule':>11}{'CPU ms/utt':>12}")
    for voice in args.voices:
        cases = [(phrase, telephone_utterance(phrase, voice)) for phrase in tested]
        for mode in args.modes:
            cfg = PocketsphinxSTTConfig(provider="pocketsphinx", mode=mode, pool_size=1)
            result = await score(PocketsphinxSTT(cfg, llm.phrases()), llm, cases)
            print(f"{voice:<16}{mode:<11}{result['wer']:>7.1f}{result['exact']:>8}{result['rule']:>11}"
                  f"{result['cpu_ms']:>12.1f}")

    print(f"\n{'decoder':<11}{'build s':>9}{'first MB':>10}{'next MB':>9}")
    for mode in args.modes:
        seconds, first, more = build_cost(mode, llm.phrases())
        print(f"{mode:<11}{seconds:>9.2f}{first:>10.0f}{more:>9.0f}")


if __name__ == "__main__":
    asyncio.run(main())
