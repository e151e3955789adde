"""Errors every layer shares: a provider's failure, a missing credential."""

from __future__ import annotations

import os
from typing import Literal

ErrorKind = Literal["auth", "rate_limit", "timeout", "server", "bad_request", "connection", "internal"]


class ProviderError(Exception):
    """Every failure of a provider, whatever the vendor, ends up as one of these."""

    def __init__(self, vendor: str, kind: ErrorKind, message: str, retryable: bool = False) -> None:
        super().__init__(f"{vendor}: {kind}: {message}")
        self.vendor = vendor
        self.kind = kind
        self.retryable = retryable


class StartupError(Exception):
    """A provider cannot be built here: said at start-up, with what to do, never mid-call."""


class MissingCredential(StartupError):
    """A vendor's key is not in the environment: a start-up error naming the variable to set."""


class MissingEngine(StartupError):
    """An embedded engine's package or model file is missing or unreadable: names the package to install."""


def api_key(vendor: str, override_env: str | None, *default_envs: str) -> str:
    """The key from the first set variable (`override_env`, else the vendor's usual ones)."""
    names = [override_env] if override_env else list(default_envs)
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    raise MissingCredential(f"{vendor}: set {' or '.join(names)}")
