"""The call store on a live call: `switchboard serve`'s store records the call and its turns, and
`switchboard report` reads them back."""

import asyncio
import json

from switchboard.caller import CallerLine, run_call
from switchboard.cli import main
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from switchboard.store import CallStore
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

CONFIG = """
pipelines:
  default:
    greeting: "Hi there."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


async def test_a_call_is_recorded_turn_by_turn_and_reported(tmp_path, speech_wav, capsys):
    db = str(tmp_path / "calls.db")
    providers = Providers(InstantSTT("what time is it"), InstantLLM("It is noon."), InstantTTS())
    app = create_app(parse_config(CONFIG), providers={"default": providers}, store_url=db)
    async with running(app) as port:
        result = await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=speech_wav)],
                                hangup_timeout_s=2, on_event=lambda event: None)
        await asyncio.wait_for(app.state.host.wait_idle(), 5)  # the call is closed; the writer drains
        # what it holds at shutdown, when `running` ends
    store = CallStore(db)
    await store.open()
    calls, turns = await store.query_calls(), await store.query_turns()
    await store.close()
    assert [c["id"] for c in calls] == [result.call_sid]
    assert calls[0]["pipeline"] == "default" and calls[0]["ended_at"] is not None
    reply = next(t for t in turns if t["kind"] == "reply")
    assert reply["transcript"] == "what time is it" and reply["reply_heard"] == "It is noon."
    assert reply["llm_vendor"] == "instant/echo" and reply["voice_to_voice_ms"] > 0

    assert await asyncio.to_thread(main, ["report", "--db", db, "--json"]) == 0  # the CLI runs its own loop
    report = json.loads(capsys.readouterr().out)
    assert "instant/echo" in json.dumps(report)
