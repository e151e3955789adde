"""Running Switchboard in production: admission (max_concurrent_calls, /readyz), drain on SIGTERM,
Prometheus metrics. The server calls `Operations` at a call's start and end; nothing here is on the
audio path."""

from switchboard.ops.admission import DRAINING, FULL, Admission, BusyLine, Refused
from switchboard.ops.drain import Drain
from switchboard.ops.operations import Operations

__all__ = ["DRAINING", "FULL", "Admission", "BusyLine", "Drain", "Operations", "Refused"]
