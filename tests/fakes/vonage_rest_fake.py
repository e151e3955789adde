"""A fake Vonage Voice API, from Vonage's API reference: create a call (`POST /v1/calls`, 201
`{"uuid", "status": "started", "direction": "outbound", "conversation_uuid"}`), modify a call (`PUT
/v1/calls/{uuid}` with `{"action": "hangup"}` or `{"action": "transfer", "destination": {"type": "ncco",
"ncco": […]}}`, 204); 404 with a problem-details body for a call that has ended. Requests must carry
`Authorization: Bearer <JWT>` signed RS256 by the application's private key (checked with its public key).

A call placed with `advanced_machine_detection` {behavior continue | hangup, mode detect | detect_beep
(synchronous: the NCCO runs once the verdict is in) | default (asynchronous), beep_timeout} posts a
human/machine event to its `event_url` ("Voicemail Detection" and the webhook reference: `call_uuid`,
`conversation_uuid`, `status` human | machine, `sub_state` beep_start | beep_timeout when listening for
the beep, `timestamp`), signed like every Vonage webhook: `detection_event`.

The SDK speaks https only: `serving_tls` serves the fake with a self-signed certificate for 127.0.0.1
and points REQUESTS_CA_BUNDLE at it; Switchboard then reaches it with `VONAGE_API_HOST=127.0.0.1:<port>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.vonage_side import signed_jwt


def private_key_pem() -> tuple[str, Any]:
    """A fresh RSA key: (its PEM, its public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, key.public_key()


@dataclass
class Recorded:
    method: str
    path: str
    body: dict[str, Any]
    claims: dict[str, Any] | None  # the request's verified JWT claims, None if it did not verify


@dataclass
class FakeVonage:
    public_key: Any
    status: int | None = None  # answer every request with this error instead (404, 500 ...)
    requests: list[Recorded] = field(default_factory=list)
    placed: list[str] = field(default_factory=list)  # the uuid of each call placed

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/calls", self._create, methods=["POST"]),
            Route("/v1/calls/{uuid}", self._modify, methods=["PUT"]),
        ])

    async def _record(self, request: Request) -> Recorded:
        body = await request.json() if await request.body() else {}
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"]) if scheme == "Bearer" else None
        except jwt.PyJWTError:
            claims = None
        recorded = Recorded(request.method, request.url.path, body, claims)
        self.requests.append(recorded)
        return recorded

    def _answer(self, recorded: Recorded) -> Response | None:
        if recorded.claims is None:
            return JSONResponse({"type": "https://developer.nexmo.com/api-errors#unauthorized",
                                 "title": "Invalid credentials supplied"}, status_code=401)
        if self.status is not None:
            title = "Not Found" if self.status == 404 else "Injected failure"
            return JSONResponse({"type": "https://developer.nexmo.com/api-errors#not-found", "title": title,
                                 "detail": f"{recorded.path}"}, status_code=self.status)
        return None

    async def _create(self, request: Request) -> Response:
        recorded = await self._record(request)
        refused = self._answer(recorded)
        if refused is not None:
            return refused
        uuid = secrets.token_hex(16)
        self.placed.append(uuid)
        return JSONResponse({"uuid": uuid, "status": "started", "direction": "outbound",
                             "conversation_uuid": "CON-" + uuid}, status_code=201)

    async def _modify(self, request: Request) -> Response:
        recorded = await self._record(request)
        return self._answer(recorded) or Response(status_code=204)

    async def detection_event(self, status: str, secret: str, sub_state: str | None = None) -> int:
        """The human/machine event of the last call placed, to its `event_url`, signed; returns the status
        the application answered."""
        placed = next(each for each in reversed(self.requests) if each.path == "/v1/calls")
        uuid = self.placed[-1]
        event = {"call_uuid": uuid, "conversation_uuid": "CON-" + uuid, "status": status,
                 "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
                 **({"sub_state": sub_state} if sub_state else {})}
        body = json.dumps(event).encode()
        async with httpx.AsyncClient() as http:
            response = await http.post(placed.body["event_url"][0], content=body, headers={
                "Authorization": f"Bearer {signed_jwt(secret, body)}", "Content-Type": "application/json"})
        return response.status_code


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, written to `directory`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "fake-vonage.pem", directory / "fake-vonage.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@contextlib.asynccontextmanager
async def serving_tls(app: Starlette, directory: Path) -> AsyncIterator[tuple[int, Path]]:
    """Serve `app` over https on 127.0.0.1 in this event loop; yields (port, the certificate to trust)."""
    import uvicorn

    cert, key = self_signed(directory)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ssl_certfile=str(cert),
                                           ssl_keyfile=str(key), lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1], cert
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        sock.close()


@contextlib.asynccontextmanager
async def vonage_api(directory: Path) -> AsyncIterator[tuple[FakeVonage, dict[str, str]]]:
    """A `FakeVonage` served over TLS from `directory`, and the environment that points the SDK at it (an
    application id, its fresh private key, the fake's host, its certificate trusted)."""
    pem, public_key = private_key_pem()
    fake = FakeVonage(public_key)
    async with serving_tls(fake.app(), directory) as (port, cert):
        yield fake, {"REQUESTS_CA_BUNDLE": str(cert), "VONAGE_API_HOST": f"127.0.0.1:{port}",
                     "VONAGE_APPLICATION_ID": "conformance-app", "VONAGE_PRIVATE_KEY": pem}
