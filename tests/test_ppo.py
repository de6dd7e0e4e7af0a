"""The PPO math against independent references: Python loops, hand-computed cases, Monte Carlo."""

import math

import pytest
import torch

from rlhf_helpers.ppo import (AdaptiveKLController, FixedKLController, clipped_policy_loss, clipped_value_loss,
                              compute_gae, entropy_from_logits, kl_estimate, logprobs_from_logits, masked_mean,
                              masked_var, masked_whiten, per_token_rewards)

B, T, V = 5, 7, 11


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [7, 3, 1, 5, 6]  # right padding, one single-token response
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths])
    return g, mask, lengths


# ---- naive references: plain Python over rows and tokens -------------------------------------------

def naive_logprob(logits_row, token, temperature):
    z = [v / temperature for v in logits_row]
    m = max(z)
    return z[token] - (m + math.log(sum(math.exp(v - m) for v in z)))


def naive_masked(values, mask):
    kept = [v for row, mrow in zip(values, mask) for v, m in zip(row, mrow) if m]
    mean = sum(kept) / len(kept)
    var = sum((v - mean) ** 2 for v in kept) / len(kept)
    return mean, var


def naive_gae(rewards, values, lengths, gamma, lam):
    adv = [[0.0] * T for _ in rewards]
    for i, n in enumerate(lengths):
        running = 0.0
        for t in reversed(range(n)):
            next_v = values[i][t + 1] if t + 1 < n else 0.0
            delta = rewards[i][t] + gamma * next_v - values[i][t]
            running = delta + gamma * lam * running
            adv[i][t] = running
    ret = [[adv[i][t] + values[i][t] if t < n else 0.0 for t in range(T)] for i, n in enumerate(lengths)]
    return adv, ret


def naive_policy_loss(lp, old, adv, lengths, eps):
    terms, clipped = [], 0
    for i, n in enumerate(lengths):
        for t in range(n):
            r = math.exp(lp[i][t] - old[i][t])
            a, b = -adv[i][t] * r, -adv[i][t] * min(max(r, 1 - eps), 1 + eps)
            terms.append(max(a, b))
            clipped += b > a
    return sum(terms) / len(terms), clipped / len(terms)


# ---- tests ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_naive_loop(temperature):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(B, T, V, generator=g) * 3
    tokens = torch.randint(0, V, (B, T), generator=g)
    got = logprobs_from_logits(logits, tokens, temperature)
    for i in range(B):
        for t in range(T):
            want = naive_logprob(logits[i, t].tolist(), tokens[i, t].item(), temperature)
            assert got[i, t].item() == pytest.approx(want, abs=1e-5)


def test_entropy_matches_definition_and_bounds():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(B, T, V, generator=g)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(entropy_from_logits(logits), -(p * p.log()).sum(-1))
    assert entropy_from_logits(torch.zeros(1, 1, V)).item() == pytest.approx(math.log(V))
    assert entropy_from_logits(torch.tensor([[[100.0, 0, 0]]])).item() == pytest.approx(0, abs=1e-6)


def test_masked_statistics_match_naive_and_ignore_padding():
    g, mask, _ = _batch()
    x = torch.randn(B, T, generator=g)
    mean, var = naive_masked(x.tolist(), mask.tolist())
    assert masked_mean(x, mask).item() == pytest.approx(mean, abs=1e-6)
    assert masked_var(x, mask).item() == pytest.approx(var, abs=1e-6)  # divisor N
    assert masked_var(x, mask).item() == pytest.approx(x[mask.bool()].var(unbiased=False).item(), abs=1e-6)
    poisoned = x.masked_fill(~mask.bool(), 1e6)
    assert masked_mean(poisoned, mask).item() == pytest.approx(mean, abs=1e-4)


def test_whiten_hand_case():
    x = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    std = math.sqrt(2 / 3 + 1e-8)
    white = masked_whiten(x, mask)
    assert white[0, :3].tolist() == pytest.approx([-1 / std, 0.0, 1 / std], abs=1e-6)


