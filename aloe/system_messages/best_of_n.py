"""Best-of-N: N samples per prompt, each scored by a reward model, the highest kept.

The N samples of every prompt go through the generic response generator as one batch (sample
indices 0..N-1, so each is its own draw and its own cache entry). The reward model is a sequence
classifier with one output (what training/reward_model.py saves); the chats (system message, prompt,
response) are scored in batches, left-padded, with the model's own pooling reading each row's last
real token, which is where the reward trainer read it. Every sample's reward is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from aloe.errors import AloeError
from aloe.messages import Message
from aloe.models.base import ChatModel, SamplingParams
from aloe.responses import Response, ResponseRequest, generate_responses


class RewardModel:
    """A Bradley-Terry reward model on disk: `score(chats)` returns one float per chat."""

    def __init__(self, path: str | Path, batch_size: int = 8, device: str | None = None, dtype: str = "auto"):
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        from aloe.models.local import default_device, inference_dtype

        self.path = str(path)
        try:
            config = AutoConfig.from_pretrained(self.path)
        except (OSError, ValueError) as exc:
            raise AloeError(f"{self.path}: not a model folder ({str(exc).splitlines()[0]}); "
                            "give the folder training/reward_model.py wrote") from None
        heads = [name for name in (config.architectures or []) if name.endswith("ForSequenceClassification")]
        if not heads or config.num_labels != 1:
            raise AloeError(f"{self.path}: not a reward model (architectures {config.architectures or []}, "
                            f"{config.num_labels} labels; a reward model is a sequence classifier with one output, "
                            "as training/reward_model.py saves)")
        self.batch_size = max(1, batch_size)
        self.device = device or default_device()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.path, dtype=inference_dtype(self.device, dtype)).to(self.device).eval()
        # The model's pooling reads the rightmost non-pad token; with left padding that is each row's last real token.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def encode(self, chat: Sequence[Message]) -> list[int]:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(list(chat), tokenize=True, return_dict=False)
        return self.tokenizer("\n\n".join(message["content"] for message in chat))["input_ids"]

    @torch.inference_mode()
    def score(self, chats: Sequence[Sequence[Message]]) -> list[float]:
        """Rewards in input order; chats of similar length share a batch."""
        encoded = [self.encode(chat) for chat in chats]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        rewards = [0.0] * len(encoded)
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in chunk)
            ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in chunk], device=self.device)
            mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in chunk],
                                device=self.device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist()
            for position, value in zip(chunk, logits):
                rewards[position] = value
        return rewards


def best_of_n(model: ChatModel, reward_model: RewardModel, requests: Sequence[ResponseRequest], n: int,
              params: SamplingParams, group_size: int = 64) -> list[Response]:
    """The highest-reward of `n` samples for every request, with every sample and its reward in `samples`."""
    if n < 1:
        raise AloeError(f"--n must be at least 1, got {n}")
    samples: list[Response] = []
    expanded = [replace(request, sample_index=j) for request in requests for j in range(n)]
    generate_responses(model, expanded, params, samples.append, group_size=group_size * n)
    chats = [[*request.messages, {"role": "assistant", "content": sample.response}]
             for request, sample in zip(expanded, samples)]
    rewards = reward_model.score(chats)
    best = []
    for position, request in enumerate(requests):
        drawn = samples[position * n:(position + 1) * n]
        scores = rewards[position * n:(position + 1) * n]
        pick = max(range(n), key=lambda j: (scores[j], -j))  # the first of equal rewards
        chosen = drawn[pick]
        best.append(chosen.model_copy(update={
            "best_index": pick, "reward": scores[pick],
            "samples": [{"response": s.response, "reward": r, "finish_reason": s.finish_reason, "flags": s.flags}
                        for s, r in zip(drawn, scores)],
        }))
    return best
