"""Telnyx's REST API through the official `telnyx` SDK: end a call, hand it to another number, place one.

Credentials and settings come from the environment: TELNYX_API_KEY (bearer); TELNYX_CONNECTION_ID, the
TeXML application that places outbound calls; TELNYX_FROM_NUMBER, the default caller id; PUBLIC_URL,
where Telnyx reaches our media WebSocket; TELNYX_API_BASE replaces https://api.telnyx.com/v2 (a test
fake, a proxy).

- inbound Call Control: answer (`POST /calls/{id}/actions/answer`), then `streaming_start` (bidirectional
  RTP to our media socket, its token in `stream_auth_token`), or `reject` when the server is busy;
- hang-up: Call Control `POST /calls/{call_control_id}/actions/hangup` (a TeXML call's CallSid is its
  call_control_id); 422 with error 90018 means the call had already ended;
- transfer: TeXML `POST /texml/Accounts/{account}/Calls/{call}` with new TeXML (`<Dial>`), like Twilio's
  redirect: the stream ends and the call goes on to the target;
- outbound: TeXML `POST /texml/calls/{connection_id}` with inline TeXML that streams to us; with answering
  machine detection, `MachineDetection` and `AsyncAmd`: Telnyx runs the TeXML (the stream opens) while it
  listens, and posts `AnsweredBy` to our /telnyx/amd, which the held start waits for (core/verdicts.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping

import httpx
import telnyx

from switchboard.core.verdicts import WAIT_PARAMETER
from switchboard.telephony.dialing import (
    DialRefused,
    PlacedCall,
    check_request,
    missing_env,
    require_settings,
)
from switchboard.telephony.telnyx import wire

log = logging.getLogger("switchboard.telnyx_rest")

API_KEY_ENV = "TELNYX_API_KEY"
CONNECTION_ID_ENV = "TELNYX_CONNECTION_ID"
FROM_NUMBER_ENV = "TELNYX_FROM_NUMBER"
API_BASE_ENV = "TELNYX_API_BASE"
PUBLIC_URL_ENV = "PUBLIC_URL"
STREAM_TOKEN_ENV = "TELNYX_STREAM_TOKEN"
TIMEOUT_S = 10.0  # per REST request
ALREADY_ENDED = "90018"  # Telnyx's error code: "Call has already ended"
AMD_PATH = "/telnyx/amd"
# how long Telnyx may listen (MachineDetectionTimeout, ms): a quick verdict, or one after the greeting's beep
DETECTION_MS = {"Enable": 5000, "DetectMessageEnd": 30000}
VERDICT_MARGIN_S = 2.0  # the held start waits this much longer than Telnyx listens (the callback's trip)


def _client_options(environ: Mapping[str, str]) -> dict:
    base = environ.get(API_BASE_ENV)
    return {"api_key": environ[API_KEY_ENV], "timeout": TIMEOUT_S, "max_retries": 0,
            **({"base_url": base.rstrip("/")} if base else {})}


def describe(exc: Exception) -> str:
    """A Telnyx error as one line: HTTP status, Telnyx's code and title (never the key)."""
    if isinstance(exc, telnyx.APIStatusError):
        errors = exc.body.get("errors") if isinstance(exc.body, dict) else None
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        title = first.get("title") or exc.message
        return f"HTTP {exc.status_code}, Telnyx error {first.get('code', '?')}: {title}"
    return f"cannot reach Telnyx: {exc}"


