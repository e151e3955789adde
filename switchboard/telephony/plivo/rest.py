"""Plivo's REST API through the `plivo` SDK: end a call, hand it to another number, place a call.

Credentials come from the environment: PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN; PLIVO_FROM_NUMBER is the
default caller id for outbound calls; PUBLIC_URL is where Plivo fetches our XML; PLIVO_API_BASE
replaces https://api.plivo.com (a test fake, a proxy).

The SDK is synchronous: the async helpers run it in a thread, so a slow Plivo never stalls the event
loop that carries the calls' audio.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection, Mapping
from urllib.parse import urlencode

import plivo
import plivo.rest.client as plivo_client
import requests
from plivo.exceptions import PlivoRestError, ResourceNotFoundError

from switchboard.core.verdicts import WAIT_PARAMETER
from switchboard.telephony.dialing import (
    DialNotConfigured,
    DialRefused,
    PlacedCall,
    check_request,
    missing_env,
    require_settings,
)

log = logging.getLogger("switchboard.plivo_rest")

AUTH_ID_ENV = "PLIVO_AUTH_ID"
AUTH_TOKEN_ENV = "PLIVO_AUTH_TOKEN"
FROM_NUMBER_ENV = "PLIVO_FROM_NUMBER"
API_BASE_ENV = "PLIVO_API_BASE"
PUBLIC_URL_ENV = "PUBLIC_URL"
TIMEOUT_S = 10.0  # per REST request
AMD_PATH = "/plivo/amd"
DETECTION_MS = 4000  # machine_detection_time: how long Plivo listens (2,000-10,000; its default 5,000)
VERDICT_MARGIN_S = 1.0  # the held start waits this much longer (Plivo posts only when it hears a machine)


def _use_api_base(api_base: str) -> None:
    """Point the SDK at `api_base`. It has no per-client setting: its base URIs are module constants,
    which every request re-reads."""
    base = f"{api_base.rstrip('/')}/v1/Account"
    for name in ("PLIVO_API_BASE_URI", "API_VOICE_BASE_URI", "API_VOICE_BASE_URI_FALLBACK_1",
                 "API_VOICE_BASE_URI_FALLBACK_2"):
        setattr(plivo_client, name, base)


class PlivoRest:
    """One account's REST client."""

    def __init__(self, auth_id: str, auth_token: str, api_base: str | None = None,
                 timeout_s: float = TIMEOUT_S) -> None:
        if api_base:
            _use_api_base(api_base)
        self.auth_id = auth_id
        self._client = plivo.RestClient(auth_id, auth_token, timeout=timeout_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlivoRest | None:
        """A client if PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN are both set (and the id is well formed)."""
        environ = os.environ if environ is None else environ
        auth_id, token = environ.get(AUTH_ID_ENV), environ.get(AUTH_TOKEN_ENV)
        if not (auth_id and token):
            return None
        try:
            return cls(auth_id, token, environ.get(API_BASE_ENV) or None)
        except plivo.exceptions.AuthenticationError as exc:
            log.warning("Plivo REST API off: %s (%s is an MA… or SA… id of 20 characters)", exc, AUTH_ID_ENV)
            return None

    async def hang_up(self, call_uuid: str) -> bool:
        """End the call. True if Plivo ended it or it had already ended (404); False if the request
        failed (logged: the caller of this closes the stream instead)."""
        try:
            await asyncio.to_thread(self._client.calls.hangup, call_uuid)
        except ResourceNotFoundError:
            log.info("call %s: already ended (Plivo answered 404 to the hang-up)", call_uuid)
            return True
        except (PlivoRestError, requests.RequestException) as exc:
            log.warning("call %s: REST hang-up failed: %s", call_uuid, _describe(exc))
            return False
        log.info("call %s: ended through Plivo's REST API", call_uuid)
        return True

    async def transfer(self, call_uuid: str, xml_url: str) -> bool:
        """Send the live call to the XML at `xml_url` (a transfer's `<Dial>`): its stream ends. True if
        Plivo took it; False if the request failed (logged)."""
        try:
            await asyncio.to_thread(self._client.calls.update, call_uuid, legs="aleg", aleg_url=xml_url,
                                    aleg_method="POST")
        except (PlivoRestError, requests.RequestException) as exc:
            log.warning("call %s: REST transfer failed: %s", call_uuid, _describe(exc))
            return False
        return True

    def create_call(self, to: str, from_: str, answer_url: str,
                    machine_detection_url: str | None = None) -> str:
        """Place a call whose answer XML comes from `answer_url`; returns its request uuid. With
        `machine_detection_url` Plivo listens for an answering machine (`DETECTION_MS`) and posts there
        when it hears one. Raises PlivoRestError / RequestException."""
        detection = {} if machine_detection_url is None else {
            "machine_detection": "true", "machine_detection_time": DETECTION_MS,
            "machine_detection_url": machine_detection_url, "machine_detection_method": "POST"}
        response = self._client.calls.create(from_=from_.lstrip("+"), to_=to.lstrip("+"),
                                             answer_url=answer_url, answer_method="POST", **detection)
        return str(getattr(response, "request_uuid", "") or "")


def _describe(exc: Exception) -> str:
    if isinstance(exc, requests.RequestException):
        return f"cannot reach Plivo: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _base(public_url: str) -> str:
    return (public_url if "://" in public_url else f"https://{public_url}").rstrip("/")


def answer_url(public_url: str, pipeline: str, verdict_wait_s: float | None = None) -> str:
    """Our /plivo/answer at PUBLIC_URL, for an outbound call, naming the pipeline that answers (and, with
    machine detection, how long its stream waits for the verdict)."""
    query = {"pipeline": pipeline, **({WAIT_PARAMETER: f"{verdict_wait_s:g}"} if verdict_wait_s else {})}
    return f"{_base(public_url)}/plivo/answer?{urlencode(query)}"


def dial(to: str, pipeline: str, pipelines: Collection[str], from_: str | None = None,
         environ: Mapping[str, str] | None = None, machine_detection: str | None = None) -> PlacedCall:
    """Place an outbound call through Plivo that, once answered, fetches our /plivo/answer (which opens
    the stream on `pipeline`). Blocking; raises DialError with a message naming what is wrong."""
    environ = os.environ if environ is None else environ
    from_ = from_ or environ.get(FROM_NUMBER_ENV) or ""
    check_request(to, from_, pipeline, pipelines)
    missing = missing_env(environ, AUTH_ID_ENV, AUTH_TOKEN_ENV)
    public_url = require_settings(environ, from_, FROM_NUMBER_ENV,
                                  missing and f"Plivo credentials missing: set {missing}",
                                  "Plivo can fetch /plivo/answer")
    rest = PlivoRest.from_env(environ)
    if rest is None:
        raise DialNotConfigured(f"{AUTH_ID_ENV} is not a Plivo auth id (MA… or SA…, 20 characters)")
    wait_s = DETECTION_MS / 1000 + VERDICT_MARGIN_S if machine_detection else None
    try:
        request_uuid = rest.create_call(to, from_, answer_url(public_url, pipeline, wait_s),
                                        f"{_base(public_url)}{AMD_PATH}" if machine_detection else None)
    except (PlivoRestError, requests.RequestException) as exc:
        raise DialRefused(f"Plivo refused the call: {_describe(exc)}") from None
    log.info("placed call %s to %s from %s on pipeline %r through Plivo%s", request_uuid, to, from_, pipeline,
             " (machine detection)" if machine_detection else "")
    return PlacedCall(request_uuid, to, from_, pipeline, carrier="plivo")
