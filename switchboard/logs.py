"""Logging for the entry points: one redaction step every log line passes through.

Secrets come only from the environment, and our own code never logs them; but an upstream can echo a
key back in an error message, an SDK can put it in an exception's text, and Twilio's REST errors may
carry the basic-auth header. `Redactor` masks, in every record's message and exception text: the value
of every environment variable whose name says it holds a secret (…KEY, …TOKEN, …SECRET, …PASSWORD,
…AUTH…), Twilio's `sid:token` in base64, and whatever follows `Authorization: Bearer|Basic`.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Mapping

from switchboard.core.context import CallIdFilter

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|AUTH", re.IGNORECASE)
MIN_SECRET_CHARS = 6  # shorter values ("1", "true") would mask ordinary words
AUTH_HEADER = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic)\s+)[^\s\"',;]+")
MASK = "***"


def secrets_in(environ: Mapping[str, str]) -> list[str]:
    """The secret values to mask, longest first (so a secret containing another is masked whole)."""
    found = {value for name, value in environ.items()
             if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_CHARS}
    sid, token = environ.get("TWILIO_ACCOUNT_SID"), environ.get("TWILIO_AUTH_TOKEN")
    if sid and token:
        found.add(base64.b64encode(f"{sid}:{token}".encode()).decode())
    return sorted(found, key=len, reverse=True)


class Redactor(logging.Filter):
    """A handler filter: the record's text with every secret masked (the record itself is rewritten)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.secrets = secrets_in(os.environ if environ is None else environ)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return AUTH_HEADER.sub(lambda match: match.group(1) + MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.mask(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
            record.exc_info = None  # formatted (masked) once; never formatted again from the raw exception
        if masked != message or record.args:
            record.msg, record.args = masked, None
        return True


def configure(level: int = logging.INFO) -> None:
    """The entry points' logging: timestamped lines on stderr, every one through the `Redactor`."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redactor, call_ids = Redactor(), CallIdFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(call_ids)  # a line logged for a call names it (core/context.py)
        handler.addFilter(redactor)
