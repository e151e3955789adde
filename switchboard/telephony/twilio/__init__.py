"""The Twilio carrier: its section of pipeline.yaml, its link, and its two routes.

POST /incoming-call   the voice webhook: TwiML that connects the call to /media-stream, then hangs up
                      (or, when the server is full or draining, says its busy message and hangs up)
WS   /media-stream    Media Streams (wire.py), one call per connection

With TWILIO_AUTH_TOKEN set, both must carry Twilio's signature of the URL it used (signature.py; 403 /
close code 1008 otherwise). The webhook passes the routed pipeline and the caller's and called numbers
as `<Parameter>`s, which come back in `start.customParameters`. Hang-up goes through the REST API
(rest.py) when credentials are set, and closing the stream ends the call either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from switchboard.core.carrier import Connection, Start
from switchboard.core.settings import Strict
from switchboard.telephony.base import ServeStream, WebSocketSender, peer
from switchboard.telephony.twilio import wire
from switchboard.telephony.twilio.rest import AUTH_TOKEN_ENV, PUBLIC_URL_ENV, TwilioRest
from switchboard.telephony.twilio.signature import SIGNATURE_HEADER, SignatureChecker, signed_url

log = logging.getLogger("switchboard.server")


class TwilioConfig(Strict):
    """Serving Twilio. Credentials come from the environment (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)."""

    # check X-Twilio-Signature on the webhook and the media WebSocket whenever TWILIO_AUTH_TOKEN is set
    validate_signatures: bool = True


class TwilioLink:
    """The call's way back to Twilio: our audio, marks, clear and hang-up as Media Streams messages."""

    holds_ms = 0  # every 20 ms frame goes out as it comes
    wideband_rate = None  # μ-law at 8 kHz: nothing wider to hand on

    def __init__(
        self, websocket: WebSocket, stream_sid: str, call_sid: str = "", rest: TwilioRest | None = None
    ) -> None:
        self.sender = WebSocketSender(websocket)
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.rest = rest  # with credentials, hang-up goes through Twilio's REST API
        self._media = wire.MediaMessages(stream_sid)

    async def send_audio(self, pcm: np.ndarray) -> None:
        await self.sender.send(self._media(pcm))

    async def send_mark(self, name: str) -> None:
        await self.sender.send(wire.mark_message(self.stream_sid, name))

    async def send_clear(self) -> None:
        await self.sender.send(wire.clear_message(self.stream_sid))

    @property
    def transfers(self) -> bool:
        """A live call is redirected through the REST API: it needs the credentials."""
        return self.rest is not None and bool(self.call_sid)

    async def transfer(self, target: str) -> bool:
        """Redirect the call to `<Dial>` `target` (the media stream ends), then close the stream. False
        (stream left open) if Twilio did not take it."""
        if self.rest is None or not self.call_sid:
            return False
        if not await self.rest.redirect(self.call_sid, wire.dial_twiml(target)):
            return False
        await self.sender.close()
        return True

    async def hang_up(self) -> None:
        """End the call through the REST API when we can, then close the stream either way.

        Closing alone also ends it: Twilio continues with the TwiML after <Connect>, our <Hangup/>."""
        if self.rest is not None and self.call_sid:
            await self.rest.hang_up(self.call_sid)  # logs a failure; closing the stream is the fallback
        await self.sender.close()


def signature_checker(validate_signatures: bool, insecure_dev: bool = False) -> SignatureChecker | None:
    """The Twilio signature check, or None (with a loud warning) when it is off."""
    token = os.environ.get(AUTH_TOKEN_ENV)
    why_off = (
        "--insecure-dev" if insecure_dev
        else "twilio.validate_signatures is false in the config" if not validate_signatures
        else f"{AUTH_TOKEN_ENV} is not set" if not token
        else None
    )
    if why_off is None and token:
        return SignatureChecker(token)
    log.warning("!!! INSECURE: Twilio request signatures are NOT checked (%s): anyone who finds this "
                "server can place calls into it. Set %s and drop --insecure-dev in production. !!!",
                why_off, AUTH_TOKEN_ENV)
    return None


