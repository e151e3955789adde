"""Benchmark: CPU cost per 20 ms frame of one call's audio path, inbound and outbound.

Inbound:  Twilio media JSON text -> json.loads -> base64 decode -> ulaw_decode -> Segmenter.push
          (plus Segmenter.tick at the 50 ms timer rate).
Outbound: 22,050 Hz TTS audio in eSpeak-sized chunks -> StreamResampler to 8 kHz (flushed at each
          sentence end) -> 20 ms frames -> ulaw_encode -> base64 -> json.dumps of the media message.

The audio is eSpeak NG speech with pauses, so the segmenter opens, endpoints and emits utterances as on
a real call. Prints the median over repetitions of µs per frame for each direction and each stage, and
the in+out total against the 100 µs budget.

`--carriers` then prints each carrier's own wire code per 20 ms frame, both ways (the carrier's parser
from its message to the call's 8 kHz frame; its link's encoder from an 8 kHz frame to what goes on the
socket), and the bytes a frame costs on the wire: Twilio and Plivo μ-law in base64 JSON, Exotel PCM16
in base64 JSON (100 ms chunks in, ≥ 200 ms out), Vonage binary L16 at 8 or 16 kHz, Telnyx PCMU or
big-endian L16 at 16 kHz in base64 JSON.

Run from the repository root:  python -m bench.audio_path [--frames 50000] [--repeats 5] [--carriers]
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


def _carrier_wires(pcm: np.ndarray) -> dict[str, tuple[Callable[[], object], Callable[[], object], int, int]]:
    """Per carrier: (parse every inbound message, encode every outbound frame, in bytes, out bytes per
    frame). `pcm` is the caller's 8 kHz audio; the same frames go out."""
    from switchboard.telephony.exotel import wire as exotel
    from switchboard.telephony.plivo import wire as plivo
    from switchboard.telephony.telnyx import wire as telnyx
    from switchboard.telephony.twilio import wire as twilio
    from switchboard.telephony.vonage import wire as vonage

    frames = [pcm[i : i + FRAME] for i in range(0, len(pcm) - FRAME + 1, FRAME)]
    wires = {}

    twilio_in = _inbound_messages(pcm)
    twilio_out = twilio.MediaMessages(STREAM_SID)
    wires["twilio  μ-law JSON"] = (lambda: [twilio.parse(m) for m in twilio_in],
                                   lambda: [twilio_out(f) for f in frames],
                                   len(twilio_in[0]), len(twilio_out(frames[0])))

    plivo_in = [json.dumps({"event": "media", "sequenceNumber": n, "streamId": STREAM_SID, "media": {
        "track": "inbound", "timestamp": str(1_765_000_000_000 + 20 * n), "chunk": n,
        "payload": base64.b64encode(ulaw_encode(f)).decode()}}) for n, f in enumerate(frames)]
    plivo_out = plivo.PlayAudioMessages(STREAM_SID)
    wires["plivo   μ-law JSON"] = (lambda: [plivo.parse(m) for m in plivo_in],
                                   lambda: [plivo_out(f) for f in frames],
                                   len(plivo_in[0]), len(plivo_out(frames[0])))

    start = json.dumps({"event": "start", "stream_sid": STREAM_SID, "start": {
        "stream_sid": STREAM_SID, "media_format": {"encoding": "audio/x-raw", "sample_rate": 8000}}})
    chunk = 5 * FRAME  # Exotel sends 100 ms chunks
    exotel_in = [json.dumps({"event": "media", "stream_sid": STREAM_SID, "media": {
        "chunk": n, "timestamp": str(100 * n), "payload": base64.b64encode(pcm[i : i + chunk].astype("<i2")
                                                                           .tobytes()).decode()}})
                 for n, i in enumerate(range(0, len(pcm) - chunk + 1, chunk))]

    def exotel_parse() -> object:
        decoder = exotel.Decoder()
        decoder.parse(start)
        return [decoder.parse(m) for m in exotel_in]

    def exotel_encode() -> object:
        chunker = exotel.Chunker(8000)
        return [exotel.media_message(STREAM_SID, p) for f in frames for p in chunker.push(f)]

    wires["exotel  PCM16 JSON"] = (exotel_parse, exotel_encode, len(exotel_in[0]) // 5,
                                   len(exotel.media_message(STREAM_SID, bytes(3200))) // 10)

    for rate in vonage.SAMPLE_RATES:
        connected = json.dumps({"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}"})
        wire_pcm = resample(pcm, RATE, rate) if rate != RATE else pcm
        step = rate // 50
        vonage_in = [wire_pcm[i : i + step].astype("<i2").tobytes()
                     for i in range(0, len(wire_pcm) - step + 1, step)]

        def vonage_parse(connected: str = connected, messages: list[bytes] = vonage_in) -> object:
            decoder = vonage.Decoder()
            decoder.parse(connected)
            return [decoder.parse(m) for m in messages]

        def vonage_encode(rate: int = rate) -> object:
            framer = vonage.Framer(rate)
            return [framer.push(f) for f in frames]

        wires[f"vonage  L16 {rate // 1000} kHz binary"] = (vonage_parse, vonage_encode, 2 * step, 2 * step)

    for codec in (telnyx.Codec("PCMU", 8000), telnyx.Codec("L16", 16000)):
        telnyx_start = json.dumps({"event": "start", "stream_id": STREAM_SID, "start": {
            "call_control_id": "v3:bench",
            "media_format": {"encoding": codec.name, "sample_rate": codec.rate}}})
        wire_pcm = resample(pcm, RATE, codec.rate) if codec.rate != RATE else pcm
        step = codec.rate // 50
        telnyx_in = [json.dumps({"event": "media", "sequence_number": str(n), "stream_id": STREAM_SID,
                                 "media": {"track": "inbound", "chunk": str(n), "timestamp": str(20 * n),
                                           "payload": base64.b64encode(codec.encode(wire_pcm[i : i + step]))
                                           .decode()}})
                     for n, i in enumerate(range(0, len(wire_pcm) - step + 1, step))]

        def telnyx_parse(start: str = telnyx_start, messages: list[str] = telnyx_in) -> object:
            decoder = telnyx.Decoder()
            decoder.parse(start)
            return [decoder.parse(m) for m in messages]

        def telnyx_encode(codec: telnyx.Codec = codec) -> object:
            encoder = telnyx.Encoder(codec)
            return [telnyx.media_message(encoder.encode(f)) for f in frames]

        out_bytes = len(telnyx.media_message(codec.encode(np.zeros(step, np.int16))))
        label = "PCMU JSON" if codec.name == "PCMU" else "L16 16 kHz JSON"
        wires[f"telnyx  {label}"] = (telnyx_parse, telnyx_encode, len(telnyx_in[0]), out_bytes)
    return wires


def _carrier_costs(pcm: np.ndarray, repeats: int) -> None:
    frames = len(pcm) // FRAME
    print(f"carrier wires, µs per 20 ms frame (median of {repeats}) and bytes per frame on the socket:")
    print(f"  {'':26s} {'in':>7s} {'out':>7s} {'in+out':>7s} {'bytes in':>9s} {'bytes out':>10s}")
    for name, (parse, encode, bytes_in, bytes_out) in _carrier_wires(pcm).items():
        parse()  # warm up
        encode()
        cost_in = _median_us_per_frame(parse, frames, repeats)
        cost_out = _median_us_per_frame(encode, frames, repeats)
        total = cost_in + cost_out
        print(f"  {name:26s} {cost_in:7.2f} {cost_out:7.2f} {total:7.2f} {bytes_in:9d} {bytes_out:10d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000, help="20 ms frames per repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--carriers", action="store_true", help="also each carrier's wire code, both ways")
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
    if args.carriers:
        _carrier_costs(_caller_audio(sentences, tts_rate, args.frames), args.repeats)


if __name__ == "__main__":
    main()
