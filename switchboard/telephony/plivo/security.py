"""Is this webhook or media socket really Plivo's, for a call Plivo told us about?

Webhooks (the answer URL, the transfer XML): Plivo signs each request with the account's auth token:
`X-Plivo-Signature-V3` is base64(HMAC-SHA256(token, URL + sorted POST parameters + "." + nonce)),
the nonce in `X-Plivo-Signature-V3-Nonce` (docs.plivo.com, "Validate requests from Plivo"). The
check is the SDK's `validate_v3_signature`; this module finds the URL Plivo called and turns a failure
into a reason that can be logged (never the token, never a signature).

The media socket: Plivo documents no signature on the WebSocket upgrade we can check with the SDK (its
validator takes http(s) URLs only), so the answer webhook, once verified, puts a token in the stream
URL it hands Plivo: HMAC-SHA256(auth token, the URL's other query parameters: the call's uuid,
pipeline and numbers). The upgrade must carry it, and `start.callId` must be the call it names.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from plivo.exceptions import ValidationError
from plivo.utils.signature_v3 import validate_v3_signature

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
TOKEN_PARAM = "token"


class PlivoSignatures:
    """Checks Plivo's V3 signatures and our stream tokens against one auth token."""

    def __init__(self, auth_token: str) -> None:
        self._token = auth_token

    def webhook_problem(self, method: str, url: str, params: Mapping[str, Any],
                        headers: Mapping[str, str]) -> str | None:
        """None if the request carries Plivo's V3 signature of `url` and `params`; else why not."""
        signature, nonce = headers.get(SIGNATURE_HEADER), headers.get(NONCE_HEADER)
        if not signature or not nonce:
            return f"no {SIGNATURE_HEADER} / {NONCE_HEADER} header (url {url})"
        try:
            valid = validate_v3_signature(method, url, nonce, self._token, signature,
                                          {key: str(value) for key, value in params.items()})
        except ValidationError as exc:
            return f"cannot check the signature of url {url}: {exc}"
        if not valid:
            return f"{SIGNATURE_HEADER} does not match url {url} and {len(params)} parameter(s)"
        return None

    def stream_query(self, params: Mapping[str, str]) -> str:
        """The stream URL's query string: `params` and their token."""
        return urlencode({**params, TOKEN_PARAM: self._sign(params)})

    def stream_problem(self, query: Mapping[str, str]) -> str | None:
        """None if the socket's query carries our token for its other parameters; else why not."""
        given = query.get(TOKEN_PARAM)
        if not given:
            return "no stream token in the URL (it comes from a verified /plivo/answer)"
        params = {key: value for key, value in query.items() if key != TOKEN_PARAM}
        if not hmac.compare_digest(given, self._sign(params)):
            return "the stream token does not match the URL's parameters"
        return None

    def _sign(self, params: Mapping[str, str]) -> str:
        canonical = urlencode(sorted(params.items()))
        return hmac.new(self._token.encode(), canonical.encode(), hashlib.sha256).hexdigest()