class TwilioCarrier:
    """Twilio's routes. `numbers` routes a called number to a pipeline; others get `default_pipeline`."""

    name = "twilio"

    def __init__(self, config: TwilioConfig, numbers: Mapping[str, str], default_pipeline: str,
                 insecure_dev: bool = False, busy: Callable[[str], str | None] | None = None) -> None:
        self.open_routes: list[str] = []  # signatures off: its own warning, louder (the default carrier)
        self.numbers, self.default_pipeline = numbers, default_pipeline
        # busy(carrier) -> what a caller hears when the server can't take a call now (full, draining), or None
        self.busy = busy
        self.checker = signature_checker(config.validate_signatures, insecure_dev)
        self.rest = TwilioRest.from_env()

    def routes(self, serve: ServeStream) -> list[BaseRoute]:
        async def media_stream(websocket: WebSocket) -> None:
            await websocket.accept()
            if self.checker is not None:
                signed = signed_url(websocket.url.path, websocket.url.query, websocket.headers,
                                    websocket.url.scheme, os.environ.get(PUBLIC_URL_ENV), websocket=True)
                problem = self.checker.problem(signed, {}, websocket.headers.get(SIGNATURE_HEADER))
                if problem:
                    log.warning("media-stream: rejected a connection from %s: %s", peer(websocket), problem)
                    await websocket.close(code=1008, reason="invalid Twilio signature")
                    return

            def link(start: Start) -> TwilioLink:
                return TwilioLink(websocket, start.stream_sid, start.call_sid, self.rest)

            await serve(websocket, Connection(self.name, wire.parse, link))

        return [
            Route("/incoming-call", self.incoming_call, methods=["POST"]),
            WebSocketRoute("/media-stream", media_stream),
        ]

    async def incoming_call(self, request: Request) -> Response:
        form = await request.form()
        if self.checker is not None:
            signed = signed_url(request.url.path, request.url.query, request.headers, request.url.scheme,
                                os.environ.get(PUBLIC_URL_ENV))
            problem = self.checker.problem(signed, form, request.headers.get(SIGNATURE_HEADER))
            if problem:
                client = request.client.host if request.client else "?"
                log.warning("incoming-call: rejected a request from %s: %s", client, problem)
                return Response("invalid Twilio signature", status_code=403, media_type="text/plain")
        busy = self.busy(self.name) if self.busy is not None else None
        if busy is not None:
            log.info("incoming call %s: refused, the server is busy", form.get("CallSid"))
            return Response(wire.busy_twiml(busy), media_type="application/xml")
        host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
        proto = request.headers.get("x-forwarded-proto") or request.url.scheme
        url = wire.stream_url(os.environ.get(PUBLIC_URL_ENV), host, proto)
        called = str(form.get("To") or "")
        # an outbound call we placed names its pipeline in the URL (rest.dial with machine detection)
        pipeline = request.query_params.get("pipeline") or self.numbers.get(called)
        if pipeline is None:
            log.log(logging.WARNING if self.numbers else logging.INFO,
                    "incoming call %s: no route for the called number %r in numbers:, using pipeline %r",
                    form.get("CallSid"), called, self.default_pipeline)
        parameters = {
            "pipeline": pipeline or self.default_pipeline,
            "from": str(form.get("From") or ""),
            "to": str(form.get("To") or ""),
            "answered_by": str(form.get("AnsweredBy") or "")[:32],  # answering machine detection's verdict
        }
        answered = f" answered by {parameters['answered_by']}" if parameters["answered_by"] else ""
        log.info("incoming call %s from %s to %s%s", form.get("CallSid"), parameters["from"],
                 parameters["to"], answered)
        return Response(wire.connect_twiml(url, parameters), media_type="application/xml")