def test_kl_estimators_hand_case():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])  # log r = log 0.5
    log_r = math.log(0.5)
    assert kl_estimate(lp, ref, "k1").item() == pytest.approx(-log_r)
    assert kl_estimate(lp, ref, "k2").item() == pytest.approx(0.5 * log_r**2)
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx((0.5 - 1) - log_r)
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(lp, ref, "k4")


def test_kl_estimators_monte_carlo_against_exact_kl():
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])  # policy
    q = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.2])  # reference
    exact = (p * (p / q).log()).sum().item()
    g = torch.Generator().manual_seed(0)
    x = torch.multinomial(p, 400_000, replacement=True, generator=g)
    lp, ref = p.log()[x], q.log()[x]
    k1, k2, k3 = (kl_estimate(lp, ref, k) for k in ("k1", "k2", "k3"))
    assert k1.mean().item() == pytest.approx(exact, abs=0.01)  # unbiased
    assert k3.mean().item() == pytest.approx(exact, abs=0.01)  # unbiased
    assert (k1 < 0).any(), "single-token k1 goes negative: that is expected, only its mean is the KL"
    assert (k3 >= 0).all() and (k2 >= 0).all()
    assert k3.var() < k1.var()
    # k2 is biased in general: its expectation is ½E[(log r)²], not the KL.
    assert abs(k2.mean().item() - exact) > 0.01


def test_per_token_rewards_match_naive_and_hand_case():
    g, mask, lengths = _batch()
    lp, ref = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    scores = torch.randn(B, generator=g)
    got = per_token_rewards(scores, lp, ref, mask, kl_coef=0.3)
    for i, n in enumerate(lengths):
        for t in range(T):
            want = 0.0 if t >= n else -0.3 * (lp[i, t] - ref[i, t]).item() + (scores[i].item() if t == n - 1 else 0)
            assert got[i, t].item() == pytest.approx(want, abs=1e-6)
    hand = per_token_rewards(torch.tensor([2.0]), torch.tensor([[-1.0, -2.0, 0.0]]),
                             torch.tensor([[-1.5, -1.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]]), 0.1)
    assert hand.tolist()[0] == pytest.approx([-0.05, 0.1 + 2.0, 0.0])


def test_per_token_rewards_rejects_empty_response():
    with pytest.raises(ValueError, match="at least one token"):
        per_token_rewards(torch.zeros(1), torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 3), 0.1)


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_naive_loop(gamma, lam):
    g, mask, lengths = _batch()
    rewards, values = torch.randn(B, T, generator=g) * mask, torch.randn(B, T, generator=g)
    adv, ret = compute_gae(rewards, values, mask, gamma, lam)
    want_adv, want_ret = naive_gae(rewards.tolist(), values.tolist(), lengths, gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(want_adv), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ret, torch.tensor(want_ret), atol=1e-5, rtol=1e-5)


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
    g, mask, lengths = _batch(3)
    rewards, values = torch.randn(B, T, generator=g) * mask, torch.randn(B, T, generator=g)
    adv, ret = compute_gae(rewards, values, mask, 1.0, 1.0)
    for i, n in enumerate(lengths):
        for t in range(n):
            to_go = rewards[i, t:n].sum().item()
            assert adv[i, t].item() == pytest.approx(to_go - values[i, t].item(), abs=1e-5)
            assert ret[i, t].item() == pytest.approx(to_go, abs=1e-5)
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()


def test_gae_hand_case():
    # Two tokens, γ = 1, λ = 0.5: δ1 = 1 - 0.5 = 0.5, δ0 = 0 + 0.5 - 0.2 = 0.3, A0 = 0.3 + 0.5·0.5.
    adv, ret = compute_gae(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.2, 0.5, 7.0]]),
                           torch.tensor([[1.0, 1.0, 0.0]]), 1.0, 0.5)
    assert adv.tolist()[0] == pytest.approx([0.55, 0.5, 0.0])
    assert ret.tolist()[0] == pytest.approx([0.75, 1.0, 0.0])


