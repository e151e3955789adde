"""A whole call on the bundled offline pipeline: caller (Piper, pitched up) → Moonshine → script → Piper.

The caller's lines are synthesised in the caller's voice, sent as real-time μ-law frames over a real
WebSocket, recognised by Moonshine closely enough to pick the scripted rule (one line is free speech no
rule lists); the bot's audio comes back at the right rate; a barge-in clears and cancels; goodbye hangs up.
"""


import dataclasses
import statistics

import pytest

from switchboard.caller import CallerLine
from switchboard.cli import DEMO_LINES, demo_went_as_scripted, latency_table
from switchboard.config import default_config_path, load_config
from switchboard.demo import booking_service
from switchboard.providers.piper import voice
from tests import calls


@pytest.fixture(scope="module")
def config():
    return load_config(default_config_path())


async def place_call(config, lines, **kwargs):
    return await calls.place_call(config, lines, hangup_timeout_s=4, **kwargs)


def rule_reply(config, text: str) -> str:
    """The reply the bundled script gives to `text` (the rules are tried in order)."""
    import re

    for rule in config.pipeline().llm.rules:
        if re.search(rule.match, text, re.IGNORECASE):
            return rule.reply
    return config.pipeline().llm.fallback


async def test_demo_call_recognises_each_line_answers_barges_in_and_hangs_up(config, tmp_path):
    record = tmp_path / "call.wav"
    async with booking_service() as bookings:  # what `switchboard demo` serves for its book_table tool
        result, turns = await place_call(config, DEMO_LINES, record_path=str(record))
    print(latency_table(turns))
    replies = [t for t in turns if t.kind == "reply"]

    # Each caller line was heard well enough to pick the rule the script has for it.
    assert len(replies) == len(DEMO_LINES)
    for line, turn in zip(DEMO_LINES, replies, strict=True):
        assert rule_reply(config, turn.transcript) == rule_reply(config, line.text), (
            line.text,
            turn.transcript,
        )

    # The caller talked over the long opening-hours reply: clear, cancelled turn, partial history.
    hours = replies[0]
    assert hours.interrupted and result.lines[1].clear_received
    assert len(hours.reply_heard) < len(hours.reply_text)
    # ...and the bot answered the interruption instead.
    assert replies[1].reply_heard == rule_reply(config, "book a table")

    # Goodbye: the farewell was heard in full, then the server closed the stream.
    assert replies[-1].ended_call and replies[-1].reply_heard == rule_reply(config, "goodbye")
    assert result.hangup and not result.stop_sent
    assert result.malformed_count == 0
    assert record.exists()
    # The booking line went through the book_table tool to the demo's booking service, and the bot said
    # the reference it answered.
    (booking,) = bookings.made
    booked = replies[2]
    assert booked.tools_used == ["book_table:ok"] and booking["reference"] in booked.reply_heard
    assert demo_went_as_scripted(result, turns, bookings.made)  # what `switchboard demo` exits 0 on
    # ...and the verdict notices a call that did not go as scripted
    assert not demo_went_as_scripted(result, [t for t in turns if not t.interrupted], bookings.made)
    assert not demo_went_as_scripted(dataclasses.replace(result, hangup=False), turns, bookings.made)
    assert not demo_went_as_scripted(result, turns, [])


async def test_bot_audio_lasts_as_long_as_the_synthesised_reply(config):
    """A sample-rate slip anywhere between Piper (22.05 kHz) and the 8 kHz line changes this by 8 % or more
    (24 kHz, 16 kHz). Piper varies its phoneme durations from one rendering to the next (its noise_w: up
    to ±3 % on these texts), so the call's audio must be within 4 % of the renderings' mean."""
    pipeline = config.pipeline()
    result, _ = await place_call(config, [CallerLine("thank you goodbye")])
    tts = pipeline.tts
    # The greeting and the end_call farewell are each spoken as one chunk.
    chunks = [pipeline.greeting, rule_reply(config, "goodbye")]
    rendered_s = statistics.mean(
        sum(len(voice().render(chunk, tts.speed, tts.volume)) for chunk in chunks) / 22050 for _ in range(5))
    # each chunk is padded to a whole 20 ms frame before its mark
    slack = 0.02 * len(chunks) + 0.01
    assert result.bot_audio_received_s == pytest.approx(rendered_s, abs=0.04 * rendered_s + slack)
    assert result.hangup
