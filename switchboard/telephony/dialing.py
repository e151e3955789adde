"""Outbound calls, whichever carrier places them: `dial(carrier, …)`, and the errors every carrier's
dialer raises.

Each carrier that can place calls has a `dial(to, pipeline, pipelines, from_, environ,
machine_detection)` in its folder (blocking: the server runs it in a thread); `DIALERS` names the
module, imported only when a call is placed (the vendor SDKs are slow to import). `POST /api/calls`,
the dashboard's form and `switchboard dial` all come here.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from switchboard.core.carrier import E164

DIALERS = {  # carrier -> the module whose `dial` places its calls
    "twilio": "switchboard.telephony.twilio.rest",
    "plivo": "switchboard.telephony.plivo.rest",
    "vonage": "switchboard.telephony.vonage.rest",
    "telnyx": "switchboard.telephony.telnyx.rest",
}
DEFAULT_CARRIER = "twilio"
PUBLIC_URL_ENV = "PUBLIC_URL"  # where the carrier reaches this server (webhooks, the media socket)


def request_problems(to: str, from_: str, pipeline: str, pipelines: Collection[str]) -> list[str]:
    """What is wrong with a dial request whichever carrier places it: the numbers and the pipeline."""
    problems = []
    if not E164.fullmatch(to or ""):
        problems.append(f"'to' {to!r} is not an E.164 number (e.g. +15551234567)")
    if from_ and not E164.fullmatch(from_):
        problems.append(f"'from' {from_!r} is not an E.164 number (e.g. +15551234567)")
    if pipeline not in pipelines:
        problems.append(f"unknown pipeline {pipeline!r}; defined: {', '.join(pipelines)}")
    return problems


def check_request(to: str, from_: str, pipeline: str, pipelines: Collection[str]) -> None:
    """DialError naming everything wrong with the request's numbers and pipeline (`request_problems`)."""
    problems = request_problems(to, from_, pipeline, pipelines)
    if problems:
        raise DialError("; ".join(problems))


def missing_env(environ: Mapping[str, str], *names: str) -> str:
    """'A and B' for the named variables `environ` lacks, or "" when it has them all."""
    return " and ".join(name for name in names if not environ.get(name))


def require_settings(environ: Mapping[str, str], from_: str, from_env: str, credentials: str | None,
                     reach: str) -> str:
    """The server's PUBLIC_URL, or DialNotConfigured naming every setting a carrier's dialer lacks: its
    `credentials` problem (None: none), a caller id (`from_`, else the carrier's `from_env`), and
    PUBLIC_URL, "so `reach`" (what the carrier does with it)."""
    problems = [credentials] if credentials else []
    if not from_:
        problems.append(f"no caller id: pass 'from' (--from) or set {from_env}")
    public_url = environ.get(PUBLIC_URL_ENV)
    if not public_url:
        problems.append(f"set {PUBLIC_URL_ENV} to this server's public https address, so {reach}")
    if problems:
        raise DialNotConfigured("; ".join(problems))
    assert public_url
    return public_url


class DialError(Exception):
    """A call could not be placed; the message says why and what to do. `status` is the HTTP answer."""

    status = 400


class DialNotConfigured(DialError):
    """The server lacks a setting (credentials, PUBLIC_URL, a from number)."""

    status = 503


class DialRefused(DialError):
    """The carrier refused the call or could not be reached."""

    status = 502


@dataclass(frozen=True)
class PlacedCall:
    call_sid: str  # the carrier's id of the call
    to: str
    from_: str
    pipeline: str
    carrier: str = DEFAULT_CARRIER


def dial(carrier: str, to: str, pipeline: str, pipelines: Collection[str], from_: str | None = None,
         environ: Mapping[str, str] | None = None, machine_detection: str | None = None) -> PlacedCall:
    """Place an outbound call through `carrier` onto `pipeline`. Blocking; raises DialError."""
    module = DIALERS.get(carrier)
    if module is None:
        raise DialError(f"unknown carrier {carrier!r}; outbound calls go through: {', '.join(DIALERS)}")
    return importlib.import_module(module).dial(to, pipeline, pipelines, from_, environ=environ,
                                                machine_detection=machine_detection)
