"""The chat-model interface every backend implements: a batch of conversations in, rich replies out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from aloe.messages import Message


@dataclass(frozen=True)
class SamplingParams:
    """The same sampling options for every backend. temperature 0 means greedy decoding."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = 0
    stop: tuple[str, ...] = ()

    def replace(self, **changes) -> "SamplingParams":
        return SamplingParams(**{**asdict(self), **changes})

    def as_dict(self) -> dict:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data


@dataclass
class Reply:
    """One generated reply with what it cost and where it came from."""

    text: str
    finish_reason: str = "stop"  # "stop" | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    model: str = ""
    cached: bool = field(default=False, compare=False)

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("cached")
        return data


class ChatModel(ABC):
    """A loaded model behind one spec string.

    `generate` takes a batch of conversations (lists of role/content messages) and returns one
    reply per conversation, in order. `sample_indices` distinguishes repeated samples of the
    same prompt (they are part of the cache key and of the seed).
    """

    spec: str = ""

    @abstractmethod
    def generate(
        self,
        conversations: Sequence[Sequence[Message]],
        params: SamplingParams,
        sample_indices: Sequence[int] | None = None,
        on_reply: Callable[[int, Reply], None] | None = None,
    ) -> list[Reply]:
        """Replies in input order. `on_reply(position, reply)` is called as each one is ready."""
        raise NotImplementedError

    def chat(self, messages: Sequence[Message], params: SamplingParams | None = None) -> Reply:
        """One conversation, one reply: a convenience over `generate`."""
        return self.generate([messages], params or SamplingParams())[0]

    def describe(self) -> dict:
        """What provenance records about this model."""
        return {"spec": self.spec}

    def cache_identity(self) -> str:
        """What the response cache keys on besides the request: whatever changes the replies."""
        return self.spec
