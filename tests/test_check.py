"""`switchboard check`: providers, models and credentials of a pipeline.yaml, never a key's value."""

from switchboard.cli import main

CLOUD = """
pipelines:
  default:
    stt: {provider: openai, model: whisper-1}
    llm: {provider: anthropic}
    tts: {provider: espeak}
    fallback:
      llm:
        - {provider: gemini, model: gemini-2.5-flash}
        - {provider: openai, base_url: "http://localhost:11434/v1", model: llama3.2}
"""


def test_check_lists_every_provider_and_whether_its_key_is_set(tmp_path, monkeypatch, capsys):
    path = tmp_path / "pipeline.yaml"
    path.write_text(CLOUD)
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value")
    assert main(["check", str(path)]) == 1  # a key is missing
    out = capsys.readouterr().out
    assert "stt              openai        whisper-1" in out
    assert "MISSING: set OPENAI_API_KEY" in out
    assert "ANTHROPIC_API_KEY set" in out and "sk-ant-secret-value" not in out
    assert "llm fallback 1   gemini        gemini-2.5-flash" in out
    assert "MISSING: set GEMINI_API_KEY or GOOGLE_API_KEY" in out
    assert "at http://localhost:11434/v1" in out


def test_check_of_a_broken_file_names_the_key(tmp_path, capsys):
    path = tmp_path / "pipeline.yaml"
    path.write_text(CLOUD.replace("model: whisper-1", "model: whisper-2"))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    allowed = "whisper-1, gpt-4o-transcribe, gpt-4o-mini-transcribe"
    assert f"pipelines.default.stt.model: must be one of {allowed}, got 'whisper-2'" in err


def test_check_of_the_bundled_pipeline_passes(capsys, monkeypatch):
    monkeypatch.delenv("SWITCHBOARD_BOOKINGS_URL", raising=False)
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "no key needed (embedded)" in out
    # the demo's booking tool says what it needs (switchboard demo sets it; serve needs it set)
    assert "book_table    POST ${SWITCHBOARD_BOOKINGS_URL:-" in out
    assert "(SWITCHBOARD_BOOKINGS_URL not set: the default is used)" in out


def test_check_lists_every_variant_and_shadow(tmp_path, monkeypatch, capsys):
    path = tmp_path / "pipeline.yaml"
    path.write_text(CLOUD.replace("    llm: {provider: anthropic}\n", """\
    llm:
      variants:
        - {name: claude, provider: anthropic}
        - {name: gpt, weight: 2, provider: openai, model: gpt-4o-mini}
    shadow:
      - {name: cohere-a, provider: cohere}
"""))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("GEMINI_API_KEY", "g-secret")
    monkeypatch.delenv("CO_API_KEY", raising=False)
    assert main(["check", str(path)]) == 1  # the shadow's key is missing
    out = capsys.readouterr().out
    assert "llm claude       anthropic" in out and "llm gpt          openai        gpt-4o-mini" in out
    assert "llm shadow cohere-a cohere" in out and "MISSING: set CO_API_KEY" in out


async def test_check_ping_times_one_real_request_per_provider(tmp_path, monkeypatch, capsys):
    """`--ping` against the OpenAI fake (all three stages) and the embedded engines: a time each."""
    import asyncio

    from switchboard.server import running
    from tests.fakes.common import Faults
    from tests.fakes.openai_fake import OpenAIScript, make_app

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    async with running(make_app(Faults(), OpenAIScript())) as port:
        base = f"http://127.0.0.1:{port}/v1"
        path = tmp_path / "pipeline.yaml"
        path.write_text(f"""
pipelines:
  default:
    stt: {{provider: openai, base_url: "{base}"}}
    llm: {{provider: openai, base_url: "{base}"}}
    tts: {{provider: openai, base_url: "{base}"}}
    fallback:
      tts: [{{provider: espeak}}]
""")
        assert await asyncio.to_thread(main, ["check", str(path), "--ping"]) == 0
    out = capsys.readouterr().out
    pings = [line for line in out.splitlines() if line.startswith("  default: ")]
    assert len(pings) == 4 and all(line.rstrip().endswith(" ms") for line in pings), pings
    assert "default: tts fallback 1   espeak" in out
