"""The Plivo carrier: its link and its routes.

POST /plivo/answer     the answer URL: Plivo XML `<Stream bidirectional="true">` to /plivo/stream, with
                       the routed pipeline, the caller's and called numbers and a token in the stream URL
                       (or, when the server is full or draining, `<Speak>` its busy message)
WS   /plivo/stream     Plivo Audio Streaming (wire.py), one call per connection
POST /plivo/transfer   the XML a transferred call is sent to: `<Dial>` the target
POST /plivo/amd        the machine_detection_url of a call we placed with answering machine detection:
                       Plivo posts `Machine=true` when it hears a machine (and nothing for a person)

With PLIVO_AUTH_TOKEN set, the webhooks must carry Plivo's V3 signature and the socket our token
(security.py); refused with 403 / close code 1008 and a logged reason otherwise. Hang-up and transfer go
through the REST API (rest.py) when PLIVO_AUTH_ID is set too; closing the stream ends the call either way
(the XML hangs up once the stream is gone).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from switchboard.core.carrier import (
    ID_CHARS,
    NUMBER_CHARS,
    BadFrame,
    Connection,
    InboundEvent,
    Start,
    caller_text,
)
from switchboard.core.verdicts import ANSWERED_BY, WAIT_PARAMETER, MachineVerdicts
from switchboard.telephony.base import ServeStream, WebSocketSender, external_url, peer
from switchboard.telephony.plivo import wire
from switchboard.telephony.plivo.rest import AUTH_TOKEN_ENV, PUBLIC_URL_ENV, PlivoRest
from switchboard.telephony.plivo.security import TOKEN_PARAM, PlivoSignatures

log = logging.getLogger("switchboard.server")

XML = "application/xml"


class PlivoLink:
    """The call's way back to Plivo: playAudio (μ-law, 20 ms a message), checkpoints, clearAudio."""

    holds_ms = 0  # every 20 ms frame goes out as it comes
    wideband_rate = None  # μ-law at 8 kHz

    def __init__(self, websocket: WebSocket, stream_id: str, call_uuid: str = "",
                 rest: PlivoRest | None = None, transfer_url: Callable[[str], str] | None = None) -> None:
        self.sender = WebSocketSender(websocket)
        self.stream_id, self.call_uuid = stream_id, call_uuid
        self._play_audio = wire.PlayAudioMessages(stream_id)
        self.rest = rest  # with credentials, hang-up and transfer go through Plivo's REST API
        self.transfer_url = transfer_url  # target -> our /plivo/transfer URL for it

    async def send_audio(self, pcm: np.ndarray) -> None:
        await self.sender.send(self._play_audio(pcm))

    async def send_mark(self, name: str) -> None:
        await self.sender.send(wire.checkpoint_message(self.stream_id, name))

    async def send_clear(self) -> None:
        await self.sender.send(wire.clear_message(self.stream_id))

    @property
    def transfers(self) -> bool:
        """A live call is sent to new XML through the REST API: it needs the credentials."""
        return self.rest is not None and bool(self.call_uuid) and self.transfer_url is not None

    async def transfer(self, target: str) -> bool:
        """Send the call to `<Dial>` `target` (its stream ends), then close the stream. False (stream
        left open) if Plivo did not take it."""
        if not self.transfers:
            return False
        assert self.rest is not None and self.transfer_url is not None
        if not await self.rest.transfer(self.call_uuid, self.transfer_url(target)):
            return False
        await self.sender.close()
        return True

    async def hang_up(self) -> None:
        """End the call through the REST API when we can, then close the stream either way (the
        answer XML's `<Hangup/>` follows the stream)."""
        if self.rest is not None and self.call_uuid:
            await self.rest.hang_up(self.call_uuid)
        await self.sender.close()


