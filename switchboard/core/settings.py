"""The pydantic bases a plug-in's section of pipeline.yaml is built on.

Every model forbids unknown keys, so a typo is a start-up error that names the key, never a setting
silently ignored. A provider's model has a `provider: Literal["name"]` field (the section is discriminated
on it) and says in `summary()` what the `switchboard check` table shows for it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderConfig(Strict):
    """One provider's section."""

    provider: str

    def summary(self) -> str:
        """Its model, voice or mode, for `switchboard check`."""
        return ""


# How long an idle vendor connection waits in its client's pool for the next request. httpx's default,
# 5 s, is shorter than the gap between one caller's turns, so at a few calls (or turns in step) every
# turn's request opened a new connection: on a real API a TCP and TLS handshake (CPU, and a round trip or
# two before the first byte). A connection the server closed meanwhile is noticed when taken and replaced.
VENDOR_KEEPALIVE_S = 60.0


class Timeouts(Strict):
    """Per-stage limits for a cloud vendor. A stage that misses one fails over (see `fallback`)."""

    connect_s: float = Field(3.0, gt=0, le=60)  # TCP + TLS connect
    first_token_s: float = Field(5.0, gt=0, le=120)  # request sent -> first token / audio byte / transcript
    total_s: float = Field(30.0, gt=0, le=600)  # request sent -> stream finished


class VendorConfig(ProviderConfig):
    """Options every cloud adapter takes. The key comes from the vendor's usual environment variable
    (`api_key_env` overrides its name); it is never written in this file."""

    model: str
    base_url: str | None = None  # another endpoint speaking the same API (proxy, local server, test fake)
    api_key_env: str | None = None
    timeouts: Timeouts = Field(default_factory=Timeouts)

    def summary(self) -> str:
        return self.model

    @field_validator("base_url")
    @classmethod
    def _base_url_is_a_url(cls, url: str | None) -> str | None:
        if url is not None:
            check_http_url(url, "http://localhost:11434/v1")
        return url


def check_http_url(url: str, example: str) -> None:
    """Raise ValueError (a config error's sentence, with `example`) unless `url` is an http(s) URL with a
    host and a valid port."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc}); write it like {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must start with http:// or https:// and name a host, e.g. {example}")


def unique_names(items: list[Any], what: str = "names") -> list[Any]:
    """`items` (each with a `name`) as they are, or a ValueError naming the names used twice."""
    names = [item.name for item in items]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{what} must be unique; {', '.join(repr(name) for name in twice)} "
                         "is used more than once")
    return items


class ChatVendorConfig(VendorConfig):
    """Options every cloud LLM takes."""

    temperature: float | None = Field(None, ge=0, le=2)  # None = the vendor's default
    max_tokens: int = Field(300, ge=1, le=32000)  # a phone reply is short; this bounds a runaway one