def test_policy_loss_matches_naive_loop():
    g, mask, lengths = _batch(4)
    old = torch.randn(B, T, generator=g)
    lp = old + 0.4 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, T, generator=g)
    loss, stats = clipped_policy_loss(lp, old, adv, mask, 0.2)
    want, want_clipfrac = naive_policy_loss(lp.tolist(), old.tolist(), adv.tolist(), lengths, 0.2)
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert stats["clipfrac"] == pytest.approx(want_clipfrac)
    assert 0 < stats["clipfrac"] < 1 and isinstance(stats["approxkl"], float)
    ratio = (lp - old).exp()[mask.bool()]
    assert stats["approxkl"] == pytest.approx(((ratio - 1) - ratio.log()).mean().item(), abs=1e-6)


def test_policy_loss_hand_case():
    # ratio = 1.5 > 1 + ε with A = +1: clipped at 1.2. ratio = 0.5 with A = -2: max(1.0, 1.6) = 1.6.
    lp = torch.log(torch.tensor([[1.5, 0.5]]))
    loss, stats = clipped_policy_loss(lp, torch.zeros(1, 2), torch.tensor([[1.0, -2.0]]), torch.ones(1, 2), 0.2)
    assert loss.item() == pytest.approx((-1.2 + 1.6) / 2)
    assert stats["clipfrac"] == pytest.approx(1.0)


def test_clip_zeroes_the_gradient_where_the_clipped_branch_is_active():
    ratios = torch.tensor([[1.5, 1.5, 0.5, 0.5, 1.1, 0.9]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0, -1.0]])
    lp = ratios.log().clone().requires_grad_(True)
    loss, _ = clipped_policy_loss(lp, torch.zeros_like(lp), adv, torch.ones_like(lp), 0.2)
    loss.backward()
    grad = lp.grad[0]
    # A > 0 and ratio above 1 + ε, or A < 0 and ratio below 1 - ε: no incentive to move further.
    assert grad[0] == 0 and grad[3] == 0
    # Otherwise the gradient is -A·ratio / N: the pessimistic (unclipped) branch keeps pulling back.
    n = ratios.numel()
    for k in (1, 2, 4, 5):
        assert grad[k].item() == pytest.approx(-adv[0, k].item() * ratios[0, k].item() / n, rel=1e-5)


def test_value_loss_hand_case_and_clip():
    values, old = torch.tensor([[1.0, 0.0, 5.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    returns, mask = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    loss, stats = clipped_value_loss(values, old, returns, mask, 0.2)
    # token 0: max((1-2)², (0.2-2)²) = 3.24 (clipped); token 1: max(1, 1) = 1.
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.0) / 2)
    assert stats["vf_clipfrac"] == pytest.approx(0.5)
    v = values.clone().requires_grad_(True)
    clipped_value_loss(v, old, returns, mask, 0.2)[0].backward()
    assert v.grad[0, 0] == 0 and v.grad[0, 2] == 0 and v.grad[0, 1] != 0


def test_value_loss_matches_naive_loop():
    g, mask, lengths = _batch(5)
    v, old, ret = (torch.randn(B, T, generator=g) for _ in range(3))
    loss, _ = clipped_value_loss(v, old, ret, mask, 0.2)
    terms = []
    for i, n in enumerate(lengths):
        for t in range(n):
            vc = old[i, t].item() + min(max(v[i, t].item() - old[i, t].item(), -0.2), 0.2)
            terms.append(max((v[i, t].item() - ret[i, t].item()) ** 2, (vc - ret[i, t].item()) ** 2))
    assert loss.item() == pytest.approx(0.5 * sum(terms) / len(terms), abs=1e-6)


def test_adaptive_kl_controller_hand_steps():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    ctl.update(current_kl=12.0, n_steps=128)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.2 * (1 + 0.2 * 128 / 10_000))
    before = ctl.value
    ctl.update(current_kl=5.4, n_steps=128)  # error = -0.1
    assert ctl.value == pytest.approx(before * (1 - 0.1 * 128 / 10_000))
    state = ctl.state_dict()
    other = AdaptiveKLController(1.0, 1.0, 1)
    other.load_state_dict(state)
    assert other.value == ctl.value
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 128)
    assert fixed.value == 0.05
    with pytest.raises(ValueError):
        AdaptiveKLController(0.2, target=0, horizon=1)
