"""NP-DPO: a policy steered by a user's latent z, trained with DPO against the unconditioned reference.

The user's context pairs (option features) go through the NP-BTL context encoder to z; a small
hypernetwork maps z to a FiLM scale and shift, h <- h * (1 + scale) + shift, applied to the hidden
states of chosen decoder layers by forward hooks; the base model carries LoRA adapters. The
reference is the same base model with the adapters and the hooks switched off. The baseline
(`conditioning="text"`) has no z: the context pairs are written into the prompt as text, so the gain
of the latent is measured against the obvious alternative, with everything else equal.

The metric is the implicit reward accuracy per k: on held-out target pairs of test users, how often
beta * (log pi/ref of the chosen reply - that of the rejected) is positive.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aloe.errors import AloeError
from aloe.jsonl import write_json
from aloe.progress import Progress
from aloe.prompts import render
from aloe.provenance import provenance
from aloe.steerable.data import Split, read_split
from aloe.steerable.episodes import EpisodeSampler, Tasks, fixed_tasks
from aloe.steerable.evaluate import mean_sem
from aloe.steerable.models import NPBTL, ModelConfig
from aloe.steerable.train import CHECKPOINT_FILE, SUMMARY_FILE

CONDITIONINGS = ("film", "text")
CONTEXT_PROMPT = "steerable_context_as_text"
EXAMPLE_PROMPT = "steerable_context_example"


@dataclass
class PolicyConfig:
    """Toy-size defaults that run on a CPU; the paper's scale is in docs/steerable.md (LoRA r 128-512, beta 0.05)."""

    model: str = "embedded"
    conditioning: str = "film"
    beta: float = 0.05
    lora_r: int = 8
    lora_alpha: int = 16
    hidden: int = 64  # context encoder and hypernetwork width
    heads: int = 4
    film_layers: list[int] = field(default_factory=lambda: [-1])  # decoder layers whose output is modulated
    targets: int = 2
    k_min: int = 0
    k_max: int = 3
    tasks_per_step: int = 2
    steps: int = 4
    lr: float = 1e-4
    max_length: int = 384  # tokens of prompt + reply; prompts are cut from the left
    eval_k: list[int] = field(default_factory=lambda: [0, 1, 3])
    eval_tasks: int = 4
    seed: int = 0


