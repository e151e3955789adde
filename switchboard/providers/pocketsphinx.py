"""PocketSphinx speech to text, offline, with the US English model its wheel ships.

Modes: "grammar" recognises exactly one of the expected phrases per utterance (a JSGF grammar built
from them: exact and fast on telephone audio), "keyphrase" spots those phrases in any speech, "lm"
uses the general language model (anything, but slow and often wrong), "auto" is grammar when there are
phrases, else lm. See bench/stt_accuracy.py for the figures behind these choices.

Decoders cost 28-91 MB and 0.1-0.8 s to build, so each `PocketsphinxSTT` keeps a small pool, built on
first need (or by `warm()`), shared by every call that uses it. Each decoder lives in a process of its
own: PocketSphinx's search holds the GIL, so in a thread one caller's 20 s of noise froze every call for
as long (bench/noise.py). An utterance that takes longer than `time_budget_s` has its process killed (and
rebuilt on next need) and fails as a timeout.
Every utterance is decoded whole (`full_utt=True`), so its cepstral mean is its own: a cold decoder
recognises the first utterance as well as a warm one (measured: WER 2.0% with or without a seeded mean;
fed in 20 ms pieces instead, a cold decoder scored 13%, 3.3% once seeded).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Generic, Literal, TypeVar

import numpy as np
import pocketsphinx
from pocketsphinx import Decoder
from pydantic import Field

from switchboard.core.errors import ProviderError
from switchboard.core.messages import Transcript
from switchboard.core.settings import ProviderConfig, Timeouts
from switchboard.core.words import words
from switchboard.providers.registry import Plugin, register

__all__ = [
    "SAMPLE_RATE", "DecoderPool", "DecoderProcess", "PocketsphinxSTT", "build_decoder", "build_jsgf",
    "build_keyphrases",
    "dictionary_words", "normalize_phrases", "prepare_audio",
]

log = logging.getLogger("switchboard.pocketsphinx")

SAMPLE_RATE = 16000  # the bundled model's rate; an 8 kHz decoder fails with it
Mode = Literal["grammar", "keyphrase", "lm"]
D = TypeVar("D")  # what a DecoderPool holds
_SEARCH = "phrases"
# Keyphrase spotting threshold, per word of the phrase: longer phrases need a lower one.
_KWS_THRESHOLD_EXPONENT_PER_WORD = 10
# Cepstral mean of telephone-band speech (eSpeak voices through 8 kHz μ-law, upsampled). Whole-utterance
# decoding hardly needs it, but setting it before every utterance keeps one call's line from carrying
# over to the next call on a pooled decoder, and keeps a streaming change from going cold.
_TELEPHONE_CMN = "60.8,16.0,-16.0,27.3,-14.4,-2.8,8.0,-27.7,2.3,-6.5,-3.2,5.9,-12.2"

# --- its section of pipeline.yaml ---------------------------------------------------------------------


class PocketsphinxSTTConfig(ProviderConfig):
    """The embedded offline recognizer."""

    provider: Literal["pocketsphinx"]
    mode: Literal["auto", "grammar", "keyphrase", "lm"] = "auto"
    phrases: list[str] = Field(default_factory=list)
    pool_size: int = Field(2, ge=1, le=32)
    time_budget_s: float = Field(10, gt=0, le=300)  # an utterance taking longer is stopped: a timeout

    def summary(self) -> str:
        return self.mode


# --- phrases and grammars -----------------------------------------------------------------------------


@functools.cache
def dictionary_words() -> frozenset[str]:
    """Every word of the bundled pronunciation dictionary (cmudict-en-us)."""
    path = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    with path.open(encoding="utf-8") as lines:
        return frozenset(line.split(" ", 1)[0].split("(", 1)[0] for line in lines if line.strip())


def normalize_phrases(phrases: Sequence[str], known: Callable[[str], bool] | None = None) -> list[str]:
    """Lowercase words only, without duplicates; words the dictionary lacks are left out (and logged)."""
    known = known or dictionary_words().__contains__
    result: dict[str, None] = {}
    missing: dict[str, None] = {}
    for phrase in phrases:
        said = words(phrase)
        missing.update((word, None) for word in said if not known(word))
        if kept := " ".join(word for word in said if known(word)):
            result[kept] = None
    if missing:
        log.warning("pocketsphinx: not in the dictionary, left out of the phrases: %s "
                    "(spell numbers as words; use common spellings)", ", ".join(missing))
    return list(result)


def build_jsgf(phrases: Sequence[str]) -> str:
    """A JSGF grammar accepting exactly one of `phrases` (normalised words).

    One phrase, not a sequence (`<phrase>+`): on eSpeak callers through the telephone path a sequence
    grammar tacked short phrases or the first word of another onto the ends of most utterances and took
    ten times the CPU (WER 9% vs 2%, 285 vs 25 ms per utterance, 37 phrases; bench/stt_accuracy.py)."""
    if not phrases:
        raise ValueError("a grammar needs at least one phrase")
    alternatives = " | ".join(f"({phrase})" for phrase in phrases)
    return f"#JSGF V1.0;\ngrammar switchboard;\npublic <utterance> = {alternatives};\n"


def build_keyphrases(phrases: Sequence[str]) -> str:
    """A keyphrase list for `Decoder.add_kws`: one phrase per line with its detection threshold."""
    if not phrases:
        raise ValueError("keyphrase spotting needs at least one phrase")
    return "".join(f"{p} /1e-{_KWS_THRESHOLD_EXPONENT_PER_WORD * len(p.split())}/\n" for p in phrases)


# --- audio ----------------------------------------------------------------------------------------------

_FRAME = SAMPLE_RATE // 100  # 10 ms
_SILENCE_FLOOR = 32768 * 10 ** (-50 / 20)  # loudest 10 ms quieter than -50 dBFS RMS: nothing was said
_TRIM_BELOW_PEAK = 10 ** (-35 / 20)
_TRIM_MARGIN_FRAMES = 10
_COMFORT_NOISE_RMS = 32768 * 10 ** (-60 / 20)


def prepare_audio(pcm: np.ndarray) -> np.ndarray | None:
    """The utterance as the decoder should get it, or None when it holds no speech.

    Noise at -60 dBFS fills digital silence, whose log energy would otherwise skew the utterance's
    cepstral mean and cut off its last word (WER 7% -> 2%). Quiet lead-in and tail are trimmed to
    100 ms around the speech first: the same accuracy for 40% less CPU. Deterministic."""
    frames = len(pcm) // _FRAME
    if frames == 0:
        return None
    power = np.square(pcm[: frames * _FRAME].astype(np.float64)).reshape(frames, _FRAME)
    rms = np.sqrt(power.mean(axis=1))
    peak = float(rms.max())
    if peak < _SILENCE_FLOOR:
        return None
    loud = np.flatnonzero(rms >= peak * _TRIM_BELOW_PEAK)
    start = max(0, int(loud[0]) - _TRIM_MARGIN_FRAMES) * _FRAME
    end = min(frames, int(loud[-1]) + 1 + _TRIM_MARGIN_FRAMES) * _FRAME
    speech = pcm[start:end].astype(np.float64)
    speech += np.random.default_rng(0).normal(0.0, _COMFORT_NOISE_RMS, len(speech))
    return np.clip(np.round(speech), -32768, 32767).astype(np.int16)


# --- decoders -------------------------------------------------------------------------------------------


def build_decoder(mode: Mode, phrases: Sequence[str]) -> Decoder:
    """A decoder for `mode`; grammar and keyphrase modes skip loading the language model (91 -> 28 MB)."""
    if mode == "lm":
        return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    # loglevel FATAL: an utterance that doesn't reach the grammar's end logs an ERROR each time, yet its
    # partial hypothesis is still the best guess we have.
    decoder = Decoder(samprate=SAMPLE_RATE, lm=None, loglevel="FATAL")
    if mode == "grammar":
        decoder.add_jsgf_string(_SEARCH, build_jsgf(phrases))
    else:
        fd, path = tempfile.mkstemp(suffix=".kws", text=True)  # add_kws reads only files
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(build_keyphrases(phrases))
            decoder.add_kws(_SEARCH, path)
        finally:
            os.unlink(path)
    decoder.activate_search(_SEARCH)
    return decoder


class DecoderProcess:
    """One decoder in a process of its own, so that its search never holds this process's GIL.

    `recognize` blocks (call it from a thread); `kill` stops a recognition that overran its budget, after
    which this object is spent (the pool drops it and builds another)."""

    def __init__(self, mode: Mode, phrases: Sequence[str]) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process running threads and a loop
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, mode, tuple(phrases)),
                                        name="pocketsphinx-decoder", daemon=True)
        self._process.start()
        child.close()
        self._answer()  # the decoder is built, or why not

    def recognize(self, pcm: np.ndarray) -> str:
        self._connection.send_bytes(pcm.astype(np.int16, copy=False).tobytes())
        return self._answer()

    def kill(self) -> None:
        self._process.kill()
        self._connection.close()

    def _answer(self) -> str:
        try:
            ok, text = self._connection.recv()
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"the decoder process ended (exit code {self._process.exitcode})") from exc
        if not ok:
            raise RuntimeError(text)
        return text


def _serve(connection: Connection, mode: Mode, phrases: tuple[str, ...]) -> None:
    """The decoder process: build the decoder, then recognise each utterance sent until the pipe closes."""
    try:
        decoder = build_decoder(mode, phrases)
    except Exception as exc:
        connection.send((False, f"building a decoder failed: {exc}"))
        return
    connection.send((True, ""))
    while True:
        try:
            audio = connection.recv_bytes()
        except (EOFError, OSError):
            return  # the server closed the pipe or died
        try:
            connection.send((True, _recognize(decoder, np.frombuffer(audio, np.int16), mode)))
        except Exception as exc:
            connection.send((False, f"{type(exc).__name__}: {exc}"))


class DecoderPool(Generic[D]):
    """Up to `size` decoders, built when every built one is busy; callers wait for a free one.

    A LIFO queue holds idle decoders above `None` tokens (slots not built yet), so a decoder is built
    only when all others are in use. The queue is recreated if the event loop changes: the pool is
    cached per process and may outlive a loop (tests run one loop per test)."""

    def __init__(self, build: Callable[[], D], size: int) -> None:
        self.size = size
        self._build = build
        self._items: asyncio.LifoQueue[D | None] = asyncio.LifoQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        for _ in range(size):
            self._items.put_nowait(None)

    async def acquire(self) -> D:
        item = await self._queue().get()
        if item is not None:
            return item
        try:
            return await asyncio.to_thread(self._build)
        except BaseException:
            self._queue().put_nowait(None)  # the slot stays free for the next try
            raise

    def release(self, decoder: D, broken: bool = False) -> None:
        """Give `decoder` back; a broken one is dropped and its slot rebuilt on next need."""
        self._queue().put_nowait(None if broken else decoder)

    async def warm(self) -> None:
        """Build every decoder now (at start-up) rather than during the first calls."""
        held: list[D] = []
        try:
            for _ in range(self.size):
                held.append(await self.acquire())
        finally:
            for decoder in held:
                self.release(decoder)

    def _queue(self) -> asyncio.LifoQueue[D | None]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            old, self._items, self._loop = self._items, asyncio.LifoQueue(), loop
            items = [old.get_nowait() for _ in range(old.qsize())]
            for item in reversed(items):
                self._items.put_nowait(item)
        return self._items


# --- the STT interface ----------------------------------------------------------------------------------


class PocketsphinxSTT:
    """STT over a `DecoderPool`. `vocabulary_phrases` (e.g. the scripted rules') join config.phrases."""

    vendor = "pocketsphinx"
    timeouts: Timeouts | None = None  # embedded: no deadlines
    sample_rate = SAMPLE_RATE
    wideband = True  # a 16 kHz model: 39.9 % WER (lm) on a browser call's 16 kHz, 56.9 % at 8 kHz upsampled

    def __init__(self, config: PocketsphinxSTTConfig, vocabulary_phrases: Sequence[str] = ()) -> None:
        self.phrases = normalize_phrases([*vocabulary_phrases, *config.phrases])
        mode = config.mode if config.mode != "auto" else ("grammar" if self.phrases else "lm")
        if mode != "lm" and not self.phrases:
            raise ValueError(f"pocketsphinx mode {mode!r} needs phrases (stt.phrases or the rules' phrases)")
        self.mode: Mode = mode
        self.model = f"en-us/{mode}"
        self.time_budget_s = config.time_budget_s
        build = functools.partial(DecoderProcess, mode, tuple(self.phrases))
        self.pool: DecoderPool[DecoderProcess] = DecoderPool(build, config.pool_size)

    async def warm(self) -> None:
        """Build the whole decoder pool now; otherwise decoders are built when first needed."""
        try:
            await self.pool.warm()
        except Exception as exc:
            raise ProviderError("pocketsphinx", "internal", f"building a decoder failed: {exc}") from exc

    async def transcribe(self, pcm: np.ndarray) -> Transcript:
        """Recognise one whole utterance (int16 mono, 16 kHz). No speech gives Transcript(text="")."""
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise ProviderError("pocketsphinx", "bad_request", f"want int16 mono: {pcm.dtype} {pcm.shape}")
        try:
            decoder = await self.pool.acquire()
        except Exception as exc:
            raise ProviderError("pocketsphinx", "internal", f"building a decoder failed: {exc}") from exc
        job = asyncio.ensure_future(asyncio.to_thread(decoder.recognize, pcm))
        # The decoder goes back only when its process has answered, even if this turn is cancelled meanwhile.
        def give_back(done: asyncio.Future[str]) -> None:
            broken = done.cancelled() or done.exception() is not None
            if broken:
                decoder.kill()
            self.pool.release(decoder, broken)

        job.add_done_callback(give_back)
        try:
            text = await asyncio.wait_for(asyncio.shield(job), self.time_budget_s)
        except TimeoutError:
            decoder.kill()  # its thread wakes up to an error: the pool drops it and builds another
            raise ProviderError("pocketsphinx", "timeout", f"recognising {len(pcm) / SAMPLE_RATE:.1f} s of "
                                f"audio took longer than {self.time_budget_s:g} s: stopped") from None
        except Exception as exc:
            raise ProviderError("pocketsphinx", "internal", f"recognition failed: {exc}") from exc
        return Transcript(text)


def _recognize(decoder: Decoder, pcm: np.ndarray, mode: Mode) -> str:
    audio = prepare_audio(pcm)
    if audio is None:
        return ""
    decoder.set_cmn(_TELEPHONE_CMN)
    decoder.start_utt()
    decoder.process_raw(audio.tobytes(), full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    if hypothesis is None:
        return ""
    if mode == "keyphrase":
        return _longest_spotted(hypothesis.hypstr)
    return " ".join(hypothesis.hypstr.split())


def _longest_spotted(hypstr: str) -> str:
    """The longest of the keyphrases spotted: short ones ("bye") also fire inside longer speech.

    The decoder lists detections in order, each followed by a space, separated by a second space."""
    spotted = [phrase.strip() for phrase in hypstr.split("  ")]
    return max(spotted, key=lambda phrase: len(phrase.split()), default="")


register(Plugin("stt", "pocketsphinx", PocketsphinxSTTConfig, PocketsphinxSTT, hears_phrases=True))
