"""Which call the running code works for: a context variable, and a log filter that names the call.

The server sets `CALL_ID` when a connection's call starts; every task the call creates afterwards (its
ticker, its turns, its player, `asyncio.to_thread` work) inherits it. `CallIdFilter` (on the entry
points' log handlers, `logs.configure`) then gives every record logged for a call a `call_id` attribute
and, when the message does not already name the call, appends `[call <id>]`, so a vendor SDK's retry
warning or an engine's error can be traced to its call like our own lines.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

CALL_ID: ContextVar[str | None] = ContextVar("switchboard_call_id", default=None)


class CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        call_id = CALL_ID.get()
        if call_id is None or hasattr(record, "call_id"):
            return True
        record.call_id = call_id
        message = record.getMessage()
        if call_id not in message:
            record.msg, record.args = f"{message} [call {call_id}]", None
        return True
