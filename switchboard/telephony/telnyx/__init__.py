"""The Telnyx carrier: its section of pipeline.yaml, its link, and its two routes.

POST /telnyx/incoming-call   the TeXML application's voice URL: TeXML that connects the call to our media
                             WebSocket (bidirectional RTP in the configured codec), routed by `numbers:`,
                             then hangs up; or, when the server is full or draining, the busy message
WS   /telnyx/media-stream    Telnyx media streaming (wire.py), one call per connection
POST /telnyx/call-control    a Call Control application's webhook: `call.initiated` (incoming) is answered and
                             streamed (`streaming_start`, bidirectional RTP) to the media socket, with the
                             routed pipeline and the numbers as the stream's custom parameters; or rejected
                             (busy) when the server is full or draining. Other events are logged.
POST /telnyx/amd             TeXML's asynchronous answering machine detection callback (`AnsweredBy`) for
                             a call we placed with it: the verdict its held start waits for

Trust: with TELNYX_PUBLIC_KEY set (the account's base64 Ed25519 key), the webhook must carry Telnyx's
signature (`telnyx-signature-ed25519` over `telnyx-timestamp|body`, the timestamp within 5 minutes;
checked by the `telnyx` SDK), else 403. With TELNYX_STREAM_TOKEN set, the media socket's upgrade must
carry it (the `token` query parameter our TeXML puts in the stream URL, or Telnyx's
`x-telnyx-streaming-auth-token` header), else 403. Either unset: a loud warning at start-up.
Hang-up, transfer, outbound calls and Call Control's answer and streaming go through the REST API (rest.py)
with TELNYX_API_KEY.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl

import numpy as np
from pydantic import model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from switchboard.core.carrier import ID_CHARS, NUMBER_CHARS, Connection, Start, caller_text
from switchboard.core.settings import Strict
from switchboard.core.verdicts import MachineVerdicts
from switchboard.telephony.base import ServeStream, WebSocketSender, peer
from switchboard.telephony.telnyx import wire

if TYPE_CHECKING:
    from switchboard.telephony.telnyx.rest import TelnyxRest

log = logging.getLogger("switchboard.server")

PUBLIC_KEY_ENV = "TELNYX_PUBLIC_KEY"
STREAM_TOKEN_ENV = "TELNYX_STREAM_TOKEN"
PUBLIC_URL_ENV = "PUBLIC_URL"
TOKEN_HEADER = "x-telnyx-streaming-auth-token"
AMD_PATH = "/telnyx/amd"  # rest.AMD_PATH (rest.py imports the SDK: not imported here)
CALL_CONTROL_PATH = "/telnyx/call-control"


class TelnyxConfig(Strict):
    """Serving Telnyx: the stream's codec. Keys come from the environment (TELNYX_PUBLIC_KEY,
    TELNYX_STREAM_TOKEN, TELNYX_API_KEY)."""

    codec: Literal["PCMU", "PCMA", "L16"] = "PCMU"  # G.711 μ-law / A-law at 8 kHz, or linear PCM
    sample_rate: Literal[8000, 16000] = 8000  # 16000 with L16 only

    @model_validator(mode="after")
    def _rate_fits_codec(self) -> TelnyxConfig:
        if self.codec != "L16" and self.sample_rate != 8000:
            raise ValueError(f"{self.codec} runs at 8000 Hz; use codec: L16 for 16000")
        return self

    def stream_codec(self) -> wire.Codec:
        return wire.Codec(self.codec, self.sample_rate)


class TelnyxLink:
    """The call's way back to Telnyx: our audio in the stream's codec, marks, clear, hang-up, transfer."""

    holds_ms = 0  # every 20 ms frame goes out as it comes (Telnyx takes 20 ms to 30 s a message)
    wideband_rate = None  # its decoder brings L16 at 16 kHz to 8 kHz too (a PSTN call is narrowband)


    def __init__(self, websocket: WebSocket, start: Start, codec: wire.Codec,
                 rest: TelnyxRest | None = None) -> None:
        self.sender = WebSocketSender(websocket)
        self.call_sid, self.account_sid = start.call_sid, start.account_sid
        self.encoder = wire.Encoder(codec)
        self.rest = rest  # rest.TelnyxRest with TELNYX_API_KEY, else None

    async def send_audio(self, pcm: np.ndarray) -> None:
        await self.sender.send(wire.media_message(self.encoder.encode(pcm)))

    async def send_mark(self, name: str) -> None:
        await self.sender.send(wire.mark_message(name))

    async def send_clear(self) -> None:
        self.encoder.clear()
        await self.sender.send(wire.clear_message())

    @property
    def transfers(self) -> bool:
        """A live call gets new TeXML through the REST API: it needs the key and the call's ids."""
        return self.rest is not None and bool(self.call_sid and self.account_sid)

    async def transfer(self, target: str) -> bool:
        if not self.transfers:
            return False
        if not await self.rest.redirect(self.account_sid, self.call_sid, wire.dial_texml(target)):  # type: ignore[union-attr]
            return False
        await self.sender.close()
        return True

    async def hang_up(self) -> None:
        """End the call through the REST API when we can, then close the stream either way (the TeXML
        after `<Connect>` is our `<Hangup/>`)."""
        if self.rest is not None and self.call_sid:
            await self.rest.hang_up(self.call_sid)
        await self.sender.close()


