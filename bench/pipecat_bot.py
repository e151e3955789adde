"""The Pipecat 1.14 side of ``bench.pipecat``: a Twilio Media Streams bot built the way Pipecat's own
telephony examples build one, run in Pipecat's virtual environment (never in Switchboard's; nothing of
Switchboard is imported here).

FastAPI's WebSocket endpoint reads Twilio's `connected`/`start` (``parse_telephony_websocket``), then a
``FastAPIWebsocketTransport`` with ``TwilioFrameSerializer`` (8 kHz μ-law ↔ the pipeline's 16 kHz in /
24 kHz out) feeds: the transport's input → ``OpenAISTTService`` (whisper-1, segmented by the VAD) → the
user aggregator (``SileroVADAnalyzer`` and Pipecat's default turn strategies: VAD start, Smart Turn v3
stop — ``LocalSmartTurnAnalyzerV3``, the ONNX model shipped in the wheel) → ``OpenAILLMService`` →
``OpenAITTSService`` (pcm, 24 kHz) → the transport's output → the assistant aggregator. The three
services point at the bench's fakes of OpenAI's API (``--stt/--llm/--tts`` base URLs). Every other
setting is Pipecat's default; interruptions are on (its default), so speech over the bot sends Twilio a
`clear`. The bot greets the caller with a fixed line when the socket opens.

    .bench-venvs/pipecat/bin/python bench/pipecat_bot.py --port 8765 --stt URL --llm URL --tts URL
"""

from __future__ import annotations

import argparse
import sys

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies, default_user_turn_start_strategies

GREETING = "Luigi's, hello."
SYSTEM_PROMPT = "You answer the phone."
KEY = "sk-fake"  # the fakes take any key

# one Smart Turn v3 session for the process (as Pipecat's examples share one analyzer per bot process)
SMART_TURN = LocalSmartTurnAnalyzerV3()


def make_app(urls: dict[str, str]) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/media-stream")
    async def media_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        _, call_data = await parse_telephony_websocket(websocket)
        await run_bot(websocket, call_data["stream_id"], call_data["call_id"], urls)

    return app


async def run_bot(websocket: WebSocket, stream_sid: str, call_sid: str, urls: dict[str, str]) -> None:
    serializer = TwilioFrameSerializer(stream_sid=stream_sid, call_sid=call_sid,
                                       params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
    transport = FastAPIWebsocketTransport(websocket=websocket, params=FastAPIWebsocketParams(
        audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False, serializer=serializer))
    stt = OpenAISTTService(api_key=KEY, base_url=urls["stt"],
                           settings=OpenAISTTService.Settings(model="whisper-1"))
    llm = OpenAILLMService(api_key=KEY, base_url=urls["llm"],
                           settings=OpenAILLMService.Settings(model="gpt-4o-mini"))
    tts = OpenAITTSService(api_key=KEY, base_url=urls["tts"],
                           settings=OpenAITTSService.Settings(model="tts-1", voice="alloy"))
    context = LLMContext([{"role": "system", "content": SYSTEM_PROMPT}])
    strategies = UserTurnStrategies(
        start=default_user_turn_start_strategies(),
        stop=[TurnAnalyzerUserTurnStopStrategy(turn_analyzer=SMART_TURN)])
    user, assistant = LLMContextAggregatorPair(context, user_params=LLMUserAggregatorParams(
        vad_analyzer=SileroVADAnalyzer(), user_turn_strategies=strategies))
    pipeline = Pipeline([transport.input(), stt, user, llm, tts, transport.output(), assistant])
    task = PipelineTask(pipeline, params=PipelineParams(audio_in_sample_rate=16000,
                                                        audio_out_sample_rate=24000))

    @transport.event_handler("on_client_connected")
    async def on_connected(_transport, _client) -> None:
        await task.queue_frames([TTSSpeakFrame(GREETING)])

    @transport.event_handler("on_client_disconnected")
    async def on_disconnected(_transport, _client) -> None:
        await task.cancel()

    await PipelineRunner(handle_sigint=False).run(task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    for stage in ("stt", "llm", "tts"):
        parser.add_argument(f"--{stage}", required=True, help=f"the {stage} fake's base URL (…/v1)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    urls = {"stt": args.stt, "llm": args.llm, "tts": args.tts}
    uvicorn.run(make_app(urls), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
