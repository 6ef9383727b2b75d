"""Reward models over pairs of options: BTL, DPL and the neural-process NP-BTL.

Every model maps a batch of tasks to a margin per target pair, `margin(batch) -> (tasks, targets)`,
and a link: P(b preferred) = link(margin), P(a preferred) = link(-margin) (logistic for BT models,
the normal CDF for DPL). A batch holds, per task, the target pairs and up to
K context pairs of the same user (with a mask: k varies per task); user-agnostic models ignore the
context. NP-BTL reads the context: each context pair is ordered by the user's choice, encoded,
passed through multi-head self-attention and mean-pooled (so z neither grows with k nor depends on
the order of the pairs), and the reward of an option is a decoder over [g(option); z].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aloe.errors import AloeError

KINDS = ("btl", "dpl", "np-btl")
STD_FLOOR = 0.01  # the latent path's std never goes below this: a vanishing std makes the KL blow up


@dataclass
class ModelConfig:
    kind: str
    input_dim: int
    hidden: int = 256
    heads: int = 8
    latent: bool = False  # NP-BTL: a latent z with the ELBO instead of the deterministic (conditional NP) z
    original: bool = False  # NP-BTL as the original code built it, for comparison (see NPBTL)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Batch:
    """Tasks as padded tensors. Options are (tasks, pairs, dim); choices are 1 where option b was preferred."""

    target_a: torch.Tensor
    target_b: torch.Tensor
    target_choice: torch.Tensor  # (tasks, targets) float
    context_a: torch.Tensor  # (tasks, K, dim)
    context_b: torch.Tensor
    context_choice: torch.Tensor  # (tasks, K) float
    context_mask: torch.Tensor  # (tasks, K) bool, True on the task's k real context pairs
    target_mask: torch.Tensor | None = None  # (tasks, targets) bool: which targets are scored (None: all)

    def to(self, device) -> "Batch":
        return Batch(**{name: (value.to(device) if value is not None else None) for name, value in self.__dict__.items()})


def mlp(sizes: list[int], batch_norm: bool = False) -> nn.Sequential:
    """Linear layers with ReLU between; `batch_norm` puts a BatchNorm1d (and no biases) before each ReLU."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(n_in, n_out, bias=not batch_norm))
        if i < len(sizes) - 2:
            layers.extend([nn.BatchNorm1d(n_out)] if batch_norm else [])
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RewardModel(nn.Module):
    """Shared interface: the option encoder g, `margin` with its link, and the training loss."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = mlp([config.input_dim, config.hidden, config.hidden])  # g(y)

    log_link = staticmethod(F.logsigmoid)  # log P(b preferred) as a function of the margin

    def margin(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def prob_b(self, batch: Batch) -> torch.Tensor:
        return torch.exp(self.log_link(self.margin(batch)))

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean over tasks of the mean target negative log-likelihood (what validation compares too)."""
        nll = self.target_nll(self.margin(batch), batch)
        return nll, {"nll": float(nll.detach())}

    def target_nll(self, margin: torch.Tensor, batch: Batch) -> torch.Tensor:
        return target_nll(self.log_link, margin, batch)


