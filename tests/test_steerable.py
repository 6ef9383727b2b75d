"""Few-shot steerable alignment: the data, episodes, models and evaluation (library level)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aloe.steerable.data import Split, agreement_rate, oracle_accuracy, read_split, user_agnostic_ceiling, write_dataset
from aloe.steerable.episodes import EpisodeSampler, fixed_tasks
from aloe.steerable.evaluate import bayes_optimal, calibration_error, evaluate
from aloe.steerable.models import DPL, NPBTL, Batch, ModelConfig, build_model
from aloe.steerable.synthetic import SCALAR_REWARDS, scalar_splits
from aloe.steerable.train import TrainConfig, load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scalar_splits_paper():
    return scalar_splits()


@pytest.fixture(scope="module")
def scalar_dir(tmp_path_factory, scalar_splits_paper):
    path = tmp_path_factory.mktemp("scalar")
    write_dataset(path, scalar_splits_paper, {"kind": "scalar"})
    return path


@pytest.fixture(scope="module")
def test_split(scalar_dir):
    return read_split(scalar_dir, "test")


def test_scalar_split_sizes_and_agreement_come_from_the_data(scalar_splits_paper):
    # One record per user per pair: the paper's 16,039 / 2,025 / 1,936 pairs, two users each.
    assert {name: len(records) // 2 for name, records in scalar_splits_paper.items()} == {
        "train": 16039, "val": 2025, "test": 1936}
    every = Split.from_records([r for records in scalar_splits_paper.values() for r in records])
    assert agreement_rate(every) == pytest.approx(0.504, abs=0.001)
    assert user_agnostic_ceiling(every) == pytest.approx(0.504 + 0.496 / 2, abs=0.001)
    assert oracle_accuracy(every) == 1.0


def test_scalar_choices_follow_the_hidden_rewards(scalar_splits_paper):
    for record in scalar_splits_paper["test"][:200]:
        reward = SCALAR_REWARDS[record.user]
        a, b = np.array(record.option_a), np.array(record.option_b)
        assert record.choice == int(reward(b)[0] > reward(a)[0])


def test_context_and_targets_are_disjoint_and_from_one_user(test_split):
    sampler = EpisodeSampler(test_split, targets=20)
    tasks = sampler.draw(64, np.random.default_rng(0), list(range(11)))
    for t in range(len(tasks)):
        context = set(tasks.context[t][tasks.context_mask[t]].tolist())
        targets = set(tasks.targets[t].tolist())
        assert len(targets) == 20 and not context & targets
        assert set(test_split.user[list(context | targets)].tolist()) == {tasks.user[t]}
        assert len(context) == tasks.context_mask[t].sum()


def test_overlap_option_draws_the_context_from_the_targets(test_split):
    tasks = EpisodeSampler(test_split, targets=20, overlap=True).draw(16, np.random.default_rng(0), 5)
    for t in range(16):
        assert set(tasks.context[t][:5].tolist()) <= set(tasks.targets[t].tolist())
        assert not tasks.target_mask[t][:5].any() and tasks.target_mask[t][5:].all()


def test_epochs_are_fresh_and_reproducible(test_split):
    sampler = EpisodeSampler(test_split, targets=4)
    first = next(sampler.epoch(seed=0, epoch=1, steps=1, batch_size=8, ks=[2]))
    again = next(sampler.epoch(seed=0, epoch=1, steps=1, batch_size=8, ks=[2]))
    second = next(sampler.epoch(seed=0, epoch=2, steps=1, batch_size=8, ks=[2]))
    assert torch.equal(first.target_a, again.target_a)
    assert not torch.equal(first.target_a, second.target_a)


def _np_model(latent=False, dim=1, original=False):
    torch.manual_seed(0)
    return NPBTL(ModelConfig("np-btl", dim, hidden=32, heads=4, latent=latent, original=original)).eval()


def _batch_for(test_split, k, count=8, seed=0):
    sampler = EpisodeSampler(test_split, targets=5)
    return sampler.batch(fixed_tasks(sampler, count, k, seed))


@pytest.mark.parametrize("latent", [False, True])
def test_permuting_the_context_leaves_z_unchanged(test_split, latent):
    model = _np_model(latent)
    batch = _batch_for(test_split, k=7)
    order = torch.randperm(7)
    permuted = Batch(**{**batch.__dict__, "context_a": batch.context_a[:, order], "context_b": batch.context_b[:, order],
                        "context_choice": batch.context_choice[:, order]})
    with torch.no_grad():
        assert torch.allclose(model.context_z(batch), model.context_z(permuted), atol=1e-5)


def _z_norms_of_repeated_context(model, test_split):
    """z's norm per task for the same five context pairs repeated: k = 5, 20, 200."""
    batch = _batch_for(test_split, k=5, count=4)
    norms = []
    with torch.no_grad():
        for repeats in (1, 4, 40):
            tiled = Batch(**{**batch.__dict__, **{name: getattr(batch, name).repeat(1, repeats, *([1] * (getattr(batch, name).dim() - 2)))
                                                  for name in ("context_a", "context_b", "context_choice", "context_mask")}})
            norms.append(model.context_z(tiled).norm(dim=-1))
    return norms