class FiLM(nn.Module):
    """z -> (scale, shift) for a hidden size; zero-initialized output, so training starts at the base policy."""

    def __init__(self, z_dim: int, hidden: int, model_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * model_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.current: tuple[torch.Tensor, torch.Tensor] | None = None  # (rows, 1, dim) each, set per forward

    def set(self, z: torch.Tensor | None) -> None:
        if z is None:
            self.current = None
            return
        scale, shift = self.net(z).unsqueeze(1).chunk(2, -1)
        self.current = (scale, shift)

    def hook(self, _module, _inputs, output):
        if self.current is None:
            return output
        scale, shift = self.current
        hidden = output[0] if isinstance(output, tuple) else output
        modulated = hidden * (1 + scale.to(hidden.dtype)) + shift.to(hidden.dtype)
        return (modulated, *output[1:]) if isinstance(output, tuple) else modulated


def decoder_layers(model) -> nn.ModuleList:
    """The transformer's stack of decoder layers (the longest ModuleList named `...layers`)."""
    stacks = [m for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and name.endswith("layers")]
    if not stacks:
        raise AloeError("cannot find the model's decoder layers to attach FiLM to")
    return max(stacks, key=len)


class SteeredPolicy(nn.Module):
    """A causal LM with LoRA adapters, steered by z through FiLM hooks (or by context text, with no z)."""

    def __init__(self, config: PolicyConfig, feature_dim: int):
        super().__init__()
        from peft import LoraConfig, get_peft_model
        from transformers import AutoTokenizer

        from aloe.models.local import load_pretrained, local_path

        self.config = config
        path = local_path(config.model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        base = load_pretrained(config.model, path, torch.float32)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules="all-linear",
                          task_type="CAUSAL_LM", lora_dropout=0.0)
        self.lm = get_peft_model(base, lora)
        self.encoder = None
        self.film = None
        self._hooks = []
        if config.conditioning == "film":
            self.encoder = NPBTL(ModelConfig("np-btl", feature_dim, config.hidden, config.heads))
            self.film = FiLM(config.hidden, config.hidden, base.config.hidden_size)
            layers = decoder_layers(self.lm)
            for index in config.film_layers:
                self._hooks.append(layers[index].register_forward_hook(self.film.hook))

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.lm.parameters() if p.requires_grad]
        for module in (self.encoder, self.film):
            if module is not None:
                params += list(module.parameters())
        return params

    @contextlib.contextmanager
    def reference(self):
        """The unconditioned reference: adapters off, no FiLM."""
        saved = self.film.current if self.film else None
        if self.film:
            self.film.set(None)
        with self.lm.disable_adapter():
            yield
        if self.film:
            self.film.current = saved

    def sequence_logps(self, prompts: list[list[dict]], replies: list[str]) -> torch.Tensor:
        """Sum of the reply tokens' log-probabilities, per (chat prompt, reply)."""
        tok = self.tokenizer
        rows, starts = [], []
        for messages, reply in zip(prompts, replies):
            prompt_ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
            reply_ids = tok(reply + (tok.eos_token or ""), add_special_tokens=False)["input_ids"]
            reply_ids = reply_ids[:self.config.max_length // 2]
            keep = self.config.max_length - len(reply_ids)
            prompt_ids = list(prompt_ids)[-keep:]
            rows.append(prompt_ids + reply_ids)
            starts.append(len(prompt_ids))
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        logits = self.lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logps = torch.gather(F.log_softmax(logits, -1), 2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        reply_mask = torch.zeros_like(logps)
        for i, (start, row) in enumerate(zip(starts, rows)):
            reply_mask[i, start - 1:len(row) - 1] = 1
        return (logps * reply_mask).sum(1)


# ---------------------------------------------------------------- tasks as DPO pairs


@dataclass
class PolicyBatch:
    prompts: list[list[dict]]  # 2 rows per target: chosen then rejected, per task in order
    replies: list[str]
    task_of_row: torch.Tensor  # which task's z steers each row
    context: object | None  # the model Batch of the tasks (for z), None for text conditioning


def policy_batch(split: Split, sampler: EpisodeSampler, tasks: Tasks, conditioning: str) -> PolicyBatch:
    prompts, replies, owners = [], [], []
    for t in range(len(tasks)):
        context_rows = tasks.context[t][tasks.context_mask[t]]
        prefix = _context_text(split, context_rows) if conditioning == "text" else None
        for row in tasks.targets[t]:
            prompt, text_a, text_b = split.texts[row]
            chosen, rejected = (text_b, text_a) if split.choice[row] == 1 else (text_a, text_b)
            content = render(CONTEXT_PROMPT, examples=prefix, prompt=prompt) if prefix else prompt
            for reply in (chosen, rejected):
                prompts.append([{"role": "user", "content": content}])
                replies.append(reply)
                owners.append(t)
    context = sampler.batch(tasks) if conditioning == "film" else None
    return PolicyBatch(prompts, replies, torch.tensor(owners), context)


def _context_text(split: Split, rows) -> str | None:
    examples = []
    for row in rows:
        prompt, text_a, text_b = split.texts[row]
        chosen, rejected = (text_b, text_a) if split.choice[row] == 1 else (text_a, text_b)
        examples.append(render(EXAMPLE_PROMPT, prompt=prompt, chosen=chosen, rejected=rejected))
    return "\n\n".join(examples) if examples else None


def dpo_margins(policy: SteeredPolicy, batch: PolicyBatch) -> torch.Tensor:
    """beta * ((log pi - log ref)(chosen) - (log pi - log ref)(rejected)), one per target pair."""
    if policy.film is not None:
        z = policy.encoder.context_z(batch.context)
        policy.film.set(z[batch.task_of_row])
    logp = policy.sequence_logps(batch.prompts, batch.replies)
    with torch.no_grad(), policy.reference():
        ref = policy.sequence_logps(batch.prompts, batch.replies)
    ratio = logp - ref
    return policy.config.beta * (ratio[0::2] - ratio[1::2])


def _need_texts(split: Split, name: str) -> None:
    if split.texts is None or any(text_a is None for _, text_a, _ in split.texts):
        raise AloeError(f"the {name} split has no option texts: NP-DPO needs text data "
                        "(--kind text, aloe or ultrafeedback), not the scalar kind")


def implicit_accuracy(policy: SteeredPolicy, split: Split, ks: list[int], tasks: int, seed: int) -> dict:
    sampler = EpisodeSampler(split, policy.config.targets)
    out = {}
    policy.eval()
    with torch.no_grad():
        for k in ks:
            drawn = fixed_tasks(sampler, tasks, k, seed)
            margins = dpo_margins(policy, policy_batch(split, sampler, drawn, policy.config.conditioning))
            correct = (margins > 0).float() + 0.5 * (margins == 0).float()  # a tie (the untrained policy) is a coin flip
            per_task = correct.reshape(tasks, policy.config.targets).mean(1).numpy()
            out[str(k)] = mean_sem(per_task)
    policy.train()
    return out


def train_policy(data_dir: str | Path, output: str | Path, config: PolicyConfig, progress: bool = True) -> dict:
    """DPO steps on fresh tasks, then the implicit reward accuracy per k on the test split; writes the run."""
    if config.conditioning not in CONDITIONINGS:
        raise AloeError(f"unknown conditioning {config.conditioning!r}; choose one of {', '.join(CONDITIONINGS)}")
    train_split, test_split = read_split(data_dir, "train"), read_split(data_dir, "test")
    _need_texts(train_split, "train")
    _need_texts(test_split, "test")
    ks = list(range(config.k_min, config.k_max + 1))
    sampler = EpisodeSampler(train_split, config.targets)
    sampler.check_k(config.k_max, "train")
    EpisodeSampler(test_split, config.targets).check_k(max(config.eval_k), "test")
    torch.manual_seed(config.seed)
    policy = SteeredPolicy(config, train_split.dim)
    optimizer = torch.optim.Adam(policy.trainable_parameters(), lr=config.lr)
    rng = np.random.default_rng([config.seed, 1])
    losses = []
    started = time.perf_counter()
    bar = Progress(config.steps, f"np-dpo ({config.conditioning})", "steps", enabled=progress)
    for _ in range(config.steps):
        tasks = sampler.draw(config.tasks_per_step, rng, ks)
        margins = dpo_margins(policy, policy_batch(train_split, sampler, tasks, config.conditioning))
        loss = -F.logsigmoid(margins).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - started
    accuracy = implicit_accuracy(policy, test_split, config.eval_k, config.eval_tasks, config.seed)

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    policy.lm.save_pretrained(output / "adapter")
    extra = {name: module.state_dict() for name, module in (("encoder", policy.encoder), ("film", policy.film)) if module}
    torch.save({"config": {"kind": "np-dpo", **asdict(config)}, "state_dict": extra}, output / CHECKPOINT_FILE)
    summary = {
        "model": f"np-dpo-{config.conditioning}", "kind": "np-dpo", "data": str(data_dir), "losses": losses,
        "implicit_reward_accuracy": accuracy, "train_seconds": round(seconds, 2),
        "provenance": provenance(asdict(config) | {"data": str(data_dir), "output": str(output)},
                                 models={"policy": config.model}, prompts=[CONTEXT_PROMPT, EXAMPLE_PROMPT]),
    }
    write_json(output / SUMMARY_FILE, summary)
    return summary
