"""Vonage's Voice API through the `vonage` SDK: end a call, hand it to another number, place a call.

Credentials come from the environment: VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY (the PEM itself,
or VONAGE_PRIVATE_KEY_PATH naming its file): the SDK signs each request with them (an RS256 JWT).
VONAGE_FROM_NUMBER is the default caller id for outbound calls; PUBLIC_URL is where Vonage fetches our
NCCO; VONAGE_API_HOST replaces api.nexmo.com (a test fake or a proxy; the SDK speaks https only, so
a fake's certificate must be trusted, e.g. with REQUESTS_CA_BUNDLE).

The SDK is synchronous: the async helpers run it in a thread, so a slow Vonage never stalls the event
loop that carries the calls' audio.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from urllib.parse import urlencode

import requests
from vonage_http_client import Auth, HttpClient, HttpClientOptions
from vonage_http_client.errors import HttpRequestError, NotFoundError
from vonage_utils.errors import VonageError
from vonage_voice.models.common import AdvancedMachineDetection, Phone
from vonage_voice.models.requests import CreateCallRequest, ToPhone
from vonage_voice.voice import Voice

from switchboard.core.verdicts import WAIT_PARAMETER
from switchboard.telephony.dialing import (
    DialNotConfigured,
    DialRefused,
    PlacedCall,
    check_request,
    require_settings,
)
from switchboard.telephony.vonage import wire

log = logging.getLogger("switchboard.vonage_rest")

APPLICATION_ID_ENV = "VONAGE_APPLICATION_ID"
PRIVATE_KEY_ENV = "VONAGE_PRIVATE_KEY"
PRIVATE_KEY_PATH_ENV = "VONAGE_PRIVATE_KEY_PATH"
FROM_NUMBER_ENV = "VONAGE_FROM_NUMBER"
API_HOST_ENV = "VONAGE_API_HOST"
PUBLIC_URL_ENV = "PUBLIC_URL"
TIMEOUT_S = 10
EVENT_PATH = "/vonage/event"
# Twilio's MachineDetection mode -> Vonage's advanced machine detection mode (both synchronous: Vonage runs
# the NCCO, our socket, only once it has posted `human` / `machine` to the event URL)
DETECTION_MODES = {"Enable": "detect", "DetectMessageEnd": "detect_beep"}
VERDICT_WAIT_S = 10.0  # the held start's wait, for a verdict that comes after the socket opens after all


def private_key(environ: Mapping[str, str]) -> str | None:
    key = environ.get(PRIVATE_KEY_ENV)
    if key:
        return key.replace("\\n", "\n")  # a PEM squeezed onto one line of an env file
    path = environ.get(PRIVATE_KEY_PATH_ENV)
    if path:
        try:
            return Path(path).read_text()
        except OSError as exc:
            log.warning("Vonage REST API off: cannot read %s=%s: %s", PRIVATE_KEY_PATH_ENV, path,
                        exc.strerror)
    return None


class VonageRest:
    """One application's Voice API client."""

    def __init__(self, application_id: str, key: str, api_host: str | None = None) -> None:
        options = {"timeout": TIMEOUT_S, **({"api_host": api_host} if api_host else {})}
        # the Voice API alone: the `vonage` package builds every product's client (~1 s more to import)
        self._voice = Voice(HttpClient(Auth(application_id=application_id, private_key=key),
                                       HttpClientOptions(**options)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VonageRest | None:
        """A client if VONAGE_APPLICATION_ID and a private key are both set, else None."""
        environ = os.environ if environ is None else environ
        application_id, key = environ.get(APPLICATION_ID_ENV), private_key(environ)
        if not (application_id and key):
            return None
        try:
            return cls(application_id, key, environ.get(API_HOST_ENV) or None)
        except VonageError as exc:
            log.warning("Vonage REST API off: %s", exc)
            return None

    async def hang_up(self, uuid: str) -> bool:
        """End the call. True if Vonage ended it or it had already ended (404); False if the request
        failed (logged: the caller of this closes the socket instead, which ends the call too)."""
        try:
            await asyncio.to_thread(self._voice.hangup, uuid)
        except NotFoundError:
            log.info("call %s: already ended (Vonage answered 404 to the hang-up)", uuid)
            return True
        except (VonageError, requests.RequestException) as exc:
            log.warning("call %s: REST hang-up failed: %s", uuid, _describe(exc))
            return False
        log.info("call %s: ended through Vonage's Voice API", uuid)
        return True

    async def transfer(self, uuid: str, target: str, our_number: str) -> bool:
        """Transfer the live call to an NCCO that connects `target` (its socket ends). True if Vonage took
        it; False if the request failed (logged)."""
        try:
            await asyncio.to_thread(self._voice.transfer_call_ncco, uuid,
                                    wire.transfer_ncco(target, our_number))
        except (VonageError, requests.RequestException, ValueError) as exc:
            log.warning("call %s: REST transfer failed: %s", uuid, _describe(exc))
            return False
        return True

    def create_call(self, to: str, from_: str, answer_url: str, machine_detection: str | None = None,
                    event_url: str | None = None) -> str:
        """Place a call whose NCCO comes from `answer_url`; returns its uuid. With `machine_detection`
        (Twilio's mode names) Vonage's advanced machine detection runs first and posts its verdict to
        `event_url`. Raises VonageError / RequestException."""
        detection = {} if not machine_detection else {
            "advanced_machine_detection": AdvancedMachineDetection(
                behavior="continue", mode=DETECTION_MODES.get(machine_detection, "detect")),
            "event_url": [event_url], "event_method": "POST"}
        request = CreateCallRequest(to=[ToPhone(number=to.lstrip("+"))],
                                    from_=Phone(number=from_.lstrip("+")),
                                    answer_url=[answer_url], answer_method="POST", **detection)
        return self._voice.create_call(request).uuid


def _describe(exc: Exception) -> str:
    if isinstance(exc, requests.RequestException):
        return f"cannot reach Vonage: {exc}"
    if isinstance(exc, HttpRequestError):
        return str(exc.message)[:300]
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _base(public_url: str) -> str:
    return (public_url if "://" in public_url else f"https://{public_url}").rstrip("/")


def answer_url(public_url: str, pipeline: str, verdict_wait_s: float | None = None) -> str:
    """Our /vonage/answer at PUBLIC_URL, for an outbound call, naming the pipeline that answers (and, with
    machine detection, how long its socket's start waits for the verdict)."""
    query = {"pipeline": pipeline, **({WAIT_PARAMETER: f"{verdict_wait_s:g}"} if verdict_wait_s else {})}
    return f"{_base(public_url)}/vonage/answer?{urlencode(query)}"


def dial(to: str, pipeline: str, pipelines: Collection[str], from_: str | None = None,
         environ: Mapping[str, str] | None = None, machine_detection: str | None = None) -> PlacedCall:
    """Place an outbound call through Vonage that, once answered, fetches our /vonage/answer (whose NCCO
    connects it to the socket on `pipeline`). Blocking; raises DialError naming what is wrong."""
    environ = os.environ if environ is None else environ
    from_ = from_ or environ.get(FROM_NUMBER_ENV) or ""
    check_request(to, from_, pipeline, pipelines)
    credentials = None
    if not environ.get(APPLICATION_ID_ENV) or private_key(environ) is None:
        credentials = (f"Vonage credentials missing: set {APPLICATION_ID_ENV} and {PRIVATE_KEY_ENV} "
                       f"(or {PRIVATE_KEY_PATH_ENV})")
    public_url = require_settings(environ, from_, FROM_NUMBER_ENV, credentials,
                                  "Vonage can fetch /vonage/answer")
    rest = VonageRest.from_env(environ)
    if rest is None:
        raise DialNotConfigured(f"{PRIVATE_KEY_ENV} is not a usable private key")
    try:
        uuid = rest.create_call(to, from_, answer_url(public_url, pipeline,
                                                      VERDICT_WAIT_S if machine_detection else None),
                                machine_detection, f"{_base(public_url)}{EVENT_PATH}")
    except (VonageError, requests.RequestException) as exc:
        raise DialRefused(f"Vonage refused the call: {_describe(exc)}") from None
    log.info("placed call %s to %s from %s on pipeline %r through Vonage%s", uuid, to, from_, pipeline,
             f" (machine detection: {machine_detection})" if machine_detection else "")
    return PlacedCall(uuid, to, from_, pipeline, carrier="vonage")
