"""Benchmark: how well each embedded recogniser hears callers on a phone line, and what it costs.

Every utterance goes through the inbound telephone path first — its rate -> 8 kHz -> μ-law and back ->
16 kHz — as on a call. Two sets:

- real people: the recordings in ../shared/speech/ (MANIFEST.tsv: accents, noise, digits, pauses, short
  replies), scored per category;
- synthetic callers: the bundled script's rule phrases spoken by the simulated caller's voices (Piper
  pitched up, as `switchboard call` speaks; eSpeak NG en-us+klatt4), scored with whether the reply
  reaches the same scripted rule as the words spoken (what matters to the call).

Word error rate is on normalised words: lower case, punctuation dropped, numbers written as words
("7" -> "seven", "10" -> "ten", a longer digit string digit by digit), so Whisper's digits and
Moonshine's words are scored alike. CPU is process CPU time per utterance (every thread the engine
uses), wall the time the call waits. PocketSphinx runs in grammar mode on the rules' phrases (as it
would on a call) and, for the real recordings, in lm mode (any words).

`--browser` scores the real recordings on a browser call's path instead (telephony/webrtc): 16 kHz ->
48 kHz -> Opus (libopus, mono, 32 kbit/s as a browser sends a microphone) -> aiortc's decoder ->
`media.Inbound`, which gives the call its 8 kHz frames and their 16 kHz copy; each engine hears both
ways a recogniser can get it on such a call: the 8 kHz upsampled to its rate (`wideband = False`) and
the 16 kHz copy (`wideband = True`), with the phone path beside them (pipeline/wideband.py).

Run from the repository root:  python -m bench.stt_accuracy [--engines moonshine ...] [--no-synthetic]
                               python -m bench.stt_accuracy --browser [--engines ...]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.resample import resample
from switchboard.audio.wav import read_wav
from switchboard.caller import synthesize_line
from switchboard.config import BUNDLED_CONFIG, load_config
from switchboard.core.protocols import STT
from switchboard.providers.moonshine import MoonshineSTT, MoonshineSTTConfig
from switchboard.providers.pocketsphinx import PocketsphinxSTT, PocketsphinxSTTConfig
from switchboard.providers.scripted import ScriptedLLM
from switchboard.providers.whisper import WhisperSTT, WhisperSTTConfig

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech"
ENGINES = ("moonshine", "whisper-b1", "whisper-b5", "pocketsphinx-lm", "pocketsphinx-grammar")
SYNTHETIC_VOICES = ("piper", "en-us+klatt4")
ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen").split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(digits: str) -> list[str]:
    value = int(digits)
    if len(digits) > 2 or (digits.startswith("0") and len(digits) > 1):
        return [ONES[int(d)] for d in digits]
    if value < 20:
        return [ONES[value]]
    return [TENS[value // 10 - 2]] + ([ONES[value % 10]] if value % 10 else [])


def normalise(text: str) -> list[str]:
    words: list[str] = []
    for token in re.sub(r"[^a-z0-9' ]", " ", text.lower().replace(",", "").replace("-", " ")).split():
        for part in re.findall(r"\d+|[a-z']+", token):
            words += number_words(part) if part.isdigit() else [part.strip("'")]
    return [word for word in words if word]


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance between two word sequences."""
    row = list(range(len(hypothesis) + 1))
    for i, word in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, heard in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != heard))
    return row[-1]


def telephone(pcm: np.ndarray, rate: int) -> np.ndarray:
    """As the recogniser receives it on a call: 8 kHz μ-law, back up to 16 kHz."""
    return resample(ulaw_decode(ulaw_encode(resample(np.asarray(pcm, np.int16), rate, 8000))), 8000, 16000)


BROWSER_BITRATE = 32000  # a browser's Opus for a mono microphone


