"""pipeline.yaml: the bundled file, the loader's error messages, ${ENV} interpolation."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Annotated, Union, get_args, get_origin

import pocketsphinx
import pytest
import yaml
from pydantic import BaseModel

from switchboard import caller
from switchboard.config import Config, ConfigError, default_config_path, load_config, parse_config
from switchboard.config.schema import Named, Weighted
from switchboard.providers.scripted import ScriptedRule

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "switchboard" / "pipeline.yaml"  # package data; the root pipeline.yaml links to it

MINIMAL = """\
pipelines:
  default:
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


def problems(text: str) -> list[str]:
    """The lines of the ConfigError that `text` raises (and check they are the whole message)."""
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text))
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


# --- the bundled pipeline.yaml ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> Config:
    return load_config(BUNDLED)


def test_bundled_pipeline_is_luigis_on_the_embedded_providers(bundled: Config) -> None:
    pipeline = bundled.pipeline(None)
    assert pipeline.greeting == "Hello, thanks for calling Luigi's. How can I help you?"
    assert (pipeline.stt.provider, pipeline.llm.provider, pipeline.tts.provider) == (
        "moonshine",
        "scripted",
        "piper",
    )
    # the caller simulator speaks the same voice raised in pitch, so the two are told apart
    assert pipeline.tts.voice == "joe" and caller.DEFAULT_VOICE == "piper" and caller.PIPER_PITCH >= 1.15


def test_bundled_goodbye_ends_the_call_with_a_farewell(bundled: Config) -> None:
    rule = rule_for(bundled, "thank you goodbye")
    assert rule.end_call
    assert rule.reply == "Thanks for calling Luigi's. Goodbye!"


def test_bundled_opening_hours_reply_takes_over_six_seconds_to_say(bundled: Config) -> None:
    from switchboard.providers.piper import voice

    pipeline = bundled.pipeline(None)
    reply = rule_for(bundled, "what are your opening hours").reply
    assert reply.startswith("We are open")
    spoken = voice(pipeline.tts.model_path).render(reply, pipeline.tts.speed)
    assert len(spoken) / voice().sample_rate > 6


@pytest.mark.parametrize(
    ("said", "reply_starts"),
    [
        ("i would like to book a table", "Of course. For how many people"),
        ("can i make a reservation", "Of course. For how many people"),
        ("for four people at seven", "Booked: {summary}"),  # through the book_table tool
        ("a table for two at eight", "Lovely, I have noted that down"),
        ("are you open at seven", "We are open"),
        ("where are you located", "We are at twelve Market Street"),
        ("do you have vegetarian options", "We serve fresh pasta"),
        ("thank you", "You're welcome"),
        ("bye", "Thanks for calling Luigi's"),
    ],
)
def test_bundled_rules_answer_what_callers_say(bundled: Config, said: str, reply_starts: str) -> None:
    assert rule_for(bundled, said).reply.startswith(reply_starts)


def test_bundled_every_phrase_reaches_its_own_rule(bundled: Config) -> None:
    rules = bundled.pipeline(None).llm.rules
    for rule in rules:
        for phrase in rule.phrases:
            assert rule_for(bundled, phrase) is rule, phrase


def test_bundled_phrases_use_only_words_the_recognizer_knows(bundled: Config) -> None:
    dictionary = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    known = {line.split(" ", 1)[0] for line in dictionary.read_text().splitlines()}
    pipeline = bundled.pipeline(None)
    phrases = [p for rule in pipeline.llm.rules for p in rule.phrases]  # taught to PocketSphinx if chosen
    unknown = {word for phrase in phrases for word in phrase.split() if word not in known}
    assert not unknown


def test_bundled_every_key_has_a_comment() -> None:
    lines = BUNDLED.read_text().splitlines()
    uncommented = [
        lines[line]
        for line in key_lines(yaml.compose(BUNDLED.read_text()))
        if "  # " not in lines[line] and not lines[line - 1].lstrip().startswith("#")
    ]
    assert not uncommented


