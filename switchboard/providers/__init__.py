"""The provider plug-ins: one module (or one small folder) per vendor, each registering itself with
`registry`. They depend on `switchboard.core` only, never on the call engine."""
