"""`kind: realtime` pipelines in pipeline.yaml: what is read, and the sentences bad input gets."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from switchboard.config import ConfigError, parse_config
from switchboard.config.schema import RealtimePipelineConfig
from switchboard.providers.openai import OpenAIRealtimeConfig

REPO = Path(__file__).resolve().parent.parent

REALTIME = """
pipelines:
  default:
    kind: realtime
    system_prompt: "You take bookings."
    realtime:
      provider: openai
      model: gpt-realtime
      voice: alloy
      turn_detection: {type: semantic_vad, eagerness: high}
  cascade:
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text))
    return caught.value.problems


def test_a_realtime_pipeline_beside_a_cascade_is_read() -> None:
    config = parse_config(REALTIME)
    realtime, cascade = config.pipelines["default"], config.pipelines["cascade"]
    assert isinstance(realtime, RealtimePipelineConfig) and realtime.kind == "realtime"
    assert isinstance(realtime.realtime, OpenAIRealtimeConfig)
    assert (realtime.realtime.voice, realtime.realtime.turn_detection.type) == ("alloy", "semantic_vad")
    assert realtime.stt is None and realtime.llm is None and realtime.tts is None
    assert cascade.kind == "cascade" and cascade.stt.provider == "pocketsphinx"


def test_server_vad_settings_have_defaults() -> None:
    config = parse_config("pipelines:\n  default:\n    kind: realtime\n    realtime: {provider: openai}\n")
    detection = config.pipelines["default"].realtime.turn_detection
    assert (detection.type, detection.silence_duration_ms, detection.threshold) == ("server_vad", 500, 0.5)


@pytest.mark.parametrize(("text", "expected"), [
    ("""
     pipelines:
       default:
         kind: realtime
         stt: {provider: pocketsphinx}
         realtime: {provider: openai}
     """, "pipelines.default: kind: realtime has no stt: the speech-to-speech model in `realtime:` hears and "
          "speaks itself (the apology uses the last-resort voice); remove it, or drop `kind: realtime` for a "
          "cascade"),
    ("""
     pipelines:
       default:
         kind: realtime
     """, "pipelines.default: kind: realtime needs a `realtime:` section naming the model, e.g. "
          "realtime: {provider: openai, model: gpt-realtime}"),
    ("""
     pipelines:
       default:
         kind: realtim
         realtime: {provider: openai}
     """, "pipelines.default: kind must be cascade (the default: STT → LLM → TTS), realtime "
          "(a speech-to-speech model in `realtime:`) or split (`variants:` drawing other pipelines)"),
    ("""
     pipelines:
       default:
         kind: realtime
         realtime: {provider: openai, turn_detection: {type: server_vad, silence_duration_ms: 5}}
     """, "pipelines.default.realtime.turn_detection.silence_duration_ms: must be between 50 and 10000, "
          "got 5"),
    ("""
     pipelines:
       default:
         kind: realtime
         realtime: {provider: cohere}
     """, "pipelines.default.realtime: unknown provider 'cohere'; allowed: openai, gemini"),
])
def test_bad_realtime_sections_say_what_to_fix(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_temperature_is_refused_naming_the_allowed_keys() -> None:
    found = problems("""
        pipelines:
          default:
            kind: realtime
            realtime: {provider: openai, temperature: 0.7}
        """)
    assert len(found) == 1
    assert found[0].startswith("pipelines.default.realtime.temperature: unknown key; allowed keys: ")
    assert "turn_detection" in found[0]


def test_loading_a_realtime_pipeline_imports_no_sdk(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(REALTIME)
    code = (f"import sys; from switchboard.config import load_config; load_config({str(path)!r});"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'openai', 'google', 'websockets'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_check_lists_the_realtime_model_and_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from switchboard.check import describe

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    lines, complete = describe(parse_config(REALTIME))
    assert not complete
    row = next(line for line in lines if line.strip().startswith("realtime"))
    assert "gpt-realtime (alloy, semantic_vad)" in row and "MISSING: set OPENAI_API_KEY" in row
