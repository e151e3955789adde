"""Switchboard: put an LLM on the phone.

The package's rooms, bottom to top (docs/architecture.md has the import rule):
`core` (messages, protocols, errors, metrics), `audio`, the plug-ins (`providers`, `telephony`) and
`store`, `config` (pipeline.yaml), `pipeline` (the call engine), `report`, `web`, and the entry points
`server`, `cli`, `caller`, `check`.
"""

__version__ = "0.1.0"
