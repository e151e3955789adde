"""Telnyx's REST API through the official `telnyx` SDK: end a call, hand it to another number, place one.

Credentials and settings come from the environment: TELNYX_API_KEY (bearer); TELNYX_CONNECTION_ID, the
TeXML application that places outbound calls; TELNYX_FROM_NUMBER, the default caller id; PUBLIC_URL,
where Telnyx reaches our media WebSocket; TELNYX_API_BASE replaces https://api.telnyx.com/v2 (a test
fake, a proxy).

- hang-up: Call Control `POST /calls/{call_control_id}/actions/hangup` (a TeXML call's CallSid is its
  call_control_id); 422 with error 90018 means the call had already ended;
- transfer: TeXML `POST /texml/Accounts/{account}/Calls/{call}` with new TeXML (`<Dial>`), like Twilio's
  redirect: the stream ends and the call goes on to the target;
- outbound: TeXML `POST /texml/calls/{connection_id}` with inline TeXML that streams to us.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping

import httpx
import telnyx

from switchboard.telephony.dialing import (
    DialError,
    DialNotConfigured,
    DialRefused,
    PlacedCall,
    request_problems,
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

    async def redirect(self, account_sid: str, call_sid: str, texml: str) -> bool:
        """Give the live call new TeXML (a transfer's `<Dial>`): its media stream ends. True if Telnyx
        took it; False if the request failed (logged)."""
        try:
            await self._client.texml.accounts.calls.update(call_sid, account_sid=account_sid, texml=texml)
        except (telnyx.APIError, httpx.HTTPError) as exc:
            log.warning("call %s: REST redirect failed: %s", call_sid, describe(exc))
            return False
        return True


def dial(to: str, pipeline: str, pipelines: Collection[str], from_: str | None = None,
         environ: Mapping[str, str] | None = None, machine_detection: str | None = None,
         codec: wire.Codec = wire.PCMU) -> PlacedCall:
    """Place an outbound call through the TeXML application TELNYX_CONNECTION_ID whose TeXML streams it
    to our /telnyx/media-stream on `pipeline`. Blocking; raises DialError naming what is wrong."""
    environ = os.environ if environ is None else environ
    from_ = from_ or environ.get(FROM_NUMBER_ENV) or ""
    problems = request_problems(to, from_, pipeline, pipelines)
    if machine_detection:
        problems.append("answering machine detection is not wired for Telnyx here (Twilio only): dial "
                        "without it")
    if problems:
        raise DialError("; ".join(problems))
    missing = [name for name in (API_KEY_ENV, CONNECTION_ID_ENV) if not environ.get(name)]
    if missing:
        problems.append(f"Telnyx settings missing: set {' and '.join(missing)} (the TeXML application's id)")
    if not from_:
        problems.append(f"no caller id: pass 'from' (--from) or set {FROM_NUMBER_ENV}")
    public_url = environ.get(PUBLIC_URL_ENV)
    if not public_url:
        problems.append(f"set {PUBLIC_URL_ENV} to this server's public https address, so the call can reach "
                        f"{wire.STREAM_PATH}")
    if problems:
        raise DialNotConfigured("; ".join(problems))
    assert public_url
    url = wire.stream_url(public_url, "", None, environ.get(STREAM_TOKEN_ENV))
    texml = wire.connect_texml(url, {"pipeline": pipeline, "from": from_, "to": to}, codec)
    client = telnyx.Telnyx(**_client_options(environ))
    try:
        placed = client.texml.calls.create(environ[CONNECTION_ID_ENV], from_=from_, to=to, texml=texml)
    except telnyx.APIStatusError as exc:
        raise DialRefused(f"Telnyx refused the call: {describe(exc)}") from None
    except (telnyx.APIError, httpx.HTTPError) as exc:
        raise DialRefused(describe(exc)) from None
    finally:
        client.close()
    log.info("placed call %s to %s from %s on pipeline %r through Telnyx", placed.call_sid, to, from_,
             pipeline)
    return PlacedCall(placed.call_sid, to, from_, pipeline, "telnyx")
