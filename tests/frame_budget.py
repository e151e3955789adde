"""The work the per-frame audio path does for a fixed 10-second call, counted, not timed.

One call through the real code, driven frame by frame on a simulated clock: each inbound Twilio media
message goes through the server's call loop (`CallHost.serve_stream`: the receive deadline, the carrier's
parse in telephony/twilio/wire.py, the dispatch) to `CallSession.on_audio` (segmenter, echo and noise
checks, the call's per-frame logic), the call's tick runs every 50 ms (`CallSession._tick`), and
the player (pipeline/player.py) paces 4 s of the bot's reply out through `TwilioLink` (μ-law, base64,
the media message). The bot talks first; then the caller says two lines with a pause in each. Work per
turn is left out on purpose (the turn is not started; STT, LLM and TTS are not the frame path).

The count is of every Python-level and built-in function call (`sys.setprofile` 'call' and 'c_call'
events) made by each part, so it is the same on every run and every machine. tests/test_frame_budget.py
fails when a part grows by more than `MARGIN` over the figure recorded in tests/data/frame_budget.json.

    python -m tests.frame_budget           # print the counts
    python -m tests.frame_budget --write   # record them as the new budget (after rerunning the bench)
    python -m tests.frame_budget --cpu 20  # CPU µs per frame instead (median of 20 calls), to compare trees
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import statistics
import sys
import time
import types
from collections import Counter
from collections.abc import Callable, Coroutine, Generator
from pathlib import Path
from typing import Any

import numpy as np
from starlette.websockets import WebSocketState

from switchboard.audio.g711 import ulaw_encode
from switchboard.config import parse_config
from switchboard.core.carrier import Connection, Start
from switchboard.pipeline import player as player_module
from switchboard.pipeline.call import Providers
from switchboard.server import create_app
from switchboard.telephony.twilio import TwilioLink, wire
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.speech import quiet, speech_like

BUDGET_FILE = Path(__file__).parent / "data" / "frame_budget.json"
MARGIN = 0.10  # growth over the recorded figure that fails the test
CALL_S = 10.0
FRAME_S = 0.020
TICK_S = 0.050
BOT_TALKS_S = 4.0
CALLER_LINES_AT_S = (4.5, 7.5)  # each 1.2 s of speech with a 0.2 s pause in it
T0 = 1000.0

CONFIG = """
pipelines:
  default:
    greeting: ""
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
    idle: {reminder_after_s: 0}
"""


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def monotonic(self) -> float:
        return self.now


class _Sleep:
    """What the player's pacing sleep yields to the driver: wake me at `until`."""

    def __init__(self, until: float) -> None:
        self.until = until

    def __await__(self) -> Generator[_Sleep, None, None]:
        yield self


class _Receive:
    """What the socket's receive yields to the driver, which sends the next message back in."""

    def __await__(self) -> Generator[_Receive, dict, dict]:
        message = yield self
        return message


class _Socket:
    """The call's WebSocket: each receive waits for the driver's next message; sends are counted."""

    application_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.sent = 0

    async def receive(self) -> dict:
        return await _Receive()

    async def send_text(self, text: str) -> None:
        self.sent += 1


def _caller_messages(stream_sid: str) -> list[str]:
    """The caller's 10 s as Twilio media messages: line noise, and two lines with a pause in each."""
    pcm = quiet(CALL_S, seed=3)
    for start_s in CALLER_LINES_AT_S:
        line = np.concatenate([speech_like(0.6), np.zeros(1600, np.int16), speech_like(0.6)])
        start = int(start_s * 8000)
        pcm[start : start + len(line)] = line
    data = ulaw_encode(pcm)
    messages = []
    for k in range(int(CALL_S / FRAME_S)):
        payload = base64.b64encode(data[k * 160 : (k + 1) * 160]).decode("ascii")
        messages.append(json.dumps({"event": "media", "sequenceNumber": str(k + 3), "streamSid": stream_sid,
                                    "media": {"track": "inbound", "chunk": str(k + 1),
                                              "timestamp": str(k * 20), "payload": payload}}))
    return messages


class _Counter:
    """Function calls made while `count(part, fn, ...)` runs fn, per part; or, with `timed`, the CPU
    seconds it took (no profiler then)."""

    def __init__(self, timed: bool = False) -> None:
        self.calls: Counter[str] = Counter()
        self.cpu_s: Counter[str] = Counter()
        self.timed = timed
        self._part = ""

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        # a call made by this driver is not the frame path's: only the code under test is counted
        if (event == "call" or event == "c_call") and frame.f_code.co_filename != __file__:
            self.calls[self._part] += 1

    def count(self, part: str, fn: Callable[[], Any]) -> Any:
        if self.timed:
            started = time.process_time()
            try:
                return fn()
            finally:
                self.cpu_s[part] += time.process_time() - started
        self._part = part
        sys.setprofile(self._profile)
        try:
            return fn()
        finally:
            sys.setprofile(None)


DONE = object()


def _step(coro: Coroutine[Any, Any, Any], value: Any = None) -> Any:
    """Run `coro` until it yields (what it waits for) or returns (DONE)."""
    try:
        return coro.send(value)
    except StopIteration:
        return DONE


def _run(coro: Coroutine[Any, Any, Any]) -> None:
    """Run `coro` to its end: nothing on this path may wait for the event loop."""
    waited = _step(coro)
    if waited is not DONE:
        coro.close()
        raise AssertionError(f"the frame path waited for {waited!r}: the count would depend on the loop")