def signature_problem(body: bytes, headers: Mapping[str, str], public_key: str) -> str | None:
    """None if the webhook carries Telnyx's Ed25519 signature of its body (timestamp within 5 minutes),
    else why not (safe to log). The check is the `telnyx` SDK's."""
    from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

    try:
        verify_webhook_signature(body, headers, public_key)
    except WebhookVerificationError as exc:
        return exc.message
    return None


def _refused(request: Request, body: bytes, where: str) -> Response | None:
    """A 403 (the reason logged) for a webhook without Telnyx's signature while TELNYX_PUBLIC_KEY is set."""
    public_key = os.environ.get(PUBLIC_KEY_ENV)
    problem = signature_problem(body, request.headers, public_key) if public_key else None
    if problem is None:
        return None
    client = request.client.host if request.client else "?"
    log.warning("telnyx %s: rejected a request from %s: %s", where, client, problem)
    return Response("invalid Telnyx signature", status_code=403, media_type="text/plain")


def token_ok(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class TelnyxCarrier:
    """Telnyx's routes. `numbers` routes a called number to a pipeline; others get `default_pipeline`."""

    name = "telnyx"

    def __init__(self, config: TelnyxConfig, numbers: Mapping[str, str], default_pipeline: str,
                 busy: Callable[[str], str | None] | None = None,
                 verdicts: MachineVerdicts | None = None) -> None:
        self.config, self.numbers, self.default_pipeline, self.busy = config, numbers, default_pipeline, busy
        self.verdicts = verdicts or MachineVerdicts()
        self._commands: set[asyncio.Task] = set()  # Call Control answers in flight (after the webhook's 200)
        self.rest: TelnyxRest | None = None
        # the SDK costs ~6 s of CPU to import: at start-up when it will be used, never on a call's path
        if os.environ.get(PUBLIC_KEY_ENV):
            import telnyx.lib.webhook_verification  # noqa: F401
        if os.environ.get("TELNYX_API_KEY"):
            from switchboard.telephony.telnyx.rest import TelnyxRest

            self.rest = TelnyxRest.from_env()
        self.open_routes = [f"{routes} ({env} is not set)" for env, routes in (
            (PUBLIC_KEY_ENV, "/telnyx/incoming-call, /telnyx/call-control, /telnyx/amd"),
            (STREAM_TOKEN_ENV, "/telnyx/media-stream")) if not os.environ.get(env)]

    def routes(self, serve: ServeStream) -> list[BaseRoute]:
        async def media_stream(websocket: WebSocket) -> None:
            expected = os.environ.get(STREAM_TOKEN_ENV)
            given = websocket.headers.get(TOKEN_HEADER) or websocket.query_params.get("token")
            if expected and not token_ok(given, expected):
                log.warning("telnyx: rejected a media connection from %s: %s stream token", peer(websocket),
                            "wrong" if given else "no")
                await websocket.close(code=1008)  # before accept: the upgrade is refused (HTTP 403)
                return
            await websocket.accept()
            decoder = wire.Decoder()

            def link(start: Start) -> TelnyxLink:
                return TelnyxLink(websocket, start, decoder.codec, self.rest)

            await serve(websocket, Connection(self.name, decoder.parse, link))

        return [Route(wire.WEBHOOK_PATH, self.incoming_call, methods=["POST"]),
                WebSocketRoute(wire.STREAM_PATH, media_stream),
                Route(CALL_CONTROL_PATH, self.call_control, methods=["POST"]),
                Route(AMD_PATH, self.machine_detection, methods=["POST"])]

    async def _verified_form(self, request: Request, where: str) -> tuple[dict[str, str], Response | None]:
        """The webhook's form fields, and a 403 to send instead when TELNYX_PUBLIC_KEY is set and the
        request lacks Telnyx's signature."""
        body = await request.body()
        refused = _refused(request, body, where)
        if refused is not None:
            return {}, refused
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)), None

    async def machine_detection(self, request: Request) -> Response:
        """TeXML's AsyncAmdStatusCallback: `CallSid` (the call_control_id) was answered by `AnsweredBy`
        (human, machine_start, machine_end_beep, machine_end_silence, machine_end_other, fax, unknown)."""
        form, refused = await self._verified_form(request, "amd")
        if refused is not None:
            return refused
        call = caller_text(form.get("CallSid", ""), ID_CHARS)
        answered_by = caller_text(form.get("AnsweredBy", ""), 32)
        log.info("Telnyx call %s: answered by %s (machine detection)", call, answered_by or "?")
        self.verdicts.record(call, answered_by)
        return Response(status_code=204)

    async def call_control(self, request: Request) -> Response:
        """A Call Control webhook (`{"data": {"event_type", "payload": {call_control_id, direction, from,
        to, …}}}`, signed as every Telnyx webhook): an incoming `call.initiated` is answered and streamed
        to /telnyx/media-stream in the background (Telnyx wants the webhook answered at once)."""
        body = await request.body()
        refused = _refused(request, body, "call-control")
        if refused is not None:
            return refused
        try:
            data = json.loads(body).get("data") or {}
            event, payload = str(data.get("event_type", "")), data.get("payload") or {}
            call = caller_text(payload.get("call_control_id", ""), ID_CHARS)
        except (ValueError, AttributeError):
            log.warning("telnyx call-control: not a Call Control event: %s", caller_text(body, 80))
            return Response("expected a Call Control event", status_code=400, media_type="text/plain")
        if event != "call.initiated" or payload.get("direction") != "incoming" or not call:
            log.info("telnyx call-control: %s for call %s", caller_text(event, 60) or "?", call or "?")
            return Response(status_code=200)
        if self.rest is None:
            log.error("telnyx call-control: cannot answer call %s: TELNYX_API_KEY is not set", call)
            return Response(status_code=200)
        task = asyncio.create_task(self._answer(call, payload, request))
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)
        return Response(status_code=200)

    async def _answer(self, call: str, payload: Mapping, request: Request) -> None:
        assert self.rest is not None
        if self.busy is not None and self.busy(self.name) is not None:
            log.info("incoming Telnyx call %s: rejected, the server is busy", call)
            await self.rest.reject(call)
            return
        caller = caller_text(payload.get("from", ""), NUMBER_CHARS)
        called = caller_text(payload.get("to", ""), NUMBER_CHARS)
        pipeline = self.numbers.get(called)
        if pipeline is None:
            log.log(logging.WARNING if self.numbers else logging.INFO,
                    "incoming Telnyx call %s: no route for the called number %r in numbers:, using %r",
                    call, called, self.default_pipeline)
        host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
        proto = request.headers.get("x-forwarded-proto")
        url = wire.stream_url(os.environ.get(PUBLIC_URL_ENV), host, proto, None)  # its token goes as a header
        parameters = {"pipeline": pipeline or self.default_pipeline, "from": caller, "to": called}
        log.info("incoming Telnyx call %s (Call Control) from %s to %s", call, caller, called)
        await self.rest.answer_and_stream(call, url, self.config.stream_codec(),
                                          os.environ.get(STREAM_TOKEN_ENV), parameters)

    async def incoming_call(self, request: Request) -> Response:
        form, refused = await self._verified_form(request, "incoming-call")
        if refused is not None:
            return refused
        call = form.get("CallSid", "")[:128]
        busy = self.busy(self.name) if self.busy is not None else None
        if busy is not None:
            log.info("incoming Telnyx call %s: refused, the server is busy", call)
            return Response(wire.busy_texml(busy), media_type="application/xml")
        called = form.get("To", "")
        pipeline = request.query_params.get("pipeline") or self.numbers.get(called)
        if pipeline is None:
            log.log(logging.WARNING if self.numbers else logging.INFO,
                    "incoming Telnyx call %s: no route for the called number %r in numbers:, using %r",
                    call, called, self.default_pipeline)
        host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
        url = wire.stream_url(os.environ.get(PUBLIC_URL_ENV), host, request.headers.get("x-forwarded-proto"),
                              os.environ.get(STREAM_TOKEN_ENV))
        parameters = {"pipeline": pipeline or self.default_pipeline, "from": form.get("From", "")[:64],
                      "to": called[:64], "account_sid": form.get("AccountSid", "")[:128]}
        log.info("incoming Telnyx call %s from %s to %s", call, parameters["from"], parameters["to"])
        return Response(wire.connect_texml(url, parameters, self.config.stream_codec()),
                        media_type="application/xml")
