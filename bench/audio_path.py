"""Benchmark: CPU cost per 20 ms frame of one call's audio path, inbound and outbound.

Inbound:  Twilio media JSON text -> json.loads -> base64 decode -> ulaw_decode -> Segmenter.push
          (plus Segmenter.tick at the 50 ms timer rate).
Outbound: 22,050 Hz TTS audio in eSpeak-sized chunks -> StreamResampler to 8 kHz (flushed at each
          sentence end) -> 20 ms frames -> ulaw_encode -> base64 -> json.dumps of the media message.

The audio is eSpeak NG speech with pauses, so the segmenter opens, endpoints and emits utterances as on
a real call. Prints the median over repetitions of µs per frame for each direction and each stage, and
the in+out total against the 100 µs budget.

Run from the repository root:  python -m bench.audio_path [--frames 50000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.resample import StreamResampler, resample
from switchboard.audio.segmenter import Segmenter, Utterance
from tests.speech import espeak, quiet

RATE = 8000
FRAME = 160
TTS_CHUNK = 1324  # samples per eSpeak NG synth callback at 22,050 Hz
BUDGET_US = 100.0
TtsChunk = tuple[np.ndarray, bool]  # (samples, last chunk of its sentence)
STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
SENTENCES = [
    "Hello, I would like to book a table for two tomorrow evening.",
    "Around eight o'clock, if you have anything free.",
    "Yes, that works. The name is Patel, P A T E L.",
    "Could we sit by the window, please?",
    "No, that's everything. Thank you very much, goodbye.",
]


def _sentences() -> tuple[list[np.ndarray], int]:
    audio = [espeak(text)[0] for text in SENTENCES]
    return audio, espeak(".")[1]


def _caller_audio(sentences: list[np.ndarray], tts_rate: int, n_frames: int) -> np.ndarray:
    """Caller side: sentences with 0.8–1.6 s pauses of line noise, repeated to n_frames frames."""
    parts: list[np.ndarray] = []
    total, i = 0, 0
    while total < n_frames * FRAME:
        speech = resample(sentences[i % len(sentences)], tts_rate, RATE)
        pause = quiet(0.8 + 0.2 * (i % 5), seed=i)
        parts += [speech, pause]
        total += len(speech) + len(pause)
        i += 1
    return np.concatenate(parts)[: n_frames * FRAME]


def _inbound_messages(pcm: np.ndarray) -> list[str]:
    payload = ulaw_encode(pcm)
    messages = []
    for n in range(len(pcm) // FRAME):
        message = {
            "event": "media",
            "streamSid": STREAM_SID,
            "sequenceNumber": str(n + 2),
            "media": {
                "track": "inbound",
                "chunk": str(n + 1),
                "timestamp": str(n * 20),
                "payload": base64.b64encode(payload[n * FRAME : (n + 1) * FRAME]).decode(),
            },
        }
        messages.append(json.dumps(message))
    return messages


def _run_inbound(messages: list[str]) -> int:
    segmenter = Segmenter()
    utterances = 0
    for n, text in enumerate(messages):
        now = n * 0.02  # arrival in real time; the timer below ticks every 50 ms
        message = json.loads(text)
        pcm = ulaw_decode(base64.b64decode(message["media"]["payload"]))
        events = segmenter.push(pcm, now)
        utterances += sum(isinstance(event, Utterance) for event in events)
        if n % 5 in (0, 2):
            segmenter.tick(now)
    return utterances


def _tts_chunks(sentences: list[np.ndarray], n_frames: int, tts_rate: int) -> Iterator[TtsChunk]:
    """Sentences cut into eSpeak-sized chunks, enough to produce about n_frames of 8 kHz audio."""
    needed = n_frames * FRAME * tts_rate // RATE
    produced, i = 0, 0
    while produced < needed:
        sentence = sentences[i % len(sentences)]
        for start in range(0, len(sentence), TTS_CHUNK):
            yield sentence[start : start + TTS_CHUNK], start + TTS_CHUNK >= len(sentence)
        produced += len(sentence)
        i += 1


def _media_message(frame: np.ndarray) -> str:
    payload = base64.b64encode(ulaw_encode(frame)).decode()
    return json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {"payload": payload}})


def _run_outbound(chunks: list[TtsChunk], tts_rate: int) -> int:
    resampler = StreamResampler(tts_rate, RATE)
    pending = np.zeros(0, dtype=np.int16)
    sent = 0
    for chunk, last in chunks:
        out = resampler.process(chunk)
        if last:
            out = np.concatenate([out, resampler.flush()])
        pending = np.concatenate([pending, out])
        usable = len(pending) - len(pending) % FRAME
        for start in range(0, usable, FRAME):
            _media_message(pending[start : start + FRAME])
            sent += 1
        pending = pending[usable:]
    return sent


def _median_us_per_frame(run: Callable[[], object], frames: int, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        run()
        timings.append((time.perf_counter_ns() - start) / 1000 / frames)
    return statistics.median(timings)


def _stage_costs(messages: list[str], chunks: list[TtsChunk], tts_rate: int) -> dict[str, float]:
    """Each stage alone over the same data, µs per 20 ms frame (medians of 3)."""
    parsed = [json.loads(text) for text in messages]
    payloads = [base64.b64decode(message["media"]["payload"]) for message in parsed]
    pcm = [ulaw_decode(payload) for payload in payloads]
    out_frames = pcm  # any 20 ms frames of speech will do for the encoders
    n_out = sum(len(c) for c, _ in chunks) * RATE // tts_rate // FRAME

    def segment() -> int:
        segmenter = Segmenter()
        return sum(len(segmenter.push(frame, i * 0.02)) for i, frame in enumerate(pcm))

    def resample_all() -> int:
        resampler = StreamResampler(tts_rate, RATE)
        return sum(len(resampler.process(c)) + (len(resampler.flush()) if last else 0) for c, last in chunks)

    stages: dict[str, tuple[Callable[[], object], int]] = {
        "in: json.loads": (lambda: [json.loads(text) for text in messages], len(messages)),
        "in: base64 decode": (lambda: [base64.b64decode(m["media"]["payload"]) for m in parsed], len(parsed)),
        "in: ulaw_decode": (lambda: [ulaw_decode(payload) for payload in payloads], len(payloads)),
        "in: segmenter.push": (segment, len(pcm)),
        "out: StreamResampler 22.05k->8k": (resample_all, n_out),
        "out: ulaw_encode": (lambda: [ulaw_encode(frame) for frame in out_frames], len(out_frames)),
        "out: ulaw+base64+json.dumps": (lambda: [_media_message(f) for f in out_frames], len(out_frames)),
    }
    return {name: _median_us_per_frame(run, n, 3) for name, (run, n) in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000, help="20 ms frames per repetition")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    sentences, tts_rate = _sentences()
    messages = _inbound_messages(_caller_audio(sentences, tts_rate, args.frames))
    chunks = list(_tts_chunks(sentences, args.frames, tts_rate))

    utterances = _run_inbound(messages)  # also warms up
    out_frames = _run_outbound(chunks, tts_rate)
    inbound_us = _median_us_per_frame(lambda: _run_inbound(messages), len(messages), args.repeats)
    outbound_us = _median_us_per_frame(lambda: _run_outbound(chunks, tts_rate), out_frames, args.repeats)

    print(
        f"{len(messages)} inbound frames ({utterances} utterances), {out_frames} outbound frames, "
        f"median of {args.repeats} repetitions"
    )
    print(f"inbound   {inbound_us:7.2f} µs/frame")
    print(f"outbound  {outbound_us:7.2f} µs/frame")
    total = inbound_us + outbound_us
    verdict = "within" if total <= BUDGET_US else "OVER"
    print(f"in+out    {total:7.2f} µs/frame  ({verdict} the {BUDGET_US:.0f} µs budget)")
    print("stages alone:")
    for name, cost in _stage_costs(messages, chunks, tts_rate).items():
        print(f"  {name:34s} {cost:6.2f} µs/frame")


if __name__ == "__main__":
    main()