def browser(pcm: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """As the recognisers receive it on a browser call: (the 8 kHz frames upsampled to 16 kHz, the 16 kHz
    copy), through Opus at 48 kHz and the carrier's own `Inbound`."""
    import fractions

    import av
    from aiortc.codecs import get_decoder
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from switchboard.telephony.webrtc.media import Inbound

    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.format, encoder.layout = 48000, "s16", "mono"
    encoder.bit_rate, encoder.time_base = BROWSER_BITRATE, fractions.Fraction(1, 48000)
    decoder = get_decoder(RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2))
    inbound = Inbound()
    pcm48 = resample(np.asarray(pcm, np.int16), rate, 48000)
    pcm48 = np.concatenate([pcm48, np.zeros(-len(pcm48) % 960 + 960 * 15, np.int16)])  # flush the delays
    pairs = []
    for n, at in enumerate(range(0, len(pcm48), 960)):
        frame = av.AudioFrame.from_ndarray(pcm48[at:at + 960].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, n * 960, fractions.Fraction(1, 48000)
        for packet in encoder.encode(frame):
            for decoded in decoder.decode(JitterFrame(data=bytes(packet), timestamp=n * 960)):
                pairs += inbound.frames(decoded)
    narrow = np.concatenate([p for p, _ in pairs])
    return resample(narrow, 8000, 16000), np.concatenate([w for _, w in pairs])


async def score(stt: STT, clips: list[tuple[dict, np.ndarray]], categories: list[str], show: bool = False,
                ) -> tuple[dict[str, float], float, float]:
    """WER % per category and "all", mean CPU s and wall s per utterance."""
    errors, words = defaultdict(int), defaultdict(int)
    cpu, wall = [], []
    for row, pcm in clips:
        text, cpu_s, wall_s = await recognise(stt, pcm)
        cpu.append(cpu_s)
        wall.append(wall_s)
        ref, hyp = normalise(row["transcript"]), normalise(text)
        for key in (row["category"], "all"):
            errors[key] += word_errors(ref, hyp)
            words[key] += len(ref)
        if show:
            print(f"    {row['file']:<44} {text!r}")
    wer = {key: 100 * errors[key] / words[key] for key in [*categories, "all"]}
    return wer, statistics.mean(cpu), statistics.mean(wall)


async def browser_paths(engines: dict[str, STT], show: bool) -> None:
    rows = list(csv.DictReader((SPEECH / "MANIFEST.tsv").open(encoding="utf-8"), delimiter="\t"))
    clips = {"recorded": [], "phone": [], "browser 8k": [], "browser 16k": []}
    for row in rows:
        pcm, rate = read_wav(SPEECH / row["file"])
        narrow, wide = browser(pcm, rate)
        clips["recorded"].append((row, resample(pcm, rate, 16000)))  # the file as it is: no line at all
        clips["phone"].append((row, telephone(pcm, rate)))
        clips["browser 8k"].append((row, narrow))
        clips["browser 16k"].append((row, wide))
    categories = sorted({row["category"] for row in rows})
    print(f"real people: {len(rows)} recordings from {SPEECH}: as recorded, the phone path (8 kHz μ-law) "
          f"and a browser call's two (Opus {BROWSER_BITRATE // 1000} kbit/s: its 8 kHz upsampled, its 16 kHz "
          "copy)\n")
    print(f"{'engine':<22}{'path':<13}" + "".join(f"{c:>10}" for c in categories)
          + f"{'all':>8}{'CPU s/utt':>11}   (WER %)")
    for name, stt in engines.items():
        if name == "pocketsphinx-grammar":
            continue
        for path, path_clips in clips.items():
            wer, cpu, _ = await score(stt, path_clips, categories, show)
            print(f"{name:<22}{path:<13}" + "".join(f"{wer[c]:>10.1f}" for c in categories)
                  + f"{wer['all']:>8.1f}{cpu:>11.2f}")


async def browser_synthetic(engines: dict[str, STT], llm: ScriptedLLM) -> None:
    """The script's phrases in the simulated caller's voices on a browser call's two paths."""
    phrases = llm.phrases()
    print(f"\nsynthetic callers on a browser call: the script's {len(phrases)} rule phrases")
    print(f"{'engine':<22}{'caller voice':<15}{'path':<13}{'WER %':>7}{'same rule':>11}")
    for voice in SYNTHETIC_VOICES:
        paths: dict[str, list[tuple[str, np.ndarray]]] = {"browser 8k": [], "browser 16k": []}
        for phrase in phrases:
            narrow, wide = browser(*synthesize_line(phrase, voice))
            paths["browser 8k"].append((phrase, narrow))
            paths["browser 16k"].append((phrase, wide))
        for name, stt in engines.items():
            for path, cases in paths.items():
                errors = words = same_rule = 0
                for phrase, pcm in cases:
                    text, _, _ = await recognise(stt, pcm)
                    errors += word_errors(normalise(phrase), normalise(text))
                    words += len(normalise(phrase))
                    same_rule += llm.respond(text) == llm.respond(phrase)
                print(f"{name:<22}{voice:<15}{path:<13}{100 * errors / words:>7.1f}"
                      f"{f'{same_rule}/{len(cases)}':>11}", flush=True)


def engine(name: str, phrases: list[str]) -> STT:
    if name == "moonshine":
        return MoonshineSTT(MoonshineSTTConfig(provider="moonshine"))
    if name.startswith("whisper-b"):
        return WhisperSTT(WhisperSTTConfig(provider="whisper", beam_size=int(name.removeprefix("whisper-b"))))
    mode = name.removeprefix("pocketsphinx-")
    return PocketsphinxSTT(PocketsphinxSTTConfig(provider="pocketsphinx", mode=mode, pool_size=1),
                           phrases if mode == "grammar" else ())


async def recognise(stt: STT, pcm: np.ndarray) -> tuple[str, float, float]:
    """(text, CPU s, wall s) of one utterance."""
    cpu, wall = time.process_time(), time.perf_counter()
    text = (await stt.transcribe(pcm)).text
    return text, time.process_time() - cpu, time.perf_counter() - wall


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--no-synthetic", action="store_true", help="only the real recordings")
    parser.add_argument("--show", action="store_true", help="print every transcript")
    parser.add_argument("--browser", action="store_true",
                        help="the real recordings on a browser call's 8 kHz and 16 kHz paths")
    args = parser.parse_args()

    llm = ScriptedLLM(load_config(BUNDLED_CONFIG).pipeline(None).llm)
    engines = {name: engine(name, llm.phrases()) for name in args.engines}
    for stt in engines.values():
        await stt.warm()
    if args.browser:
        await browser_paths(engines, args.show)
        if not args.no_synthetic:
            await browser_synthetic(engines, llm)
        return

    if (SPEECH / "MANIFEST.tsv").is_file():
        rows = list(csv.DictReader((SPEECH / "MANIFEST.tsv").open(encoding="utf-8"), delimiter="\t"))
        clips = [(row, telephone(*read_wav(SPEECH / row["file"]))) for row in rows]
        print(f"real people: {len(clips)} recordings from {SPEECH}, through 8 kHz μ-law\n")
        categories = sorted({row["category"] for row, _ in clips})
        print(f"{'engine':<22}" + "".join(f"{c:>10}" for c in categories)
              + f"{'all':>8}{'CPU s/utt':>11}{'wall s/utt':>11}   (WER %)")
        for name, stt in engines.items():
            if name == "pocketsphinx-grammar":
                continue  # knows only the script's phrases: meaningless on free speech
            wer, cpu, wall = await score(stt, clips, categories, args.show)
            print(f"{name:<22}" + "".join(f"{wer[c]:>10.1f}" for c in categories)
                  + f"{wer['all']:>8.1f}{cpu:>11.2f}{wall:>11.2f}")
    else:
        print(f"(no real recordings at {SPEECH}: skipped)")

    if args.no_synthetic:
        return
    phrases = llm.phrases()
    print(f"\nsynthetic callers: the script's {len(phrases)} rule phrases")
    print(f"{'engine':<22}{'caller voice':<15}{'WER %':>7}{'same rule':>11}{'CPU s/utt':>11}")
    for voice in SYNTHETIC_VOICES:
        cases = [(phrase, telephone(*synthesize_line(phrase, voice))) for phrase in phrases]
        for name, stt in engines.items():
            errors = words = same_rule = 0
            cpu = []
            for phrase, pcm in cases:
                text, cpu_s, _ = await recognise(stt, pcm)
                cpu.append(cpu_s)
                errors += word_errors(normalise(phrase), normalise(text))
                words += len(normalise(phrase))
                same_rule += llm.respond(text) == llm.respond(phrase)
            print(f"{name:<22}{voice:<15}{100 * errors / words:>7.1f}{f'{same_rule}/{len(cases)}':>11}"
                  f"{statistics.mean(cpu):>11.2f}")


if __name__ == "__main__":
    asyncio.run(main())