def test_bundled_voice_is_accepted_by_espeak(bundled: Config) -> None:
    from switchboard.providers.espeak import EspeakTTSConfig

    voice = EspeakTTSConfig(provider="espeak").voice  # the last-resort voice every pipeline ends with
    assert bundled.pipeline(None).tts.provider != "espeak"
    assert espeak_set_voice(voice) == 0
    assert espeak_set_voice("no-such-voice") != 0  # the check can fail


def test_every_schema_key_is_documented() -> None:
    docs = (REPO / "docs" / "configuration.md").read_text()
    missing = [path for path in schema_paths(Config, "") if f"`{path}`" not in docs]
    assert not missing


# --- where the configuration comes from ------------------------------------------------------------------


def test_config_path_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(tmp_path / "mine.yaml"))
    assert default_config_path() == tmp_path / "mine.yaml"


def test_config_path_prefers_the_current_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SWITCHBOARD_CONFIG", raising=False)
    (tmp_path / "pipeline.yaml").write_text(MINIMAL)
    monkeypatch.chdir(tmp_path)
    assert default_config_path() == tmp_path / "pipeline.yaml"


def test_config_path_falls_back_to_the_bundled_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SWITCHBOARD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_config_path() == BUNDLED
    assert (REPO / "pipeline.yaml").resolve() == BUNDLED  # the file a user edits is the bundled one


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert str(caught.value) == f"{tmp_path / 'nope.yaml'}: cannot read the file: No such file or directory"


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("pipelines: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path} line 2, column 1: ")


# --- choosing a pipeline ---------------------------------------------------------------------------------

