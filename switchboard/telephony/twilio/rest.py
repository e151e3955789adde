"""Twilio's REST API: end a call, place a call. The rest of the Twilio carrier is in this folder.

Credentials come from the environment: TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (basic auth);
TWILIO_FROM_NUMBER is the default caller id for outbound calls; PUBLIC_URL is where Twilio reaches
our media WebSocket; TWILIO_API_BASE replaces https://api.twilio.com (a test fake, a proxy).

The `twilio` SDK is synchronous: the async helpers run it in a thread, so a slow Twilio never stalls
the event loop that carries the calls' audio.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection, Mapping

import requests
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from switchboard.telephony.dialing import (
    DialError,
    DialNotConfigured,
    DialRefused,
    PlacedCall,
    check_request,
    missing_env,
    require_settings,
)
from switchboard.telephony.twilio import wire

__all__ = ["DialError", "DialNotConfigured", "DialRefused", "PlacedCall", "TwilioRest", "dial"]

log = logging.getLogger("switchboard.twilio_rest")
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)  # it logs every request at INFO

ACCOUNT_SID_ENV = "TWILIO_ACCOUNT_SID"
AUTH_TOKEN_ENV = "TWILIO_AUTH_TOKEN"
FROM_NUMBER_ENV = "TWILIO_FROM_NUMBER"
API_BASE_ENV = "TWILIO_API_BASE"
PUBLIC_URL_ENV = "PUBLIC_URL"
TIMEOUT_S = 10.0  # per REST request


class TwilioRest:
    """One account's REST client."""

    def __init__(self, account_sid: str, auth_token: str, api_base: str | None = None,
                 timeout_s: float = TIMEOUT_S) -> None:
        self.account_sid = account_sid
        self._client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout_s))
        if api_base:
            self._client.api.base_url = api_base.rstrip("/")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TwilioRest | None:
        """A client if TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are both set, else None."""
        environ = os.environ if environ is None else environ
        sid, token = environ.get(ACCOUNT_SID_ENV), environ.get(AUTH_TOKEN_ENV)
        if not (sid and token):
            return None
        return cls(sid, token, environ.get(API_BASE_ENV) or None)

    async def hang_up(self, call_sid: str) -> bool:
        """End the call (`Status=completed`). True if Twilio ended it or it had already ended (404);
        False if the request failed (logged: the caller of this closes the stream instead)."""
        try:
            await asyncio.to_thread(self._client.calls(call_sid).update, status="completed")
        except TwilioException as exc:
            if getattr(exc, "status", None) == 404:
                log.info("call %s: already ended (Twilio answered 404 to the hang-up)", call_sid)
                return True
            log.warning("call %s: REST hang-up failed: %s", call_sid, _describe(exc))
            return False
        except requests.RequestException as exc:
            log.warning("call %s: REST hang-up failed: cannot reach Twilio: %s", call_sid, exc)
            return False
        log.info("call %s: ended through Twilio's REST API", call_sid)
        return True

    async def redirect(self, call_sid: str, twiml: str) -> bool:
        """Give the live call new TwiML (a transfer's `<Dial>`): its media stream ends. True if Twilio
        took it; False if the request failed (logged)."""
        try:
            await asyncio.to_thread(self._client.calls(call_sid).update, twiml=twiml)
        except TwilioException as exc:
            log.warning("call %s: REST redirect failed: %s", call_sid, _describe(exc))
            return False
        except requests.RequestException as exc:
            log.warning("call %s: REST redirect failed: cannot reach Twilio: %s", call_sid, exc)
            return False
        return True

    def create_call(self, to: str, from_: str, twiml: str | None = None, url: str | None = None,
                    machine_detection: str | None = None) -> str:
        """Place a call running `twiml` (or the TwiML `url` answers); returns its call sid. With
        `machine_detection` Twilio tells `url` who answered (`AnsweredBy`). Raises TwilioException /
        RequestException."""
        options = {"twiml": twiml} if url is None else {"url": url, "method": "POST"}
        if machine_detection:
            options["machine_detection"] = machine_detection
        return str(self._client.calls.create(to=to, from_=from_, **options).sid)


def _describe(exc: TwilioException) -> str:
    status, code = getattr(exc, "status", None), getattr(exc, "code", None)
    message = getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", None)
    return f"HTTP {status}, Twilio error {code}: {message or exc}"


# --- outbound calls --------------------------------------------------------------------------------

def dial(
    to: str,
    pipeline: str,
    pipelines: Collection[str],
    from_: str | None = None,
    environ: Mapping[str, str] | None = None,
    machine_detection: str | None = None,
) -> PlacedCall:
    """Place an outbound call whose TwiML connects it to our /media-stream on `pipeline`, one of
    `pipelines` (those defined). Blocking; raises DialError with a message naming what is wrong.

    With `machine_detection` ("Enable", "DetectMessageEnd") Twilio detects an answering machine first
    and then asks our /incoming-call for the TwiML, with `AnsweredBy`: it goes on to the stream as the
    `answered_by` parameter, and the pipeline's `voicemail:` says what the call does."""
    environ = os.environ if environ is None else environ
    from_ = from_ or environ.get(FROM_NUMBER_ENV) or ""
    check_request(to, from_, pipeline, pipelines)
    missing = missing_env(environ, ACCOUNT_SID_ENV, AUTH_TOKEN_ENV)
    public_url = require_settings(environ, from_, FROM_NUMBER_ENV,
                                  missing and f"Twilio credentials missing: set {missing}",
                                  "the call can reach /media-stream")
    rest = TwilioRest.from_env(environ)
    assert rest is not None
    url = wire.stream_url(public_url, "", None)
    twiml = wire.connect_twiml(url, {"pipeline": pipeline, "from": from_, "to": to})
    try:
        if machine_detection:
            call_sid = rest.create_call(to, from_, url=wire.webhook_url(public_url, pipeline),
                                        machine_detection=machine_detection)
        else:
            call_sid = rest.create_call(to, from_, twiml)
    except TwilioException as exc:
        raise DialRefused(f"Twilio refused the call: {_describe(exc)}") from None
    except requests.RequestException as exc:
        raise DialRefused(f"cannot reach Twilio: {exc}") from None
    log.info("placed call %s to %s from %s on pipeline %r%s", call_sid, to, from_, pipeline,
             f" (machine detection: {machine_detection})" if machine_detection else "")
    return PlacedCall(call_sid, to, from_, pipeline, "twilio")