def test_mean_pooling_keeps_z_bounded_as_k_grows(test_split):
    norms = _z_norms_of_repeated_context(_np_model(), test_split)
    # Self-attention over repeated pairs gives the same outputs, and their mean is the same z.
    assert torch.allclose(norms[0], norms[1], atol=1e-4) and torch.allclose(norms[0], norms[2], atol=1e-4)


def test_the_original_network_sums_the_context_so_z_grows_with_k(test_split):
    norms = _z_norms_of_repeated_context(_np_model(original=True), test_split)
    assert torch.all(norms[2] > 5 * norms[0])


def test_the_original_network_has_a_batch_normed_decoder_and_to_z_of_zero_as_prior(test_split):
    model = _np_model(original=True)
    assert any(isinstance(layer, torch.nn.BatchNorm1d) for layer in model.decoder) and model.prior is None
    with torch.no_grad():
        z = model.context_z(_batch_for(test_split, k=0))
        assert torch.allclose(z, model.to_z(torch.zeros(1, 32)).expand_as(z))
    model.train()
    loss, _ = model.loss(_batch_for(test_split, k=3))
    loss.backward()
    assert torch.isfinite(loss) and model.decoder[1].weight.grad is not None


def test_an_empty_context_gives_the_learned_prior(test_split):
    model = _np_model()
    with torch.no_grad():
        model.prior.fill_(0.25)
        z = model.context_z(_batch_for(test_split, k=0))
    assert torch.all(z == 0.25)


def test_latent_loss_is_finite_with_a_nonnegative_kl(test_split):
    model = _np_model(latent=True).train()
    loss, parts = model.loss(_batch_for(test_split, k=3))
    assert math.isfinite(loss.item()) and parts["kl"] >= 0
    loss.backward()
    assert model.to_z[0].weight.grad.abs().sum() > 0  # the context encoder learns through the KL and the decoder


def test_dpl_likelihood_is_the_exact_normal_cdf():
    torch.manual_seed(0)
    model = DPL(ModelConfig("dpl", 3, hidden=16, heads=1))
    a, b = torch.randn(1, 6, 3), torch.randn(1, 6, 3)
    batch = Batch(a, b, torch.ones(1, 6), a[:, :0], b[:, :0], torch.ones(1, 0), torch.zeros(1, 0, dtype=torch.bool))
    with torch.no_grad():
        got = model.prob_b(batch)[0]
        (mean_a, std_a), (mean_b, std_b) = model.moments(a[0]), model.moments(b[0])
    for i in range(6):
        u = float((mean_b[i] - mean_a[i]) / math.sqrt(float(std_a[i]) ** 2 + float(std_b[i]) ** 2))
        assert float(got[i]) == pytest.approx(0.5 * (1 + math.erf(u / math.sqrt(2))), rel=1e-5)


