"""Checkers for the exercises of notebooks 03 and 06.

Each `check_*` takes the learner's function, compares it with the reference in `rlhf_helpers.ppo` on random
padded inputs, and, when it disagrees, recognises common mistakes and says how to fix them. A stub that still
raises `NotImplementedError` is reported as not attempted, and the reference is returned instead, so the
notebook runs top to bottom either way (that is how CI executes it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import ppo


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = [6, 2, 1, 4]
    mask = torch.tensor([[1.0] * n + [0.0] * (6 - n) for n in lengths])
    old = torch.randn(4, 6, generator=g)
    new = old + 0.5 * torch.randn(4, 6, generator=g)
    adv = torch.randn(4, 6, generator=g)
    values = torch.randn(4, 6, generator=g)
    rewards = torch.randn(4, 6, generator=g) * mask
    return mask, old, new, adv, values, rewards


def _attempt(name: str, fn: Callable, *args, module: str = "rlhf_helpers.ppo"):
    try:
        return fn(*args), True
    except NotImplementedError:
        print(f"⏭  {name}: not attempted yet, so the notebook continues with the reference "
              f"{module}.{name}. Fill in the stub and re-run this cell to check yours.")
        return None, False


def _close(a, b, tol=1e-5) -> bool:
    return torch.is_tensor(a) and a.shape == torch.as_tensor(b).shape and torch.allclose(a.float(), b, atol=tol)


def check_clipped_policy_loss(fn: Callable) -> Callable:
    """fn(logprobs, old_logprobs, advantages, mask, clip_eps) -> (loss, stats) or loss."""
    mask, old, new, adv, _, _ = _inputs()
    out, attempted = _attempt("clipped_policy_loss", fn, new, old, adv, mask, 0.2)
    if not attempted:
        return ppo.clipped_policy_loss
    loss = out[0] if isinstance(out, tuple) else out
    want, _ = ppo.clipped_policy_loss(new, old, adv, mask, 0.2)
    assert torch.is_tensor(loss) and loss.dim() == 0, \
        f"Return a scalar tensor (got {type(loss).__name__} {getattr(loss, 'shape', '')}): average the per-token terms."
    if not _close(loss, want):
        ratio = (new - old).exp()
        clipped = ratio.clamp(0.8, 1.2)
        wrong = {
            "min of the two terms instead of max: the loss is -A·ratio, so the pessimistic choice is the max "
            "(in the paper's objective, the min)": ppo.masked_mean(torch.minimum(-adv * ratio, -adv * clipped), mask),
            "a missing minus sign: the objective is maximised, so the loss is its negative":
                -want,
            "padding counted in the mean: average over response tokens only, i.e. (x·mask).sum() / mask.sum()":
                torch.maximum(-adv * ratio, -adv * clipped).mean(),
            "ratio = logprobs / old_logprobs: log-probs subtract, so ratio = exp(logprobs - old_logprobs)":
                ppo.masked_mean(torch.maximum(-adv * new / old, -adv * (new / old).clamp(0.8, 1.2)), mask),
            "no clipping at all: clamp the ratio to [1 - clip_eps, 1 + clip_eps] in the second term":
                ppo.masked_mean(-adv * ratio, mask),
        }
        for hint, value in wrong.items():
            if _close(loss, value):
                raise AssertionError(f"Close, but: {hint}.")
        raise AssertionError(f"Loss {loss.item():.5f} != reference {want.item():.5f}. Build it in steps: "
                             "ratio = exp(logprobs - old_logprobs); two terms -A·ratio and -A·clip(ratio); "
                             "their elementwise max; masked mean.")
    # Gradient check: where the clipped branch is active, no gradient may flow.
    lp = torch.log(torch.tensor([[1.5, 0.5]])).requires_grad_(True)
    out = fn(lp, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), 0.2)
    (out[0] if isinstance(out, tuple) else out).backward()
    assert torch.all(lp.grad == 0), ("Values match but gradients leak through the clip: use torch.clamp (not a "
                                     "detached copy) and torch.maximum so the clipped branch has zero gradient.")
    print("✅ clipped_policy_loss matches the reference, including its gradients.")
    return fn


def check_compute_gae(fn: Callable) -> Callable:
    """fn(rewards, values, mask, gamma, lam) -> (advantages, returns)."""
    mask, _, _, _, values, rewards = _inputs(1)
    out, attempted = _attempt("compute_gae", fn, rewards, values, mask, 1.0, 0.95)
    if not attempted:
        return ppo.compute_gae
    assert isinstance(out, tuple) and len(out) == 2, "Return a pair (advantages, returns)."
    adv, ret = out
    want_adv, want_ret = ppo.compute_gae(rewards, values, mask, 1.0, 0.95)
    if not _close(adv, want_adv, 1e-4):
        leaky_adv, _ = ppo.compute_gae(rewards, values, torch.ones_like(mask), 1.0, 0.95)
        if _close(adv * mask, leaky_adv * mask, 1e-4):
            raise AssertionError("Padding leaks into the last response token: the value after a row's last token "
                                 "is 0, and the running advantage must be reset on padding (multiply by mask).")
        one_step = (rewards - values) * mask
        if _close(adv, one_step, 1e-4):
            raise AssertionError("You returned δ_t alone: GAE accumulates A_t = δ_t + γλ·A_{t+1}, looping t "
                                 "backwards from the last token.")
        raise AssertionError("Advantages differ. δ_t = r_t + γ·V_{t+1}·mask_{t+1} - V_t; "
                             "A_t = (δ_t + γλ·A_{t+1})·mask_t, from t = T-1 down to 0.")
    assert _close(ret, want_ret, 1e-4), "Advantages are right; returns = (advantages + values), zeroed on padding."
    assert torch.all(adv[mask == 0] == 0), "Advantages must be exactly 0 on padding."
    print("✅ compute_gae matches the reference.")
    return fn


def check_kl_estimate(fn: Callable) -> Callable:
    """fn(logprobs, ref_logprobs, kind) -> per-token estimates."""
    _, old, new, _, _, _ = _inputs(2)
    out, attempted = _attempt("kl_estimate", fn, new, old, "k3")
    if not attempted:
        return ppo.kl_estimate
    for kind in ("k1", "k2", "k3"):
        got, want = fn(new, old, kind), ppo.kl_estimate(new, old, kind)
        if not _close(got, want):
            if _close(got, ppo.kl_estimate(old, new, kind)):
                raise AssertionError(f"{kind}: policy and reference are swapped. With samples from the policy, "
                                     "log r = ref_logprobs - logprobs.")
            raise AssertionError(f"{kind} differs from the reference. log r = ref - policy; k1 = -log r, "
                                 "k2 = ½(log r)², k3 = (exp(log r) - 1) - log r.")
    assert (fn(new, old, "k3") >= 0).all(), "k3 must never be negative: (r - 1) ≥ log r for every r > 0."
    print("✅ kl_estimate matches the reference for k1, k2 and k3.")
    return fn


def check_bradley_terry_loss(fn: Callable) -> Callable:
    """fn(chosen_rewards (B,), rejected_rewards (B,)) -> scalar loss, mean of −log σ(r_chosen − r_rejected)."""
    from .reward_model import bradley_terry_loss

    g = torch.Generator().manual_seed(6)
    chosen, rejected = torch.randn(8, generator=g), torch.randn(8, generator=g)
    out, attempted = _attempt("bradley_terry_loss", fn, chosen, rejected, module="rlhf_helpers.reward_model")
    if not attempted:
        return bradley_terry_loss
    want = bradley_terry_loss(chosen, rejected)
    assert torch.is_tensor(out) and out.dim() == 0, \
        f"Return a scalar tensor (got {type(out).__name__} {getattr(out, 'shape', '')}): average over the pairs."
    if not _close(out, want):
        margin = chosen - rejected
        wrong = {
            "chosen and rejected are swapped: the loss is low when r_chosen > r_rejected, so use σ(r_chosen − "
            "r_rejected)": -torch.nn.functional.logsigmoid(-margin).mean(),
            "a sum over pairs instead of the mean (the loss would grow with the batch size)":
                -torch.nn.functional.logsigmoid(margin).sum(),
            "a missing minus sign: maximise the log-likelihood, i.e. minimise −log σ(margin)":
                torch.nn.functional.logsigmoid(margin).mean(),
            "σ of each reward separately: Bradley–Terry compares the two, σ(r_chosen − r_rejected)":
                -(torch.sigmoid(chosen).log() - torch.sigmoid(rejected).log()).mean(),
            "the probability instead of its log: the loss is −log σ(margin), not 1 − σ(margin)":
                (1 - torch.sigmoid(margin)).mean(),
        }
        for hint, value in wrong.items():
            if _close(out, value):
                raise AssertionError(f"Close, but: {hint}.")
        raise AssertionError(f"Loss {out.item():.5f} != reference {want.item():.5f}. "
                             "loss = mean over pairs of −log σ(r_chosen − r_rejected).")
    extreme = fn(torch.tensor([-200.0]), torch.tensor([0.0]))
    assert torch.isfinite(extreme), ("Values match, but a margin of −200 gives inf: torch.log(torch.sigmoid(x)) "
                                     "underflows. Use torch.nn.functional.logsigmoid(x).")
    print("✅ bradley_terry_loss matches the reference, and stays finite at large margins.")
    return fn
