"""The provider plug-ins: what each `provider:` value of pipeline.yaml is, and how to build it.

A vendor module calls `register(Plugin(...))` once per stage it serves, with its config model (its
section of pipeline.yaml), the environment variables its key is read from, and a factory. The config
schema (`switchboard.config`), `switchboard check` and the pipeline's assembly read these registrations;
nothing else lists vendors. `load_builtin()` imports the built-in plug-ins in `BUILTIN` order (that
order is the one error messages list them in).

A factory should import its vendor's SDK when called, not at module import, so a pipeline loads only
the SDKs it uses: `lazy("…adapter", "Class")` is such a factory. Built providers are shared: identical
settings get the same instance (hence one HTTP client and its warm connections, or one decoder pool);
`build(..., shared=False)` gives an instance of its own (a shadow LLM, whose connections must never
hold up a live turn's).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from switchboard.core.settings import ProviderConfig

# "realtime": a speech-to-speech model, the one provider of a `kind: realtime` pipeline (core/realtime.py)
Stage = Literal["stt", "llm", "tts", "realtime"]
STAGES: tuple[Stage, ...] = ("stt", "llm", "tts")  # a cascade's

# the built-in plug-ins, embedded engines first; each is a module of this package
BUILTIN = ("moonshine", "whisper", "pocketsphinx", "scripted", "piper", "espeak",
           "openai", "anthropic", "gemini", "cohere", "huggingface")


@dataclass(frozen=True)
class Plugin:
    stage: Stage
    name: str  # the `provider:` value
    config: type[ProviderConfig]  # its section; `provider: Literal[name]`
    factory: Callable[..., Any]  # (config) -> STT | LLM | TTS; an STT that hears phrases: (config, phrases)
    key_env: tuple[str, ...] = ()  # where its key is read from by default; () = needs none (embedded)
    hears_phrases: bool = False  # an STT that is taught what callers are expected to say
    # an LLM that knows what callers are expected to say (the scripted rules): config -> phrases
    expected_phrases: Callable[[Any], list[str]] | None = None
    # the TTS every pipeline's chain ends with, so the apology can always be spoken: (config) for it
    last_resort: Callable[[], ProviderConfig] | None = None


_plugins: dict[tuple[Stage, str], Plugin] = {}
_built: dict[str, Any] = {}


def register(plugin: Plugin) -> Plugin:
    key = (plugin.stage, plugin.name)
    if key in _plugins and _plugins[key] != plugin:
        raise ValueError(f"{plugin.stage} provider {plugin.name!r} is registered twice")
    _plugins[key] = plugin
    return plugin


def lazy(module: str, name: str) -> Callable[..., Any]:
    """A factory that imports `module` (an adapter on a vendor SDK) when first called, then calls `name`."""

    def factory(*args: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args)

    factory.__qualname__ = f"lazy({module}.{name})"
    return factory


def load_builtin() -> None:
    for name in BUILTIN:
        importlib.import_module(f"switchboard.providers.{name}")


def plugins(stage: Stage) -> list[Plugin]:
    """The registered plug-ins of a stage: the built-in ones in `BUILTIN` order (whatever order their
    modules happened to be imported in), then others in registration order."""
    load_builtin()
    found = [plugin for (each, _), plugin in _plugins.items() if each == stage]
    return sorted(found, key=lambda plugin: _builtin_rank(plugin.config.__module__))


def _builtin_rank(module: str) -> int:
    parts = module.split(".")
    name = parts[2] if len(parts) > 2 and parts[:2] == ["switchboard", "providers"] else ""
    return BUILTIN.index(name) if name in BUILTIN else len(BUILTIN)


def plugin(stage: Stage, name: str) -> Plugin:
    load_builtin()
    try:
        return _plugins[(stage, name)]
    except KeyError:
        known = ", ".join(each.name for each in plugins(stage))
        raise ValueError(f"{stage}: unknown provider {name!r}; available: {known}") from None


def plugin_of(config: ProviderConfig) -> Plugin:
    """The plug-in whose config model `config` is (or derives from: a variant's, a shadow's)."""
    load_builtin()
    for each in _plugins.values():
        if isinstance(config, each.config):
            return each
    raise ValueError(f"unknown provider {config.provider!r}: no plug-in has its config model")


def build(stage: Stage, config: ProviderConfig, phrases: Sequence[str] = (), shared: bool = True) -> Any:
    """The provider for one section. `phrases`: what callers are expected to say (for an STT that
    hears phrases). Raises MissingCredential when its key is not set: a start-up error."""
    found = plugin(stage, config.provider)
    args = (config, list(phrases)) if found.hears_phrases else (config,)
    if not shared:
        return found.factory(*args)
    key = f"{stage}:{found.name}:{config.model_dump_json()}"
    if found.hears_phrases:
        key += "\n" + "\n".join(phrases)
    if key not in _built:
        _built[key] = found.factory(*args)
    return _built[key]


def last_resort(stage: Stage) -> ProviderConfig | None:
    """The config of the stage's last-resort provider, if a plug-in declares one."""
    found = [each.last_resort for each in plugins(stage) if each.last_resort is not None]
    return found[0]() if found else None


def expected_phrases(config: ProviderConfig) -> list[str]:
    """What callers are expected to say according to an LLM's config ([] for most LLMs)."""
    found = plugin("llm", config.provider)
    return found.expected_phrases(config) if found.expected_phrases else []