def _error_code(exc: telnyx.APIStatusError) -> str:
    errors = exc.body.get("errors") if isinstance(exc.body, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    return str(first.get("code", ""))


class TelnyxRest:
    """One account's async REST client."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._client = telnyx.AsyncTelnyx(**_client_options(environ))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TelnyxRest | None:
        """A client if TELNYX_API_KEY is set, else None."""
        environ = os.environ if environ is None else environ
        return cls(environ) if environ.get(API_KEY_ENV) else None

    async def hang_up(self, call_control_id: str) -> bool:
        """End the call. True if Telnyx ended it or it had already ended; False if the request failed
        (logged: the caller of this closes the stream instead)."""
        try:
            await self._client.calls.actions.hangup(call_control_id)
        except telnyx.APIStatusError as exc:
            if exc.status_code == 422 and _error_code(exc) == ALREADY_ENDED:
                log.info("call %s: already ended (Telnyx error 90018 to the hang-up)", call_control_id)
                return True
            log.warning("call %s: REST hang-up failed: %s", call_control_id, describe(exc))
            return False
        except (telnyx.APIError, httpx.HTTPError) as exc:
            log.warning("call %s: REST hang-up failed: %s", call_control_id, describe(exc))
            return False
        log.info("call %s: ended through Telnyx's REST API", call_control_id)
        return True

    async def answer_and_stream(self, call_control_id: str, stream_url: str, codec: wire.Codec,
                                token: str | None, parameters: Mapping[str, str]) -> bool:
        """A Call Control call: answer it, then stream it both ways (RTP in `codec`) to `stream_url`, with
        `parameters` as the stream's custom parameters (back in its `start`). False if Telnyx refused
        either (logged: the call is hung up, or was never answered)."""
        actions = self._client.calls.actions
        custom = [{"name": key, "value": value} for key, value in parameters.items() if value]
        try:
            await actions.answer(call_control_id)
            await actions.start_streaming(
                call_control_id, stream_url=stream_url, stream_track="inbound_track",
                stream_bidirectional_mode="rtp", stream_bidirectional_codec=codec.name,  # type: ignore[arg-type]
                stream_codec=codec.name, stream_bidirectional_sampling_rate=codec.rate,  # type: ignore[arg-type]
                custom_parameters=custom,
                **({"stream_auth_token": token} if token else {}))
        except (telnyx.APIError, httpx.HTTPError) as exc:
            log.warning("call %s: could not answer and stream it: %s", call_control_id, describe(exc))
            await self.hang_up(call_control_id)
            return False
        log.info("call %s: answered, streaming to %s", call_control_id, stream_url.partition("?")[0])
        return True

    async def reject(self, call_control_id: str) -> None:
        """Turn a Call Control call away (busy), logged if Telnyx refuses."""
        try:
            await self._client.calls.actions.reject(call_control_id, cause="USER_BUSY")
        except (telnyx.APIError, httpx.HTTPError) as exc:
            log.warning("call %s: could not reject it: %s", call_control_id, describe(exc))

    async def redirect(self, account_sid: str, call_sid: str, texml: str) -> bool:
        """Give the live call new TeXML (a transfer's `<Dial>`): its media stream ends. True if Telnyx
        took it; False if the request failed (logged)."""
        try:
            await self._client.texml.accounts.calls.update(call_sid, account_sid=account_sid, texml=texml)
        except (telnyx.APIError, httpx.HTTPError) as exc:
            log.warning("call %s: REST redirect failed: %s", call_sid, describe(exc))
            return False
        return True


def amd_body(public_url: str, mode: str) -> dict:
    """TeXML's answering machine detection fields for an outbound call (Telnyx's "TeXML Answering Machine
    Detection", asynchronous mode): `mode` is Enable (decide fast) or DetectMessageEnd (after the beep)."""
    base = public_url if "://" in public_url else f"https://{public_url}"
    listen_ms = DETECTION_MS.get(mode, DETECTION_MS["Enable"])
    return {"MachineDetection": mode, "MachineDetectionTimeout": listen_ms,
            "AsyncAmd": True, "AsyncAmdStatusCallback": f"{base.rstrip('/')}{AMD_PATH}",
            "AsyncAmdStatusCallbackMethod": "POST"}


def dial(to: str, pipeline: str, pipelines: Collection[str], from_: str | None = None,
         environ: Mapping[str, str] | None = None, machine_detection: str | None = None,
         codec: wire.Codec = wire.PCMU) -> PlacedCall:
    """Place an outbound call through the TeXML application TELNYX_CONNECTION_ID whose TeXML streams it
    to our /telnyx/media-stream on `pipeline`. Blocking; raises DialError naming what is wrong."""
    environ = os.environ if environ is None else environ
    from_ = from_ or environ.get(FROM_NUMBER_ENV) or ""
    check_request(to, from_, pipeline, pipelines)
    missing = missing_env(environ, API_KEY_ENV, CONNECTION_ID_ENV)
    credentials = missing and f"Telnyx settings missing: set {missing} (the TeXML application's id)"
    public_url = require_settings(environ, from_, FROM_NUMBER_ENV, credentials,
                                  f"the call can reach {wire.STREAM_PATH}")
    url = wire.stream_url(public_url, "", None, environ.get(STREAM_TOKEN_ENV))
    parameters = {"pipeline": pipeline, "from": from_, "to": to}
    detection = amd_body(public_url, machine_detection) if machine_detection else {}
    if detection:
        parameters[WAIT_PARAMETER] = str(detection["MachineDetectionTimeout"] / 1000 + VERDICT_MARGIN_S)
    texml = wire.connect_texml(url, parameters, codec)
    client = telnyx.Telnyx(**_client_options(environ))
    try:
        # the SDK's connection-id call takes no detection fields by name: they go as its extra body
        placed = client.texml.calls.create(environ[CONNECTION_ID_ENV], from_=from_, to=to, texml=texml,
                                           extra_body=detection or None)
    except telnyx.APIStatusError as exc:
        raise DialRefused(f"Telnyx refused the call: {describe(exc)}") from None
    except (telnyx.APIError, httpx.HTTPError) as exc:
        raise DialRefused(describe(exc)) from None
    finally:
        client.close()
    log.info("placed call %s to %s from %s on pipeline %r through Telnyx%s", placed.call_sid, to, from_,
             pipeline, f" (machine detection: {machine_detection})" if machine_detection else "")
    return PlacedCall(placed.call_sid, to, from_, pipeline, "telnyx")
