"""Does the caller *sound* finished? Smart Turn v3, an audio end-of-turn model, on the last 8 s of speech.

Smart Turn v3.2 (BSD-2, Daily) is a Whisper-encoder classifier: 8 s of 16 kHz audio as Whisper's 80-band
log-mel spectrogram in, the probability that the speaker has finished out. Its ONNX file (8.7 MB, CPU
build) ships inside the `pipecat-ai` wheel, which Switchboard installs only for that file: nothing of
pipecat is imported. The features are computed here with numpy (Whisper's recipe: a 25 ms periodic Hann
window every 10 ms, power spectrum, Slaney mel filters, log10, floor at 8 decades below the peak, scaled
to about [-1, 1]), so neither torch nor transformers is needed.

One `SmartTurn` serves every call in a process (an onnxruntime session is safe to run from several
threads); `probability` takes ≈ 60-80 ms of one core here (2 shared vCPUs; Daily quote ≈ 12 ms on a
fast CPU) and is run off the event loop by the caller.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from switchboard.audio.resample import resample

__all__ = ["MODEL_RATE", "SmartTurn", "SmartTurnUnavailable", "finished_or_none", "log_mel", "model_path"]

log = logging.getLogger("switchboard.smart_turn")

MODEL_RATE = 16000
WINDOW_S = 8  # the model reads the last 8 s; a shorter turn is padded with silence in front
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 80
DISTRIBUTION = "pipecat-ai"
WHEEL = f"{DISTRIBUTION}==1.14.0"  # deploy/install.sh installs it without its dependencies
MODEL_FILE = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"


class SmartTurnUnavailable(RuntimeError):
    """The model file or onnxruntime is missing."""


def model_path() -> Path:
    """Where the installed `pipecat-ai` wheel put the model (found from its file list, not imported)."""
    fix = f"pip install --no-deps {WHEEL} (deploy/install.sh does), or set turn.audio_model: none"
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise SmartTurnUnavailable(f"the Smart Turn v3 model ships in the {DISTRIBUTION} wheel, which is "
                                   f"not installed: {fix}") from None
    path = Path(str(dist.locate_file(MODEL_FILE)))
    if not path.is_file() or _sha256(path) != MODEL_SHA256:
        raise SmartTurnUnavailable(f"{path} is missing or not the Smart Turn v3.2 file of {WHEEL} "
                                   f"({DISTRIBUTION} {dist.version} is installed): {fix}")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


@functools.cache
def _mel_filters() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangles evenly spaced in mels over 0-8 kHz, each of unit area."""
    bins = np.linspace(0.0, MODEL_RATE / 2, N_FFT // 2 + 1)
    top = float(_hz_to_mel(np.array(MODEL_RATE / 2)))
    edges = _mel_to_hz(np.linspace(0.0, top, N_MELS + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return triangles * (2.0 / (upper - lower))


@functools.cache
def _window() -> np.ndarray:
    n = np.arange(N_FFT)
    return 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)  # periodic Hann


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Whisper's log-mel features of `WINDOW_S` seconds of 16 kHz float audio: float32 (80, 800)."""
    samples = MODEL_RATE * WINDOW_S
    x = np.zeros(samples, dtype=np.float32)
    x[: min(len(audio), samples)] = audio[:samples]
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)  # the model was trained on normalised waveforms
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _window(), axis=-1)) ** 2  # (801, 201)
    mel = np.log10(np.maximum(power[:-1] @ _mel_filters().T, 1e-10)).T  # the last frame is dropped
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)


class SmartTurn:
    """The model, loaded once. `probability(pcm, rate)`: how likely the speaker has finished."""

    def __init__(self, path: Path | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise SmartTurnUnavailable(f"onnxruntime is not installed: {exc}") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one core per inference: calls run side by side
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL  # ≈ 2× faster
        self.path = path or model_path()
        self._session = onnxruntime.InferenceSession(str(self.path), sess_options=options,
                                                     providers=["CPUExecutionProvider"])

    def probability(self, pcm: np.ndarray, rate: int) -> float:
        """`pcm`: int16 mono audio of the turn so far (speech and the pause after it) at `rate` Hz."""
        tail = pcm[-rate * WINDOW_S:]
        audio = resample(tail, rate, MODEL_RATE) if rate != MODEL_RATE else tail
        audio = audio.astype(np.float32) / 32768.0
        if len(audio) < MODEL_RATE * WINDOW_S:  # silence in front, the speech at the end
            audio = np.concatenate([np.zeros(MODEL_RATE * WINDOW_S - len(audio), np.float32), audio])
        (out,) = self._session.run(None, {"input_features": log_mel(audio)[None]})
        return float(np.asarray(out).reshape(-1)[0])


@functools.cache
def executor() -> ThreadPoolExecutor:
    """The threads the model runs on, apart from asyncio's default pool (noise checks, REST calls): at most
    half the cores, so pauses in many calls at once queue here instead of starving everything else."""
    return ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) // 2), thread_name_prefix="smart-turn")


@functools.cache
def shared() -> SmartTurn:
    """The process's one model (loading takes ≈ 0.2 s; every call shares it)."""
    return SmartTurn()


def warm() -> None:
    """Load the model and run it once (the first inference is the slowest)."""
    shared().probability(np.zeros(MODEL_RATE // 2, dtype=np.int16), MODEL_RATE)


def finished_or_none(model: SmartTurn, pcm: np.ndarray, call_id: str) -> float | None:
    """(In a worker thread.) `model`'s probability that the caller (8 kHz `pcm`) has finished; None if it
    failed (logged), and then the words alone decide."""
    try:
        return model.probability(pcm, 8000)
    except Exception:
        log.exception("call %s: the audio end-of-turn model failed", call_id)
        return None