def test_btl_cannot_beat_the_ceiling_while_a_model_given_the_user_can(scalar_dir, test_split, tmp_path):
    config = TrainConfig(model="btl", hidden=32, heads=4, epochs=1, steps_per_epoch=20, batch_size=32, lr=3e-3, val_tasks=32)
    train(scalar_dir, tmp_path / "btl", config, progress=False)
    btl, _ = load_checkpoint(tmp_path / "btl")
    result = evaluate([("btl", btl)], test_split, [0, 5], tasks=256, targets=20)
    ceiling = result["user_agnostic_ceiling"]
    for k in ("0", "5"):
        acc = result["models"]["btl"]["accuracy"][k]
        assert acc["mean"] <= ceiling + 3 * acc["sem"]
    # Knowing the user (their hidden reward) predicts every choice.
    rewards = [SCALAR_REWARDS[test_split.users[u]] for u in test_split.user]
    predicted = [int(r(b[0]) > r(a[0])) for r, a, b in zip(rewards, test_split.option_a, test_split.option_b)]
    assert np.mean(np.array(predicted) == test_split.choice) == 1.0
    assert result["bayes_optimal"]["5"]["mean"] > ceiling + 0.15


def test_bayes_optimal_at_k0_is_the_ceiling(test_split):
    tasks = fixed_tasks(EpisodeSampler(test_split, targets=20), 2000, 0, seed=0)
    assert bayes_optimal(test_split, tasks).mean() == pytest.approx(user_agnostic_ceiling(test_split), abs=0.01)


def test_calibration_error_of_a_calibrated_predictor_is_small():
    rng = np.random.default_rng(0)
    prob = rng.uniform(size=20000)
    choice = (rng.uniform(size=20000) < prob).astype(int)
    assert calibration_error(prob, choice) < 0.02
    assert calibration_error(np.where(prob > 0.5, 1.0, 0.0), choice) > 0.2


@pytest.mark.slow
def test_a_short_run_of_np_btl_beats_btl_at_k5(scalar_dir, test_split, tmp_path):
    config = dict(hidden=64, heads=4, epochs=1, steps_per_epoch=150, batch_size=32, lr=1e-3, val_tasks=128)
    models = []
    for kind in ("btl", "np-btl"):
        train(scalar_dir, tmp_path / kind, TrainConfig(model=kind, **config), progress=False)
        models.append((kind, load_checkpoint(tmp_path / kind)[0]))
    result = evaluate(models, test_split, [5], tasks=512, targets=20)
    btl, np_btl = (result["models"][k]["accuracy"]["5"]["mean"] for k in ("btl", "np-btl"))
    assert np_btl > btl + 0.1, (btl, np_btl)


def test_build_model_rejects_heads_that_do_not_divide_hidden():
    from aloe.errors import AloeError

    with pytest.raises(AloeError, match="multiple of --heads"):
        build_model(ModelConfig("np-btl", 1, hidden=30, heads=4))


def test_conflicting_share_keeps_that_share_of_disagreeing_pairs():
    import random

    from aloe.steerable.sources import keep_conflicting_share

    items = []
    for i in range(100):
        disagree = i < 30
        items += [{"pair_id": f"p{i}", "user": "u0", "choice": 0}, {"pair_id": f"p{i}", "user": "u1", "choice": int(disagree)}]
    kept = keep_conflicting_share(items, 0.5, random.Random(0))
    pairs = {item["pair_id"] for item in kept}
    conflicting = {p for p in pairs if int(p[1:]) < 30}
    assert len(pairs) == 60 and len(conflicting) == 30
    assert keep_conflicting_share(items, None, random.Random(0)) == items


def test_method_prompts_are_found_by_name_and_listed():
    from aloe.prompts import available, prompt_hash, render

    assert render("steerable_option", prompt="Hi?", response="Hello.") == "Human: Hi?\n\nAssistant: Hello."
    assert {"steerable_option", "steerable_context_as_text", "steerable_context_example"} <= set(available())
    assert len(prompt_hash("steerable_context_as_text")) == 16


def test_original_sampling_replays_tasks_and_shares_one_k_per_batch(test_split):
    sampler = EpisodeSampler(test_split, targets=4)
    epoch_1 = list(sampler.epoch(seed=0, epoch=1, steps=3, batch_size=8, ks=[0, 1, 2, 3], original_sampling=True))
    epoch_2 = list(sampler.epoch(seed=0, epoch=2, steps=3, batch_size=8, ks=[0, 1, 2, 3], original_sampling=True))
    for one, two in zip(epoch_1, epoch_2):
        assert torch.equal(one.target_a, two.target_a) and torch.equal(one.context_mask, two.context_mask)
    for batch in epoch_1:
        assert len(set(batch.context_mask.sum(1).tolist())) == 1
