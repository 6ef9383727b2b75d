"""Chat messages: the role/content dicts every backend, judge and trainer passes around, and helpers over them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


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


def validate_messages(messages: Sequence[Message]) -> None:
    """Roles are explicit and alternate; a batch that breaks this is a bug upstream, not a model error."""
    roles = [message["role"] for message in messages]
    if not roles or roles[-1] != "user":
        raise ValueError(f"a conversation must end with a user message, got roles {roles}")
    body = roles[1:] if roles[0] == "system" else roles
    for position, role in enumerate(body):
        expected = "user" if position % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"messages must alternate user/assistant after an optional system message, got {roles}")



def inline_system_message(messages: Sequence[Message]) -> list[Message]:
    """A leading system message moved into the first user message (`system\\nuser`), for chat templates
    without a system role (Mistral's): the form the system-message paper trained and prompted such models with."""
    messages = list(messages)
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0], messages[1:]
    if rest and rest[0]["role"] == "user":
        return [{**rest[0], "content": f"{system['content']}\n{rest[0]['content']}"}] + rest[1:]
    return [{"role": "user", "content": system["content"]}] + rest
