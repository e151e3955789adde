"""The Vonage carrier's link and routes (the package's docstring says what each route does)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from switchboard.core.carrier import ID_CHARS, NUMBER_CHARS, Connection, InboundEvent, Start, caller_text
from switchboard.core.verdicts import WAIT_PARAMETER, MachineVerdicts
from switchboard.telephony.base import ServeStream, WebSocketSender, external_url, peer
from switchboard.telephony.vonage import VonageConfig, wire
from switchboard.telephony.vonage.rest import PUBLIC_URL_ENV, VonageRest
from switchboard.telephony.vonage.security import VonageSignatures

log = logging.getLogger("switchboard.server")

SIGNATURE_SECRET_ENV = "VONAGE_SIGNATURE_SECRET"


class VonageLink:
    """The call's way back to Vonage: binary 20 ms PCM frames, notify (our marks), clear."""

    def __init__(self, websocket: WebSocket, uuid: str, sample_rate: int, rest: VonageRest | None = None,
                 our_number: str = "") -> None:
        self.sender = WebSocketSender(websocket)
        self.uuid, self.rest, self.our_number = uuid, rest, our_number
        self.framer = wire.Framer(sample_rate)
        self.holds_ms = self.framer.holds_ms  # at 16 kHz, up to one partial frame waits for the next
        self.wideband_rate: int | None = None  # 16 kHz L16 is brought to 8 kHz (a PSTN call is narrowband)

    async def send_audio(self, pcm: np.ndarray) -> None:
        for frame in self.framer.push(pcm):
            await self.sender.send_bytes(frame)

    async def send_mark(self, name: str) -> None:
        for frame in self.framer.flush():
            await self.sender.send_bytes(frame)
        await self.sender.send(wire.notify_message(name))

    async def send_clear(self) -> None:
        self.framer.clear()
        await self.sender.send(wire.clear_message())

    @property
    def transfers(self) -> bool:
        """A live call is transferred to a new NCCO through the Voice API: it needs the credentials."""
        return self.rest is not None and bool(self.uuid)

    async def transfer(self, target: str) -> bool:
        if self.rest is None or not self.uuid:
            return False
        if not await self.rest.transfer(self.uuid, target, self.our_number):
            return False
        await self.sender.close()
        return True

    async def hang_up(self) -> None:
        """End the call through the Voice API when we can, then close the socket either way."""
        if self.rest is not None and self.uuid:
            await self.rest.hang_up(self.uuid)
        await self.sender.close()


def signature_checker(insecure_dev: bool = False) -> VonageSignatures | None:
    """The Vonage checks, or None when they are off (the carrier's `open_routes` says so)."""
    secret = os.environ.get(SIGNATURE_SECRET_ENV)
    return VonageSignatures(secret) if secret and not insecure_dev else None


def why_open(insecure_dev: bool) -> list[str]:
    why_off = "--insecure-dev" if insecure_dev else f"{SIGNATURE_SECRET_ENV} is not set"
    return [f"/vonage/answer, /vonage/stream, /vonage/event ({why_off}; turn signed webhooks on in the "
            "Vonage application)"]


def _number(value: object) -> str:
    """A number as Vonage sends it (digits, country code first) in E.164, as `numbers:` keys are."""
    text = caller_text(value or "", NUMBER_CHARS).strip()
    return f"+{text}" if text.isdigit() else text


