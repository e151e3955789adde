"""The tools every LLM is offered on a call."""

from __future__ import annotations

from switchboard.core.messages import Tool

END_CALL_TOOL = Tool(
    name="end_call",
    description=(
        "End the phone call. Use it when the caller says goodbye or the conversation is over. "
        "`farewell` is spoken to the caller before hanging up."
    ),
    parameters={
        "type": "object",
        "properties": {"farewell": {"type": "string", "description": "What to say before hanging up."}},
        "required": ["farewell"],
    },
)
