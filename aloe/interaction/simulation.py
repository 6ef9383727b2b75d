"""The simulated user, shared by data generation and the ALOE benchmark so both talk to the same person.

The simulator sees the conversation from its own side: its past messages are its `assistant`
turns and the chatbot's replies are `user` turns. Roles come from the transcript's explicit
speaker labels, never from list positions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from aloe.messages import flip_roles
from aloe.messages import Message
from aloe.prompts import render

USER_SIMULATOR_PROMPTS = ("user_simulator", "user_simulator_opening")

_STAGE_DIRECTION = re.compile(r"\*[^*\n]{1,80}\*|\[[^\]\n]{1,80}\]|\((?:laughs|smiles|sighs|grins|chuckles|winks)[^)]*\)", re.I)
_SPEAKER_LABEL = re.compile(r"^\s*(?:user|me|you|human|person|friend|message)\s*:\s*", re.I)


def user_simulator_messages(profile: str, personality: str, transcript: Sequence[Message]) -> list[Message]:
    """The simulator's prompt for its next message, given the chat so far (user/assistant roles)."""
    messages: list[Message] = [{"role": "system", "content": render("user_simulator", profile=profile, personality=personality)}]
    if not transcript:
        messages.append({"role": "user", "content": render("user_simulator_opening")})
        return messages
    # The simulator opened the chat, so from its side the first message is its own (assistant) turn;
    # the opening instruction stays in front so its messages still alternate starting with user.
    messages.append({"role": "user", "content": render("user_simulator_opening")})
    messages.extend(flip_roles(transcript))
    return messages


def clean_user_message(text: str) -> str:
    """Strip what a simulator adds around a chat message: stage directions, labels, wrapping quotes."""
    text = _STAGE_DIRECTION.sub("", text)
    lines = [_SPEAKER_LABEL.sub("", line).strip() for line in text.strip().splitlines()]
    text = " ".join(line for line in lines if line)
    text = re.sub(r"\s{2,}", " ", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text.strip('"“” ')
