"""Is this webhook or media socket really Vonage's, for a call Vonage told us about?

Webhooks (signed webhooks, developer.vonage.com "Signed webhooks"): Vonage sends
`Authorization: Bearer <JWT>`, HS256 with the account's signature secret; its `payload_hash` claim is
the SHA-256 of the request body (POST), and `iat` says when it was signed. The signature check is the
SDK's (`vonage_jwt.verify_signature`); this module adds the payload hash and a five-minute window, and
turns a failure into a reason that can be logged (never the secret, never the token).

The media socket: the answer webhook, once verified, gives the `connect` action's websocket endpoint an
`authorization` of its own: a JWT we sign with the same secret naming the call, its pipeline and
numbers, valid for five minutes. Vonage sends it as the upgrade's Authorization header; the upgrade is
refused without it, and `websocket:connected` gets its call, pipeline and numbers from it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import jwt
from vonage_jwt.errors import VonageVerifyJwtError
from vonage_jwt.verify_jwt import verify_signature

WINDOW_S = 300  # a webhook signed longer ago than this (or in the future) is refused: a replay
STREAM_TOKEN_S = 300  # how long the socket's token stays valid after the answer webhook
ISSUER = "switchboard"


def _bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class VonageSignatures:
    """Checks Vonage's signed webhooks and our socket tokens against one signature secret."""

    def __init__(self, signature_secret: str) -> None:
        self._secret = signature_secret

    def webhook_problem(self, authorization: str | None, body: bytes, now: float | None = None) -> str | None:
        """None if `authorization` is Vonage's signed JWT for this `body`; else why not (safe to log)."""
        token = _bearer(authorization)
        if token is None:
            return "no 'Authorization: Bearer <JWT>' header (are signed webhooks on in the Vonage app?)"
        try:
            if not verify_signature(token, self._secret):
                return "the JWT's signature does not match VONAGE_SIGNATURE_SECRET"
            claims = jwt.decode(token, self._secret, algorithms=["HS256"])
        except (VonageVerifyJwtError, jwt.PyJWTError) as exc:
            return f"the JWT does not verify: {str(exc)[:120]}"
        issued = claims.get("iat")
        now = time.time() if now is None else now
        if not isinstance(issued, (int, float)) or abs(now - issued) > WINDOW_S:
            return f"the JWT was not issued within {WINDOW_S} s of now (a replay?)"
        if body:
            expected = hashlib.sha256(body).hexdigest()
            if not hmac.compare_digest(str(claims.get("payload_hash", "")), expected):
                return "the JWT's payload_hash does not match the request body"
        return None

    def stream_token(self, claims: Mapping[str, str], now: float | None = None) -> str:
        """`Bearer <JWT>` for the socket of one call: its `claims` (call, pipeline, from, to)."""
        issued = int(time.time() if now is None else now)
        token = jwt.encode({**claims, "iss": ISSUER, "iat": issued, "exp": issued + STREAM_TOKEN_S},
                           self._secret, algorithm="HS256")
        return f"Bearer {token}"

    def stream_claims(self, authorization: str | None) -> tuple[dict[str, Any], str | None]:
        """The socket token's claims, and None; or ({}, why the upgrade is refused)."""
        token = _bearer(authorization)
        if token is None:
            return {}, "no 'Authorization: Bearer <token>' on the upgrade (/vonage/answer gives it)"
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], issuer=ISSUER,
                                options={"require": ["exp", "iat"]})
        except jwt.PyJWTError as exc:
            return {}, f"the socket token does not verify: {str(exc)[:120]}"
        return claims, None