class VonageCarrier:
    """Vonage's routes. `numbers` routes a called number to a pipeline; others get `default_pipeline`."""

    name = "vonage"

    def __init__(self, config: VonageConfig, numbers: Mapping[str, str], default_pipeline: str,
                 insecure_dev: bool = False, busy: Callable[[str], str | None] | None = None,
                 verdicts: MachineVerdicts | None = None) -> None:
        self.sample_rate = config.sample_rate
        self.verdicts = verdicts or MachineVerdicts()
        self.numbers, self.default_pipeline, self.busy = numbers, default_pipeline, busy
        self.checker = signature_checker(insecure_dev)
        self.open_routes = why_open(insecure_dev) if self.checker is None else []
        self.rest = VonageRest.from_env()

    def routes(self, serve: ServeStream) -> list[BaseRoute]:
        async def stream(websocket: WebSocket) -> None:
            claims: dict = {}
            if self.checker is not None:
                claims, problem = self.checker.stream_claims(websocket.headers.get("authorization"))
                if problem:
                    log.warning("vonage/stream: rejected a connection from %s: %s", peer(websocket), problem)
                    await websocket.close(code=1008)  # before accept: the upgrade is refused (HTTP 403)
                    return
            await websocket.accept()

            def link(start: Start) -> VonageLink:
                return VonageLink(websocket, start.call_sid, start.sample_rate, self.rest, start.to_number)

            await serve(websocket, Connection(self.name, self._parser(claims), link))

        return [
            Route("/vonage/answer", self.answer, methods=["GET", "POST"]),
            Route("/vonage/event", self.event, methods=["GET", "POST"]),
            WebSocketRoute("/vonage/stream", stream),
        ]

    def _parser(self, claims: Mapping[str, object]) -> Callable[[str | bytes], InboundEvent]:
        """The socket's parser; with a verified token, the call, pipeline and numbers come from it (the
        endpoint's headers in `websocket:connected` are only the caller's word when the route is open)."""
        decoder = wire.Decoder()
        keys = ("call", "pipeline", "from", "to", WAIT_PARAMETER)
        trusted = {key: caller_text(claims[key], NUMBER_CHARS) for key in keys
                   if isinstance(claims.get(key), str)}

        def parse(raw: str | bytes) -> InboundEvent:
            event = decoder.parse(raw)
            if isinstance(event, Start) and trusted:
                event.call_sid = event.stream_sid = trusted.get("call") or event.call_sid
                event.custom_parameters = {**event.custom_parameters, **trusted}
                event.custom_parameters.pop("call", None)
                event.from_number, event.to_number = trusted.get("from", ""), trusted.get("to", "")
            return event

        return parse

    async def _verified(self, request: Request, where: str) -> tuple[dict[str, str], Response | None]:
        """The webhook's fields (query for GET, JSON body for POST), and a 403 to send instead when its
        signature is wrong."""
        body = await request.body()
        fields: dict[str, str] = dict(request.query_params)
        if request.method == "POST" and body:
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if isinstance(data, dict):
                fields.update({key: str(value) for key, value in data.items()
                               if isinstance(value, (str, int))})
        if self.checker is None:
            return fields, None
        problem = self.checker.webhook_problem(request.headers.get("authorization"), body)
        if problem:
            client = request.client.host if request.client else "?"
            log.warning("%s: rejected a request from %s: %s", where, client, problem)
            return fields, Response("invalid Vonage signature", status_code=403, media_type="text/plain")
        return fields, None

    async def answer(self, request: Request) -> Response:
        fields, refused = await self._verified(request, "vonage/answer")
        if refused is not None:
            return refused
        uuid = caller_text(fields.get("uuid", ""), 128)
        busy = self.busy(self.name) if self.busy is not None else None
        if busy is not None:
            log.info("incoming call %s: refused, the server is busy", uuid)
            return JSONResponse(wire.busy_ncco(busy))
        called, caller = _number(fields.get("to")), _number(fields.get("from"))
        # an outbound call we placed names its pipeline in the answer URL (rest.dial)
        pipeline = request.query_params.get("pipeline") or self.numbers.get(called)
        if pipeline is None:
            log.log(logging.WARNING if self.numbers else logging.INFO,
                    "incoming call %s: no route for the called number %r in numbers:, using pipeline %r",
                    uuid, called, self.default_pipeline)
        headers = {"call": uuid, "pipeline": pipeline or self.default_pipeline, "from": caller, "to": called}
        wait = request.query_params.get(WAIT_PARAMETER, "")  # an outbound call with machine detection
        if wait:
            headers[WAIT_PARAMETER] = wait[:8]
        token = self.checker.stream_token(headers) if self.checker is not None else None
        base = external_url("/vonage/stream", "", request.headers, request.url.scheme,
                            os.environ.get(PUBLIC_URL_ENV))
        url = ("wss" + base[len("https"):]) if base.startswith("https") else ("ws" + base[len("http"):])
        log.info("incoming call %s from %s to %s", uuid, caller, called)
        return JSONResponse(wire.connect_ncco(url, self.sample_rate, headers, called, token))

    async def event(self, request: Request) -> Response:
        fields, refused = await self._verified(request, "vonage/event")
        if refused is not None:
            return refused
        uuid = caller_text(fields.get("uuid") or fields.get("call_uuid") or "?", ID_CHARS)
        status = caller_text(fields.get("status", "?"), 40)
        log.info("vonage event: call %s is %s", uuid, status)
        answered_by = _answered_by(status, fields.get("sub_state", ""))
        if answered_by:  # advanced machine detection's verdict
            self.verdicts.record(uuid, answered_by)
        return Response(status_code=204)


def _answered_by(status: str, sub_state: str) -> str:
    """A `human` / `machine` event in Twilio's words (beep_start: the greeting ended with a beep)."""
    if status == "human":
        return "human"
    if status != "machine":
        return ""
    beep = {"beep_start": "machine_end_beep", "beep_timeout": "machine_end_other"}
    return beep.get(sub_state, "machine_start")