def target_nll(log_link, margin: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per task the mean NLL of its scored targets, averaged over tasks."""
    signed = torch.where(batch.target_choice.bool(), margin, -margin)
    log_lik = log_link(signed)
    mask = batch.target_mask.float() if batch.target_mask is not None else torch.ones_like(log_lik)
    return -((log_lik * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


class BTL(RewardModel):
    """Bradley-Terry: one reward r(y) for everyone; P(b > a) = sigmoid(r(b) - r(a))."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.head = mlp([config.hidden, config.hidden, 1])

    def reward(self, options: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(options)).squeeze(-1)

    def margin(self, batch: Batch) -> torch.Tensor:
        return self.reward(batch.target_b) - self.reward(batch.target_a)


class DPL(RewardModel):
    """Distributional preference learning: r(y) ~ N(mu(y), sigma(y)^2), P(b > a) = Phi((mu_b - mu_a) / sqrt(s_a^2 + s_b^2)).

    The link is the exact normal CDF (log_ndtr, stable in the tails), not a constant-slope sigmoid.
    """

    log_link = staticmethod(torch.special.log_ndtr)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.head = mlp([config.hidden, config.hidden, 2])

    def moments(self, options: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw_std = self.head(self.encoder(options)).unbind(-1)
        return mean, F.softplus(raw_std) + 1e-3

    def margin(self, batch: Batch) -> torch.Tensor:
        mean_a, std_a = self.moments(batch.target_a)
        mean_b, std_b = self.moments(batch.target_b)
        return (mean_b - mean_a) / torch.sqrt(std_a ** 2 + std_b ** 2)


class NPBTL(RewardModel):
    """Neural-process BTL: z from the user's context pairs, P(b > a | z) = sigmoid(r(b, z) - r(a, z)).

    Deterministic path: z = encoder(context), an empty context gives a learned prior point, and the
    loss is the target NLL. Latent path: the encoder gives q(z | pairs) = N(mu, sigma) (sigma above a
    floor); training samples z from q(z | context + targets) and adds KL(q(z | context + targets) ||
    q(z | context)), the standard NP ELBO; prediction uses the mean of q(z | context).

    `original`: the original code's network, kept to reproduce its published curve: a context pair's
    raw options (not g) are encoded, attention has dropout 0.1 and no residual or norm, the pairs are
    summed (z grows with k), an empty context gives to_z(0), and the decoder is batch-normed.
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        h, original = config.hidden, config.original
        self.pair_encoder = mlp([2 * (config.input_dim if original else h), h, h])
        self.attention = nn.MultiheadAttention(h, config.heads, dropout=0.1 if original else 0.0, batch_first=True)
        self.norm = None if original else nn.LayerNorm(h)  # the original path returns before it
        self.to_z = mlp([h, h, 2 * h if config.latent else h])
        self.prior = None if original else nn.Parameter(torch.zeros(2 * h if config.latent else h))
        self.decoder = mlp([2 * h, h, 1], batch_norm=original)

    # -- the context encoder

    def _encode_pairs(self, a, b, choice, mask) -> torch.Tensor:
        """Pooled statistics of each task's pairs -> z (deterministic) or (mu, raw std) (latent); prior where none."""
        if not self.config.original:
            a, b = self.encoder(a), self.encoder(b)
        chosen = torch.where(choice.bool().unsqueeze(-1), b, a)
        rejected = torch.where(choice.bool().unsqueeze(-1), a, b)
        h = self.pair_encoder(torch.cat([chosen, rejected], -1))
        has_any = mask.any(1)
        # Tasks without context attend over one dummy slot (an all-masked row gives NaN); their z is the prior.
        safe_mask = mask.clone()
        safe_mask[~has_any, 0] = True
        attended, _ = self.attention(h, h, h, key_padding_mask=~safe_mask, need_weights=False)
        if self.config.original:
            return self.to_z((attended * mask.float().unsqueeze(-1)).sum(1))
        h = self.norm(h + attended)
        weights = safe_mask.float().unsqueeze(-1)
        pooled = (h * weights).sum(1) / weights.sum(1)
        stats = self.to_z(pooled)
        return torch.where(has_any.unsqueeze(-1), stats, self.prior.expand_as(stats))

    def _split(self, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = stats.chunk(2, -1)
        return mean, STD_FLOOR + (1 - STD_FLOOR) * torch.sigmoid(raw)

    def z_from_pairs(self, a, b, choice, mask) -> torch.Tensor:
        """The user's z from their pairs (the posterior mean on the latent path); the prior where there are none."""
        stats = self._encode_pairs(a, b, choice, mask)
        return self._split(stats)[0] if self.config.latent else stats

    def context_z(self, batch: Batch) -> torch.Tensor:
        return self.z_from_pairs(batch.context_a, batch.context_b, batch.context_choice, batch.context_mask)

    def _decode(self, batch: Batch, z: torch.Tensor) -> torch.Tensor:
        # Both options of every target in one (rows, features) pass: a batch-normed decoder sees them together.
        options = torch.cat([batch.target_a, batch.target_b], 1)
        inputs = torch.cat([self.encoder(options), z.unsqueeze(1).expand(-1, options.shape[1], -1)], -1)
        rewards = self.decoder(inputs.flatten(0, 1)).view(options.shape[:2])
        reward_a, reward_b = rewards.chunk(2, 1)
        return reward_b - reward_a

    def margin(self, batch: Batch) -> torch.Tensor:
        return self._decode(batch, self.context_z(batch))

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        if not self.config.latent:
            return super().loss(batch)
        context = self._split(self._encode_pairs(batch.context_a, batch.context_b, batch.context_choice,
                                                 batch.context_mask))
        # q(z | context + targets): the targets join the context (padded targets, if any, stay masked).
        target_mask = batch.target_mask if batch.target_mask is not None else torch.ones_like(batch.target_choice, dtype=torch.bool)
        posterior = self._split(self._encode_pairs(
            torch.cat([batch.context_a, batch.target_a], 1), torch.cat([batch.context_b, batch.target_b], 1),
            torch.cat([batch.context_choice, batch.target_choice], 1), torch.cat([batch.context_mask, target_mask], 1)))
        z = posterior[0] + posterior[1] * torch.randn_like(posterior[1])
        nll = self.target_nll(self._decode(batch, z), batch)
        kl = gaussian_kl(posterior, context).sum(-1)
        targets = target_mask.float().sum(1).clamp(min=1)
        # The ELBO per task is sum(log lik) - KL; divided by the number of targets so the scale matches the NLL.
        total = nll + (kl / targets).mean()
        return total, {"nll": float(nll.detach()), "kl": float(kl.detach().mean())}


def gaussian_kl(q: tuple[torch.Tensor, torch.Tensor], p: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """KL(N(q) || N(p)) per dimension."""
    (mq, sq), (mp, sp) = q, p
    return torch.log(sp / sq) + (sq ** 2 + (mq - mp) ** 2) / (2 * sp ** 2) - 0.5


MODEL_CLASSES: dict[str, type[RewardModel]] = {"btl": BTL, "dpl": DPL, "np-btl": NPBTL}


def build_model(config: ModelConfig) -> RewardModel:
    if config.hidden % config.heads:
        raise AloeError(f"--hidden {config.hidden} must be a multiple of --heads {config.heads}")
    return MODEL_CLASSES[config.kind](config)

