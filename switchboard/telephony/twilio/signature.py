"""Twilio request signatures: is this webhook or WebSocket upgrade really from Twilio?

Twilio signs every request with the account's auth token: the `X-Twilio-Signature` header is
base64(HMAC-SHA1(token, URL + the POST form parameters sorted by name, each as name + value)). The
URL is the one Twilio requested, so behind a proxy or tunnel it is rebuilt here from `PUBLIC_URL`, or
else from the forwarded host and protocol. The WebSocket upgrade is signed the same way, on the
`wss://host/path` URL with no parameters.

The check itself is the `twilio` package's `RequestValidator`; this module only finds the URL and
turns a failure into a reason that can be logged (never the token, never the expected signature).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"


def signed_url(
    path: str,
    query: str,
    headers: Mapping[str, str],
    scheme: str,
    public_url: str | None,
    websocket: bool = False,
) -> str:
    """The URL Twilio signed for a request that reached us at `path`?`query`.

    `PUBLIC_URL` (scheme and host) wins; else `X-Forwarded-Host` / `Host`, and `X-Forwarded-Proto` or
    the request's own scheme. A WebSocket URL is `wss://` unless the proxy says the request was plain
    `http`: Twilio only opens secure WebSockets, and a tunnel usually forwards them as plain `ws`."""
    if public_url:
        parts = urlsplit(public_url if "://" in public_url else f"https://{public_url}")
        host, secure = parts.netloc, parts.scheme in ("https", "wss")
    else:
        host = headers.get("x-forwarded-host") or headers.get("host") or ""
        proto = headers.get("x-forwarded-proto")
        if websocket:
            secure = proto not in ("http", "ws")
        else:
            secure = (proto or scheme) in ("https", "wss")
    if websocket:
        scheme = "wss" if secure else "ws"
    else:
        scheme = "https" if secure else "http"
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


class SignatureChecker:
    """Checks `X-Twilio-Signature` against one auth token."""

    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token)

    def problem(self, url: str, params: Mapping[str, Any], signature: str | None) -> str | None:
        """None if `signature` is Twilio's for `url` and `params`; else why not (safe to log)."""
        if not signature:
            return f"no {SIGNATURE_HEADER} header (url {url})"
        if not self._validator.validate(url, params, signature):
            return f"{SIGNATURE_HEADER} does not match url {url} and {len(params)} form parameter(s)"
        return None