def signature_checker(insecure_dev: bool = False) -> PlivoSignatures | None:
    """The Plivo checks, or None when they are off (the carrier's `open_routes` says so)."""
    token = os.environ.get(AUTH_TOKEN_ENV)
    return PlivoSignatures(token) if token and not insecure_dev else None


def _websocket_base(public_url: str | None, headers: Mapping[str, str], scheme: str) -> str:
    """wss://host (or ws:// for a plain-http request) for the socket Plivo should open."""
    base = external_url("", "", headers, scheme, public_url)
    return "wss" + base[len("https"):] if base.startswith("https") else "ws" + base[len("http"):]


class PlivoCarrier:
    """Plivo's routes. `numbers` routes a called number to a pipeline; others get `default_pipeline`."""

    name = "plivo"

    def __init__(self, numbers: Mapping[str, str], default_pipeline: str, insecure_dev: bool = False,
                 busy: Callable[[str], str | None] | None = None,
                 verdicts: MachineVerdicts | None = None) -> None:
        self.numbers, self.default_pipeline, self.busy = numbers, default_pipeline, busy
        self.verdicts = verdicts or MachineVerdicts()
        self.checker = signature_checker(insecure_dev)
        why = "--insecure-dev" if insecure_dev else f"{AUTH_TOKEN_ENV} is not set"
        self.open_routes = [f"/plivo/answer, /plivo/stream, /plivo/amd ({why})"] if not self.checker else []
        self.rest = PlivoRest.from_env()

    def routes(self, serve: ServeStream) -> list[BaseRoute]:
        async def stream(websocket: WebSocket) -> None:
            query = dict(websocket.query_params)
            if self.checker is not None:
                problem = self.checker.stream_problem(query)
                if problem:
                    log.warning("plivo/stream: rejected a connection from %s: %s", peer(websocket), problem)
                    await websocket.close(code=1008)  # before accept: the upgrade is refused (HTTP 403)
                    return
            await websocket.accept()
            base = external_url("", "", websocket.headers, "https", os.environ.get(PUBLIC_URL_ENV))

            def transfer_url(target: str) -> str:
                return f"{base}/plivo/transfer?{urlencode({'target': target})}"

            def link(start: Start) -> PlivoLink:
                return PlivoLink(websocket, start.stream_sid, start.call_sid, self.rest, transfer_url)

            await serve(websocket, Connection(self.name, self._parser(query), link))

        return [
            Route("/plivo/answer", self.answer, methods=["GET", "POST"]),
            WebSocketRoute("/plivo/stream", stream),
            Route("/plivo/transfer", self.transfer_xml, methods=["GET", "POST"]),
            Route("/plivo/amd", self.machine_detection, methods=["GET", "POST"]),
        ]

    def _parser(self, query: Mapping[str, str]) -> Callable[[str | bytes], InboundEvent]:
        """The stream's parser: `start` gets the call's pipeline and numbers from the (token-checked)
        stream URL, and must be the call the URL was made for."""
        call = query.get("call", "")
        parameters = {key: caller_text(query[key], NUMBER_CHARS)
                      for key in ("pipeline", "from", "to", WAIT_PARAMETER, ANSWERED_BY) if query.get(key)}

        def parse(raw: str | bytes) -> InboundEvent:
            event = wire.parse(raw)
            if isinstance(event, Start):
                if self.checker is not None and event.call_sid != call:
                    raise BadFrame(f"start.callId {event.call_sid!r} is not the call this stream was opened "
                                   f"for ({call!r})")
                event.custom_parameters = {**event.custom_parameters, **parameters}
                event.from_number, event.to_number = parameters.get("from", ""), parameters.get("to", "")
            return event

        return parse

    async def _verified(self, request: Request, where: str) -> tuple[dict[str, str], Response | None]:
        """The request's parameters, and a 403 to send instead when its signature is wrong."""
        params = dict(request.query_params) if request.method == "GET" else {
            key: str(value) for key, value in (await request.form()).items()}
        if self.checker is None:
            return params, None
        url = external_url(request.url.path, request.url.query, request.headers, request.url.scheme,
                           os.environ.get(PUBLIC_URL_ENV))
        signed = {} if request.method == "GET" else params
        problem = self.checker.webhook_problem(request.method, url, signed, request.headers)
        if problem:
            client = request.client.host if request.client else "?"
            log.warning("%s: rejected a request from %s: %s", where, client, problem)
            return params, Response("invalid Plivo signature", status_code=403, media_type="text/plain")
        return params, None

    async def answer(self, request: Request) -> Response:
        params, refused = await self._verified(request, "plivo/answer")
        if refused is not None:
            return refused
        call_uuid = params.get("CallUUID", "")
        busy = self.busy(self.name) if self.busy is not None else None
        if busy is not None:
            log.info("incoming call %s: refused, the server is busy", call_uuid)
            return Response(wire.busy_xml(busy), media_type=XML)
        called, caller = _number(params.get("To")), _number(params.get("From"))
        # an outbound call we placed names its pipeline in the answer URL (rest.dial)
        pipeline = request.query_params.get("pipeline") or self.numbers.get(called)
        if pipeline is None:
            log.log(logging.WARNING if self.numbers else logging.INFO,
                    "incoming call %s: no route for the called number %r in numbers:, using pipeline %r",
                    call_uuid, called, self.default_pipeline)
        query = {"call": call_uuid, "pipeline": pipeline or self.default_pipeline, "from": caller,
                 "to": called, **_detection(request.query_params, params)}
        query_string = self.checker.stream_query(query) if self.checker else urlencode(query)
        base = _websocket_base(os.environ.get(PUBLIC_URL_ENV), request.headers, request.url.scheme)
        log.info("incoming call %s from %s to %s", call_uuid, caller, called)
        return Response(wire.stream_xml(f"{base}/plivo/stream?{query_string}"), media_type=XML)

    async def machine_detection(self, request: Request) -> Response:
        """Plivo heard a machine on `CallUUID` (`Machine=true`, `Event=MachineDetection`)."""
        params, refused = await self._verified(request, "plivo/amd")
        if refused is not None:
            return refused
        call_uuid = caller_text(params.get("CallUUID", ""), ID_CHARS)
        answered_by = _answered_by(params.get("Machine"))
        log.info("Plivo call %s: answered by %s (machine detection)", call_uuid, answered_by or "?")
        if answered_by:
            self.verdicts.record(call_uuid, answered_by)
        return Response(status_code=204)

    async def transfer_xml(self, request: Request) -> Response:
        _params, refused = await self._verified(request, "plivo/transfer")
        if refused is not None:
            return refused
        target = request.query_params.get("target", "")
        return Response(wire.dial_xml(target), media_type=XML)


def _answered_by(machine: object) -> str:
    """Plivo's `Machine` in Twilio's words (Plivo detects no beep: a machine is `machine_start`)."""
    text = str(machine or "").lower()
    return "machine_start" if text == "true" else "human" if text == "false" else ""


def _detection(query: Mapping[str, str], params: Mapping[str, str]) -> dict[str, str]:
    """What the stream needs of an outbound call's machine detection: how long to wait for the verdict
    (our dialer's answer URL says), or the verdict when the answer request already says a machine
    (`Machine=true`; a `false` there may only mean Plivo is still listening)."""
    if _answered_by(params.get("Machine")) == "machine_start":
        return {ANSWERED_BY: "machine_start"}
    wait = query.get(WAIT_PARAMETER, "")
    return {WAIT_PARAMETER: wait[:8]} if wait else {}


def _number(value: object) -> str:
    """A number as Plivo sends it (digits, country code first, no "+") in E.164, as `numbers:` keys are."""
    text = caller_text(value or "", NUMBER_CHARS).strip()
    return f"+{text}" if text.isdigit() else text


__all__ = ["TOKEN_PARAM", "PlivoCarrier", "PlivoLink"]
