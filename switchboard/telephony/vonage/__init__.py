"""The Vonage carrier: its section of pipeline.yaml here; its link and routes in carrier.py (imported by
the server, not by the config: the SDK is slow to import).

GET|POST /vonage/answer   the answer URL: an NCCO that `connect`s the call to /vonage/stream at the
                          configured rate, with the routed pipeline and the caller's and called numbers
                          (or, when the server is full or draining, `talk`s its busy message)
POST     /vonage/event    the event URL: call status changes, logged (answered 204)
WS       /vonage/stream   Vonage Voice WebSockets (wire.py), one call per connection

With VONAGE_SIGNATURE_SECRET set, the webhooks must carry Vonage's signed JWT and the socket's upgrade
the token the answer NCCO gave it (security.py); refused with 403 and a logged reason otherwise. Hang-up
and transfer go through the Voice API (rest.py) when the application's credentials are set; closing the
socket ends the call either way (the NCCO has nothing after `connect`).
"""

from __future__ import annotations

from typing import Literal

from switchboard.core.settings import Strict


class VonageConfig(Strict):
    """Serving Vonage. Credentials come from the environment (VONAGE_SIGNATURE_SECRET,
    VONAGE_APPLICATION_ID, VONAGE_PRIVATE_KEY)."""

    # the socket's audio: 8 kHz is the pipeline's own rate (no resampling, no added delay); 16 kHz
    # carries twice the bytes for nothing the 8 kHz pipeline can use
    sample_rate: Literal[8000, 16000] = 8000
