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

TRANSFER_CALL = "transfer_call"


def transfer_call_tool(targets: list[str]) -> Tool:
    """The built-in transfer, offered when the pipeline has `transfer:` and the carrier can do it."""
    return Tool(
        name=TRANSFER_CALL,
        description=(
            "Transfer the caller to a person. Use it when the caller asks for a human, or for something "
            "you cannot do. The call leaves you once transferred."
        ),
        parameters={
            "type": "object",
            "properties": {"target": {"type": "string", "enum": list(targets),
                                      "description": "Where to transfer the call."}},
            "required": ["target"],
        },
    )
