"""The call engine: `CallSession` (call.py) and what it runs on: the player, failover, turn-taking,
variants, shadows, and `build.py`, which turns a pipeline's config into providers through the registry."""
