"""The small core every room shares: messages, tools, errors, the provider protocols, carrier events,
settings bases and turn metrics. It imports nothing of ours."""
