"""Small helpers over chat message lists, shared by generation, training and evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aloe.models.base import Message


def truncate_left(messages: Sequence[Message], length: Callable[[Sequence[Message]], int], limit: int) -> list[Message]:
    """Drop the oldest exchanges, whole messages at a time, until `length(messages) <= limit`.

    A leading system message and the final message are always kept, and what remains still
    starts with a user message (after the system message), so roles keep alternating.
    """
    messages = list(messages)
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    body = messages[len(system):]
    while len(body) > 1 and length(system + body) > limit:
        body = body[1:]
        while len(body) > 1 and body[0]["role"] != "user":
            body = body[1:]
    return system + body


def format_transcript(messages: Sequence[Message], user_label: str = "User", assistant_label: str = "Chatbot") -> str:
    """A chat as labelled plain text for prompts that read a conversation (extractor, judges).

    Labels come from each message's explicit role; system messages are not part of the chat.
    """
    labels = {"user": user_label, "assistant": assistant_label}
    return "\n".join(f"{labels[m['role']]}: {m['content']}" for m in messages if m["role"] in labels)


def flip_roles(messages: Sequence[Message]) -> list[Message]:
    """The same transcript seen from the other side (the simulated user's view of a chat)."""
    swap = {"user": "assistant", "assistant": "user"}
    return [{"role": swap.get(m["role"], m["role"]), "content": m["content"]} for m in messages]