def _deliver(serving: Coroutine[Any, Any, Any], raw: str) -> None:
    """Hand the server's call loop one message and run it until it waits for the next one."""
    waited = _step(serving, {"type": "websocket.receive", "text": raw})
    while waited is None:  # its yield to other connections (asyncio.sleep(0)): nothing else runs here
        waited = _step(serving)
    if not isinstance(waited, _Receive):
        raise AssertionError(f"the call loop waited for {waited!r}: the count would depend on the loop")


async def measure(timed: bool = False) -> dict[str, Any]:
    """Function calls per part over the 10-second call (see the module's docstring); `timed`: CPU
    seconds per part instead."""
    clock = _Clock()

    async def sleep(seconds: float) -> None:
        await _Sleep(clock.now + seconds)

    saved = player_module.time, player_module.asyncio
    logger = logging.getLogger("switchboard")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the same count whatever the logging set-up (a test's, the CLI's)
    player_module.time = clock  # type: ignore[assignment]
    player_module.asyncio = types.SimpleNamespace(**{**vars(asyncio), "sleep": sleep})  # type: ignore[assignment]
    try:
        return await _measure(clock, timed)
    finally:
        player_module.time, player_module.asyncio = saved
        logger.setLevel(level)


def _start_message(stream_sid: str) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "2", "streamSid": stream_sid, "start": {
        "streamSid": stream_sid, "accountSid": "ACguard", "callSid": "CAguard", "tracks": ["inbound"],
        "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                "channels": 1}}})


async def _measure(clock: _Clock, timed: bool) -> dict[str, Any]:
    config = parse_config(CONFIG)
    providers = {"default": Providers(InstantSTT(), InstantLLM(), InstantTTS())}
    host = create_app(config, providers=providers, insecure_dev=True).state.host
    socket = _Socket()

    def link(start: Start) -> TwilioLink:
        return TwilioLink(socket, start.stream_sid, start.call_sid)  # type: ignore[arg-type]

    serving = host.serve_stream(socket, Connection("twilio", wire.parse, link))
    _step(serving)  # waits for the first message
    _deliver(serving, json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    _deliver(serving, _start_message("MZguard"))
    session = host.calls["CAguard"]
    for task in (session._ticker, session.player._task):  # driven here, on the simulated clock
        task.cancel()

    async def not_per_frame(*args: Any) -> None:  # a turn's own work is not the frame path's
        return None

    session._start_turn = not_per_frame  # type: ignore[method-assign]
    session._speculate = not_per_frame  # type: ignore[method-assign]
    tone = (np.sin(np.arange(int(BOT_TALKS_S * 8000)) * 2 * np.pi * 220 / 8000) * 6000).astype(np.int16)
    for second in range(int(BOT_TALKS_S)):
        session.player.enqueue(tone[second * 8000 : (second + 1) * 8000])
        session.player.enqueue_mark()
    sender = session.player._send_loop()
    counter = _Counter(timed)
    waiting: Any = counter.count("player", lambda: _step(sender))
    next_tick = T0 + TICK_S
    for k, raw in enumerate(_caller_messages("MZguard")):
        clock.now = T0 + k * FRAME_S
        while isinstance(waiting, _Sleep) and waiting.until <= clock.now:
            waiting = counter.count("player", lambda: _step(sender))
        counter.count("inbound", lambda raw=raw: _deliver(serving, raw))
        if clock.now >= next_tick:
            counter.count("tick", lambda: _run(session._tick(clock.now)))
            next_tick += TICK_S
    sender.close()
    session.closed.set()  # the call's end is not measured: close the loop without waiting for anything
    serving.close()
    assert session.player.frames_sent == BOT_TALKS_S / FRAME_S, "the bot's reply did not all go out"
    assert socket.sent >= BOT_TALKS_S / FRAME_S / player_module.FRAMES_PER_MESSAGE, \
        "the bot's frames did not reach the socket"
    return dict(counter.cpu_s) if timed else dict(counter.calls)


def budget() -> dict[str, int]:
    return json.loads(BUDGET_FILE.read_text())["calls"]


def cpu_per_frame(repeats: int) -> dict[str, float]:
    """CPU µs per 20 ms frame of each part, the median over `repeats` calls (timed, not counted: for
    comparing two trees side by side, not for CI)."""
    runs = [asyncio.run(measure(timed=True)) for _ in range(repeats)]
    frames = CALL_S / FRAME_S
    return {part: statistics.median(run[part] for run in runs) / frames * 1e6 for part in runs[0]}


def main() -> None:
    if "--cpu" in sys.argv[1:]:
        us = cpu_per_frame(int(sys.argv[sys.argv.index("--cpu") + 1]))
        print(json.dumps({part: round(value, 1) for part, value in sorted(us.items())}))
        return
    counts = asyncio.run(measure())
    frames = int(CALL_S / FRAME_S)
    for part, calls in sorted(counts.items()):
        print(f"{part:>7}: {calls:7d} function calls, {calls / frames:6.1f} per 20 ms frame")
    print(f"  total: {sum(counts.values()):7d}")
    if "--write" in sys.argv[1:]:
        BUDGET_FILE.write_text(json.dumps({
            "about": "function calls of the frame path for a fixed 10 s call: tests/frame_budget.py",
            "calls": counts}, indent=2) + "\n")
        print(f"recorded in {BUDGET_FILE}")


if __name__ == "__main__":
    main()
