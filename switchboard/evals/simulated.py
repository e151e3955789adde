"""The LLM caller: a scenario without a script, played by an LLM that only hears the bot.

After each bot reply, the audio the caller heard (cut where a clear cut it) goes through the caller-side
recogniser (`caller.stt`, default the embedded Moonshine); the LLM, prompted with the persona, goal and
facts, answers with the caller's next line, which is spoken in the scenario's voice (or `caller.tts`)
into the line. It never sees the bot's text. It ends the call by answering `[hang up]`, or after
`max_caller_turns` lines (then it waits for the bot to hang up, as a scripted caller does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from contextlib import aclosing
from typing import Any

import numpy as np
from pydantic import TypeAdapter

import switchboard.caller as caller
from switchboard.audio.resample import resample
from switchboard.config.schema import STTConfig
from switchboard.core.messages import Message, TextDelta
from switchboard.evals.scenarios import CallerLLM, Scenario
from switchboard.providers import registry

log = logging.getLogger("switchboard.evals")
HANG_UP = "[hang up]"
LINE_TIMEOUT_S = 30.0
_STAGE_DIRECTIONS = re.compile(r"\*[^*]*\*|\([^)]*\)")


def caller_prompt(scenario: Scenario) -> str:
    facts = json.dumps(scenario.facts) if scenario.facts else "(none)"
    return (
        "You are a person phoning a business; a voice bot answers. Play this caller.\n"
        f"Who you are and how you behave: {scenario.persona or 'an ordinary caller'}\n"
        f"What you are calling for: {scenario.goal or 'ask what the business can do for you'}\n"
        f"What you know (say it only when it fits, as this caller would): {facts}\n"
        "The bot's words reach you through a speech recogniser and may contain mistakes. Answer with exactly "
        "what you say next, in one or two short spoken sentences: no stage directions, no quotes. When your "
        f"goal is met, say goodbye. When the call is over, answer only {HANG_UP}.")


class CallerMind:
    """The LLM side of the caller: the conversation as it heard it, and its next line."""

    def __init__(self, llm: Any, scenario: Scenario) -> None:
        self.llm, self.scenario = llm, scenario
        self.messages = [Message("system", caller_prompt(scenario))]

    async def next_line(self, heard: str) -> str | None:
        """The caller's answer to what it heard; None to hang up."""
        self.messages.append(Message("user", heard or "(silence)"))
        parts: list[str] = []
        async with aclosing(self.llm.stream(self.messages, [])) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
        text = " ".join(_STAGE_DIRECTIONS.sub(" ", "".join(parts)).split()).strip().strip('"')
        self.messages.append(Message("assistant", text))
        if not text or HANG_UP in text.lower():
            return None
        return text


class Ears:
    """The caller-side recogniser: the bot's audio as the caller heard it, to text."""

    def __init__(self, settings: CallerLLM) -> None:
        config = settings.stt or TypeAdapter(STTConfig).validate_python({"provider": "moonshine"})
        self.stt = registry.build("stt", config, shared=False)

    async def hear(self, pcm: np.ndarray) -> str:
        if not np.any(pcm):
            return ""
        rate = self.stt.sample_rate
        audio = resample(pcm, caller.RATE, rate) if rate != caller.RATE else pcm
        return (await self.stt.transcribe(audio)).text.strip()


class Voice:
    """The caller's voice: the scenario's embedded voice, or `caller.tts`."""

    def __init__(self, settings: CallerLLM, scenario: Scenario) -> None:
        self.speech = scenario.speech
        self.tts = registry.build("tts", settings.tts, shared=False) if settings.tts else None

    async def render(self, line: caller.CallerLine) -> np.ndarray:
        if self.tts is None:
            return await asyncio.to_thread(caller.prepare_audio, line, self.speech.voice, self.speech.rate)
        chunks = []
        async with aclosing(self.tts.stream(line.text or "")) as stream:
            async for chunk in stream:
                chunks.append(chunk)
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        rate = self.tts.sample_rate
        return resample(pcm, rate, caller.RATE) if rate != caller.RATE else pcm


async def simulated_call(url: str, scenario: Scenario, settings: CallerLLM, *, speed: float,
                         custom_parameters: dict[str, str], hangup_timeout_s: float,
                         reply_timeout_s: float = 30.0) -> caller.CallResult:
    """Place one call played by the LLM caller; what the caller measured, its lines included."""
    mind = CallerMind(registry.build("llm", settings.llm, shared=False), scenario)
    ears, voice = Ears(settings), Voice(settings, scenario)

    async def converse(call: Any) -> None:
        since = 0.0
        for _ in range(scenario.max_caller_turns):
            heard = await ears.hear(await call.wait_for_reply(since))
            text = await asyncio.wait_for(mind.next_line(heard), LINE_TIMEOUT_S)
            if text is None:
                await call.hang_up(since, wait=False)
                return
            line = caller.CallerLine(text=text)
            since = await call.speak_next(line, await voice.render(line), since)
        await call.hang_up(since)

    return await caller.run_call(url, [], speed=speed, custom_parameters=custom_parameters, script=converse,
                                 on_event=lambda _event: None, hangup_timeout_s=hangup_timeout_s,
                                 reply_timeout_s=reply_timeout_s,
                                 noise_db=scenario.speech.noise_db)