TWO_PIPELINES = (
    MINIMAL
    + """\
  sales:
    greeting: Sales here.
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""
)


def test_pipeline_by_name_or_default(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(TWO_PIPELINES)
    assert config.pipeline("sales").greeting == "Sales here."
    assert config.pipeline(None) is config.pipelines["default"]
    with caplog.at_level(logging.WARNING):
        assert config.pipeline("marketing") is config.pipelines["default"]
    assert "unknown pipeline 'marketing'" in caplog.text


def test_default_pipeline_can_be_another_one() -> None:
    config = parse_config("default_pipeline: sales\n" + TWO_PIPELINES)
    assert config.pipeline(None).greeting == "Sales here."


def test_yaml_anchors_share_settings_between_pipelines() -> None:
    config = parse_config("""\
pipelines:
  default: &base
    greeting: Hi.
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
  slow:
    <<: *base
    tts: {provider: espeak, rate: 120}
""")
    assert config.pipeline("slow").greeting == "Hi."
    assert config.pipeline("slow").tts.rate == 120


# --- error messages ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL + "    vad: {end_silence_ms: 20}\n",
            "pipelines.default.vad.end_silence_ms: must be between 100 and 5000, got 20",
        ),
        (
            MINIMAL + "    vad: {max_utterance_s: 0.5}\n",
            "pipelines.default.vad.max_utterance_s: must be between 1 and 300, got 0.5",
        ),
        (
            MINIMAL + "    vad: {end_silense_ms: 700}\n",
            "pipelines.default.vad.end_silense_ms: unknown key; allowed keys: aggressiveness, "
            "barge_in_min_ms, end_silence_ms, max_utterance_s, min_speech_ms, noise_gate, pre_roll_ms; "
            "did you mean 'end_silence_ms'?",
        ),
        (
            MINIMAL.replace("provider: espeak", "provider: espek"),
            "pipelines.default.tts: unknown provider 'espek'; allowed: piper, espeak, openai",
        ),
        (
            MINIMAL.replace("provider: pocketsphinx", "provider: pocketsphinx, mode: grammer"),
            "pipelines.default.stt.mode: must be one of auto, grammar, keyphrase, lm, got 'grammer'",
        ),
        (
            MINIMAL.replace("provider: scripted", "fallback: Pardon"),
            "pipelines.default.llm: missing required key 'provider'; "
            "allowed: scripted, openai, anthropic, gemini, cohere, huggingface",
        ),
        (
            MINIMAL.replace("    tts: {provider: espeak}\n", ""),
            "pipelines.default: missing required key 'tts'",
        ),
        (
            MINIMAL.replace("provider: espeak", "provider: espeak, rate: abc"),
            "pipelines.default.tts.rate: must be an integer, got 'abc'",
        ),
        (
            MINIMAL.replace("provider: pocketsphinx", "provider: pocketsphinx, pool_size: 2.5"),
            "pipelines.default.stt.pool_size: must be a whole number, got 2.5",
        ),
        (
            MINIMAL.replace("provider: scripted", "provider: scripted, words_per_second: fast"),
            "pipelines.default.llm.words_per_second: must be a number, got 'fast'",
        ),
        (
            MINIMAL.replace(
                "provider: scripted", "provider: scripted, rules: [{match: x, reply: y, end_call: maybe}]"
            ),
            "pipelines.default.llm.rules[0].end_call: must be true or false, got 'maybe'",
        ),
        (
            MINIMAL + "    greeting: yes\n",
            "pipelines.default.greeting: must be a string, got true; put it in quotes",
        ),
        (MINIMAL + "    vad:\n", "pipelines.default.vad: must be a mapping (key: value), got an empty value"),
        (
            MINIMAL + "    tts: {provider: espeak, voise: en-us}\n",
            "pipeline.yaml line 6, column 5: duplicate key 'tts'",
        ),
        (
            MINIMAL + "pipeline: {}\n",
            "pipeline: unknown key; allowed keys: busy_message, database_url, default_pipeline, "
            "drain_message, drain_timeout_s, max_concurrent_calls, numbers, pipelines, pricing, "
            "shadow_max_concurrent, telnyx, twilio, vonage, webrtc; did you mean 'pipelines'?",
        ),
        ("default_pipeline: default\n", "pipeline.yaml: missing required key 'pipelines'"),
        ("pipelines: {}\n", "pipelines: must not be empty"),
        (
            "default_pipeline: main\n" + TWO_PIPELINES,
            "default_pipeline: 'main' is not a pipeline; defined: default, sales",
        ),
        (
            TWO_PIPELINES.replace("  default:", "  support:"),
            "default_pipeline: not set, and no pipeline is named 'default'; set it to one of: support, sales",
        ),
    ],
)
def test_one_problem_one_sentence(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_invalid_regex_names_the_rule() -> None:
    [problem] = problems(
        MINIMAL.replace(
            "llm: {provider: scripted}",
            """llm:
      provider: scripted
      rules:
        - {match: hello, reply: Hi}
        - {match: bye, reply: Bye}
        - {match: "(unclosed", reply: Oops}""",
        )
    )
    assert problem.startswith("pipelines.default.llm.rules[2].match: invalid regex: ")
    assert "unterminated subpattern" in problem


def test_every_problem_is_listed_in_file_order() -> None:
    assert problems("""\
        default_pipeline: main
        pipelines:
          default:
            vad: {end_silence_ms: 20, aggressiveness: high}
            stt: {provider: pocketsphinx, mode: grammer}
            llm: {fallback: Pardon}
            tts: {provider: espek}
          sales:
            stt: {provider: pocketsphinx}
            llm: {provider: scripted}
        """) == [
        "default_pipeline: 'main' is not a pipeline; defined: default, sales",
        "pipelines.default.vad.end_silence_ms: must be between 100 and 5000, got 20",
        "pipelines.default.vad.aggressiveness: must be an integer, got 'high'",
        "pipelines.default.stt.mode: must be one of auto, grammar, keyphrase, lm, got 'grammer'",
        "pipelines.default.llm: missing required key 'provider'; "
        "allowed: scripted, openai, anthropic, gemini, cohere, huggingface",
        "pipelines.default.tts: unknown provider 'espek'; allowed: piper, espeak, openai",
        "pipelines.sales: missing required key 'tts'",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "",
            "pipeline.yaml: the file has no settings; it needs at least a 'pipelines:' mapping "
            "(see docs/configuration.md)",
        ),
        (
            "# only a comment\n",
            "pipeline.yaml: the file has no settings; it needs at least a 'pipelines:' "
            "mapping (see docs/configuration.md)",
        ),
        ("- default\n", "pipeline.yaml: the top level must be a mapping with a 'pipelines:' key, got a list"),
        ("hello\n", "pipeline.yaml: the top level must be a mapping with a 'pipelines:' key, got 'hello'"),
        (
            "pipelines:\n  default:\n    stt: {provider: pocketsphinx\n    llm: x\n",
            "pipeline.yaml line 4, column 8: expected ',' or '}', but got ':' "
            "(while parsing a flow mapping at line 3, column 10)",
        ),
        (
            "pipelines:\n\tdefault: {}\n",
            "pipeline.yaml line 2, column 1: found character '\\t' that cannot start any token; "
            "indent with spaces, not tabs",
        ),
        (
            "a: 1\n---\nb: 2\n",
            "pipeline.yaml line 2, column 1: but found another document "
            "(expected a single document in the stream at line 1, column 1)",
        ),
    ],
)
def test_file_level_problems(text: str, expected: str) -> None:
    assert problems(text) == [expected]


# --- ${ENV} interpolation ---------------------------------------------------------------------------------

WITH_VOICE = MINIMAL.replace("provider: espeak", "provider: espeak, voice: 'VOICE'")


def voice_from(template: str) -> str:
    return parse_config(WITH_VOICE.replace("VOICE", template)).pipeline(None).tts.voice


def test_env_variable_is_substituted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_VOICE", "en-us+f2")
    assert voice_from("${SB_VOICE}") == "en-us+f2"
    assert voice_from("${SB_VOICE:-en-us}") == "en-us+f2"
    assert voice_from("en-${SB_VOICE}") == "en-en-us+f2"


def test_env_default_when_unset_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SB_VOICE", raising=False)
    assert voice_from("${SB_VOICE:-en-us}") == "en-us"
    monkeypatch.setenv("SB_VOICE", "")
    assert voice_from("${SB_VOICE:-en-us}") == "en-us"


def test_unset_env_variable_names_variable_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SB_VOICE", raising=False)
    assert problems(WITH_VOICE.replace("VOICE", "${SB_VOICE}")) == [
        "pipelines.default.tts.voice: environment variable SB_VOICE is not set; "
        "set it, or give a default with ${SB_VOICE:-value}",
    ]


def test_dollar_dollar_brace_is_a_literal_and_bad_references_are_errors() -> None:
    assert voice_from("$${SB_VOICE}") == "${SB_VOICE}"
    assert problems(WITH_VOICE.replace("VOICE", "${SB VOICE}")) == [
        "pipelines.default.tts.voice: invalid ${...} reference; write ${NAME} or ${NAME:-default}, "
        "or $${ for a literal ${",
    ]


def test_env_values_are_converted_to_the_key_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_RATE", "210")
    config = parse_config(MINIMAL.replace("provider: espeak", "provider: espeak, rate: '${SB_RATE}'"))
    assert config.pipeline(None).tts.rate == 210


def test_env_values_cannot_inject_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_VOICE", "en-us\n    rate: 999")
    assert voice_from("${SB_VOICE}") == "en-us\n    rate: 999"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL.replace("provider: espeak", "provider: espeak, rate: '${SB_SECRET}'"),
            "pipelines.default.tts.rate: must be an integer, got the value of ${SB_SECRET}",
        ),
        (
            MINIMAL.replace("provider: espeak", "provider: '${SB_SECRET}'"),
            "pipelines.default.tts: unknown provider (the value of ${SB_SECRET}); "
            "allowed: piper, espeak, openai",
        ),
        (
            MINIMAL.replace("provider: pocketsphinx", "provider: pocketsphinx, mode: '${SB_SECRET:-lm}'"),
            "pipelines.default.stt.mode: must be one of auto, grammar, keyphrase, lm, "
            "got the value of ${SB_SECRET}",
        ),
        (
            "default_pipeline: '${SB_SECRET}'\n" + MINIMAL,
            "default_pipeline: the value of ${SB_SECRET} is not a pipeline; defined: default",
        ),
    ],
)
def test_env_values_never_appear_in_messages(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    monkeypatch.setenv("SB_SECRET", "sk-live-0123456789")
    assert problems(text) == [expected]


# --- helpers ----------------------------------------------------------------------------------------------


def rule_for(config: Config, said: str) -> ScriptedRule:
    """The first rule of the default pipeline whose regex is found in `said`, as the responder picks."""
    return next(rule for rule in config.pipeline(None).llm.rules if re.search(rule.match, said, re.I))


def key_lines(node: yaml.Node) -> list[int]:
    """0-based line numbers of every mapping key in a composed YAML document."""
    if isinstance(node, yaml.MappingNode):
        return [line for key, value in node.value for line in (key.start_mark.line, *key_lines(value))]
    if isinstance(node, yaml.SequenceNode):
        return [line for item in node.value for line in key_lines(item)]
    return []


def schema_paths(model: type[BaseModel], prefix: str) -> list[str]:
    """`pipelines.<name>.vad.end_silence_ms`-style paths of every key the schema accepts."""
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        if name == "pipelines":
            for kind in models_in(get_args(info.annotation)[1]):  # a cascade, or kind: realtime
                paths += schema_paths(kind, "pipelines.<name>.")
        elif name == "rules":
            paths += schema_paths(get_args(info.annotation)[0], f"{path}[].")
        elif name == "pricing":
            paths += schema_paths(get_args(info.annotation)[1], "pricing.<vendor/model>.")
        elif named := named_items(info.annotation):
            # variants and shadows: their own keys (a provider's keys are documented with its stage)
            for member in named:
                mixin = Weighted if issubclass(member, Weighted) else Named
                paths += [f"{path}[].{key}" for key in mixin.model_fields]
        else:
            for member in models_in(info.annotation):  # provider unions, and a stage's {variants: [...]}
                paths += schema_paths(member, f"{path}.")
    return list(dict.fromkeys(paths))


def named_items(annotation: object) -> list[type[BaseModel]]:
    """The item models of a list of variants or shadows, else []."""
    members = models_in(get_args(annotation)[0]) if get_origin(annotation) is list else []
    return members if members and all(issubclass(member, Named) for member in members) else []


def models_in(annotation: object) -> list[type[BaseModel]]:
    """The models of a model, a union or an Annotated one (not looking into lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is Annotated:
        return models_in(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [model for member in get_args(annotation) for model in models_in(member)]
    return []


def espeak_set_voice(voice: str) -> int:
    """espeak_SetVoiceByName's result, in a child process: the library keeps global state."""
    script = textwrap.dedent(f"""
        import ctypes, os, espeakng_loader
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = os.path.dirname(espeakng_loader.get_data_path())
        assert lib.espeak_Initialize(2, 0, data.encode(), 0) > 0
        print(lib.espeak_SetVoiceByName({voice.encode()!r}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(result.stdout)


# --- A/B variants and shadows ---------------------------------------------------------------------------

WITH_VARIANTS = MINIMAL.replace("    llm: {provider: scripted}\n", """\
    llm:
      variants:
        - {name: gpt, weight: 3, provider: openai, model: gpt-4o-mini}
        - {name: claude, provider: anthropic}
    shadow:
      - {name: gemini, provider: gemini, timeouts: {total_s: 10}}
""")


def test_variants_and_shadows_are_read() -> None:
    from switchboard.config import plain_config, stage_choices

    pipeline = parse_config(WITH_VARIANTS).pipeline()
    choices = stage_choices(pipeline.llm)
    assert [(name, weight, cfg.provider) for name, weight, cfg in choices] == [
        ("gpt", 3.0, "openai"), ("claude", 1.0, "anthropic")]
    assert type(choices[0][2]).__name__ == "OpenAILLMConfig" and choices[0][2].model == "gpt-4o-mini"
    assert stage_choices(pipeline.stt) == [(None, 1.0, pipeline.stt)]
    shadow = plain_config(pipeline.shadow[0])
    assert (pipeline.shadow[0].name, shadow.provider, shadow.timeouts.total_s) == ("gemini", "gemini", 10)
    assert parse_config(MINIMAL).shadow_max_concurrent == 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            WITH_VARIANTS.replace("weight: 3", "weight: 0"),
            ["pipelines.default.llm.variants[0].weight: must be greater than 0 and at most 1000000, got 0"],
        ),
        (
            WITH_VARIANTS.replace("name: claude", "name: gpt"),
            ["pipelines.default.llm.variants: names must be unique; 'gpt' is used more than once"],
        ),
        (
            WITH_VARIANTS.replace("      variants:\n", "      provider: openai\n      variants:\n"),
            ["pipelines.default.llm: has 'variants' and also provider; with variants, each variant holds its "
             "own provider and settings: move these keys into every variant"],
        ),
        (
            WITH_VARIANTS.replace("{name: claude, provider: anthropic}", "{provider: anthropic}"),
            ["pipelines.default.llm.variants[1]: missing required key 'name'"],
        ),
        (
            WITH_VARIANTS.replace("name: claude", "name: claude+opus"),
            ["pipelines.default.llm.variants[1].name: must be 1-64 letters, digits, '_', '-' or '.', "
             "e.g. gpt-4o (a call's variants are recorded joined by '+')"],
        ),
        (
            WITH_VARIANTS.replace("provider: anthropic", "provider: anthropik"),
            ["pipelines.default.llm.variants[1]: unknown provider 'anthropik'; "
             "allowed: scripted, openai, anthropic, gemini, cohere, huggingface"],
        ),
        (
            WITH_VARIANTS.replace("model: gpt-4o-mini", "modle: gpt-4o-mini"),
            ["pipelines.default.llm.variants[0].modle: unknown key; allowed keys: api_key_env, base_url, "
             "max_tokens, model, name, provider, temperature, timeouts, weight; did you mean 'model'?"],
        ),
        (
            MINIMAL.replace("{provider: espeak}", "{variants: []}"),
            ["pipelines.default.tts.variants: must not be empty"],
        ),
        (
            MINIMAL.replace("{provider: pocketsphinx}", "{variants: [{name: a, provider: pocketsphinx, "
                                                       "weight: fast}]}"),
            ["pipelines.default.stt.variants[0].weight: must be a number, got 'fast'"],
        ),
        (
            WITH_VARIANTS.replace("    shadow:\n", "    shadow:\n      - {name: gemini, provider: openai}\n"),
            ["pipelines.default.shadow: names must be unique; 'gemini' is used more than once"],
        ),
        (
            WITH_VARIANTS.replace("{name: gemini, provider: gemini,", "{name: gemini, provider: gemini, "
                                                                       "weight: 2,"),
            ["pipelines.default.shadow[0].weight: unknown key; allowed keys: api_key_env, base_url, "
             "max_tokens, model, name, provider, temperature, timeouts"],
        ),
        (
            WITH_VARIANTS.replace("{name: gemini, provider: gemini,", "{name: gemini,"),
            ["pipelines.default.shadow[0]: missing required key 'provider'; "
             "allowed: scripted, openai, anthropic, gemini, cohere, huggingface"],
        ),
        (
            MINIMAL + "shadow_max_concurrent: 0\n",
            ["shadow_max_concurrent: must be between 1 and 1000, got 0"],
        ),
        (   # fallback lists get the same sentences as stages (they used to lose the allowed values)
            MINIMAL + "    fallback: {llm: [{provider: opena}]}\n",
            ["pipelines.default.fallback.llm[0]: unknown provider 'opena'; "
             "allowed: scripted, openai, anthropic, gemini, cohere, huggingface"],
        ),
    ],
)
def test_variant_and_shadow_problems(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


@pytest.mark.parametrize("url", ["http://[::1/v1", "localhost:11434/v1", "ftp://example.com", "http://:80/v1"])
def test_a_base_url_must_be_a_url(url: str) -> None:
    text = MINIMAL.replace("llm: {provider: scripted}", f'llm: {{provider: openai, base_url: "{url}"}}')
    [line] = problems(text)
    assert line.startswith("pipelines.default.llm.base_url: ") and "http://localhost:11434/v1" in line
