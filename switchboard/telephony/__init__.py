"""Carrier plug-ins: one folder per carrier (wire format, link, routes); `base.py` is what they share.
They depend on `switchboard.core` and `switchboard.audio` only."""
