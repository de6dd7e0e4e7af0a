"""Checkers for the exercises of every notebook (cells tagged `exercise`).

Each `check_*` takes the learner's function, compares it with the course's own implementation (the one the
training loop runs) on small inputs, and, when it disagrees, recognises common mistakes and says how to fix
them. A stub that still raises `NotImplementedError` is reported as not attempted, and the reference is
returned instead, so the notebook runs top to bottom either way (that is how CI executes it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import ppo
from .ppo_loop import ppo_update, rewards_and_advantages, sequence_kl
from .reward import positive_label_index
from .sampling import position_ids_from_mask, response_logits


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


def _name_the_mistake(out, wrong: dict, tol: float = 1e-5) -> None:
    """Raise with the hint of the first plausible wrong implementation whose value `out` reproduces."""
    for hint, value in wrong.items():
        if _close(out, value, tol):
            raise AssertionError(f"Close, but: {hint}.")


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
        _name_the_mistake(loss, wrong)
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
    discounted, _ = fn(rewards, values, mask, 0.9, 0.8)  # γ = 1 above hides a missing or misplaced γ
    if not _close(discounted, ppo.compute_gae(rewards, values, mask, 0.9, 0.8)[0], 1e-4):
        raise AssertionError("Right for γ = 1, wrong for γ = 0.9, λ = 0.8: δ_t discounts the next value by γ, and the "
                             "running advantage is discounted by γ·λ (not λ alone).")
    print("✅ compute_gae matches the reference, with and without discounting.")
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
    # TRL-backed: imported on first use, so that notebooks 01 and 03-05 do not pay TRL's import (seconds)
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
        _name_the_mistake(out, wrong)
        raise AssertionError(f"Loss {out.item():.5f} != reference {want.item():.5f}. "
                             "loss = mean over pairs of −log σ(r_chosen − r_rejected).")
    extreme = fn(torch.tensor([-200.0]), torch.tensor([0.0]))
    assert torch.isfinite(extreme), ("Values match, but a margin of −200 gives inf: torch.log(torch.sigmoid(x)) "
                                     "underflows. Use torch.nn.functional.logsigmoid(x).")
    print("✅ bradley_terry_loss matches the reference, and stays finite at large margins.")
    return fn


# --------------------------------------------------------------------------------------- supervised fine-tuning


def _sft_inputs():
    """Three right-padded rows of prompt + response (lengths differ) with random logits over a vocabulary of 11."""
    g = torch.Generator().manual_seed(12)
    input_ids = torch.randint(0, 11, (3, 7), generator=g)
    response_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0],    # prompt 2, response 4, one pad
                                  [0, 0, 0, 0, 1, 1, 1],    # prompt 4, response 3
                                  [0, 1, 1, 0, 0, 0, 0]])   # prompt 1, response 2, four pads
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1] * 7, [1, 1, 1, 0, 0, 0, 0]])
    return torch.randn(3, 7, 11, generator=g), input_ids, response_mask, attention_mask


def check_sft_loss(fn: Callable) -> Callable:
    """fn(logits (B, T, V), input_ids (B, T), response_mask (B, T)) -> scalar: next-token cross-entropy averaged over
    every response token of the batch."""
    # sft.py imports the IMDB loader (datasets): imported on first use, so that the other notebooks do not pay for it
    from .sft import sft_loss

    logits, ids, response, attention = _sft_inputs()
    out, attempted = _attempt("sft_loss", fn, logits, ids, response, module="rlhf_helpers.sft")
    if not attempted:
        return sft_loss
    want = sft_loss(logits, ids, response)
    assert torch.is_tensor(out) and out.dim() == 0, \
        f"Return a scalar tensor (got {type(out).__name__} {getattr(out, 'shape', '')}): average over the tokens."
    if not _close(out, want):
        def token_mean(nll, mask):
            return (nll * mask).sum() / mask.sum()

        def nll_at(shift: int):
            if shift:
                return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            return torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none")

        shifted, same = nll_at(1), nll_at(0)
        per_row = (shifted * response[:, 1:]).sum(1) / response[:, 1:].sum(1)
        wrong = {
            "no shift: the logits at position t predict the token at t + 1, so compare logits[:, :-1] with "
            "input_ids[:, 1:]": token_mean(same, response.float()),
            "the mask is not shifted with the targets: the target at t + 1 is a response token when "
            "response_mask[:, 1:] is 1": token_mean(shifted, response[:, :-1].float()),
            "the prompt is counted: the model is not asked to write the prompt, so only response tokens enter (use "
            "response_mask, not attention_mask)": token_mean(shifted, attention[:, 1:].float()),
            "padding is averaged in: divide by the number of response tokens, not by every position":
                (shifted * response[:, 1:]).sum() / shifted.numel(),
            "a mean per row, then over rows: TRL (and the course) average over every response token of the batch, so "
            "a longer response weighs more": per_row.mean(),
            "a sum instead of the mean (the loss would grow with the batch)": (shifted * response[:, 1:]).sum(),
        }
        _name_the_mistake(out, wrong)
        raise AssertionError(f"Loss {out.item():.5f} != reference {want.item():.5f}. loss = sum over response "
                             "tokens of −log p(token | everything before it) / number of response tokens.")
    print("✅ sft_loss matches the reference: shifted by one, response tokens only, averaged over them.")
    return fn


# ---------------------------------------------------------------------------------------------- notebook 01


def check_positive_label_index(fn: Callable) -> Callable:
    """fn(config, positive_label="POSITIVE") -> int, the output index whose label is `positive_label`."""
    from types import SimpleNamespace

    usual = SimpleNamespace(id2label={0: "NEGATIVE", 1: "POSITIVE"})
    out, attempted = _attempt("positive_label_index", fn, usual, module="rlhf_helpers.reward")
    if not attempted:
        return positive_label_index
    flipped = SimpleNamespace(id2label={0: "POSITIVE", 1: "NEGATIVE"})
    assert isinstance(out, int) and not isinstance(out, bool), \
        f"Return the index as an int (got {out!r}): the position of the POSITIVE logit in the model's output."
    got = fn(flipped)
    assert got == 0, (f"For id2label {flipped.id2label} you returned {got!r}, not 0: the index depends on the model. "
                      "Look the label up by name in config.id2label; never assume 1 or 'the first output'.")
    assert out == 1, f"For id2label {usual.id2label} you returned {out!r}, not 1."
    lower = SimpleNamespace(id2label={0: "negative", 1: "positive", 2: "neutral"})
    try:
        got = fn(lower)
    except Exception as err:  # noqa: BLE001 - any failure here is the case-sensitivity mistake
        got = f"{type(err).__name__}: {err}"
    assert got == 1, (f"For id2label {lower.id2label} you returned {got!r}, not 1: compare names case-insensitively "
                      "(many hub classifiers spell their labels in lower case).")
    string_keys = SimpleNamespace(id2label={"0": "NEGATIVE", "1": "POSITIVE"})
    got = fn(string_keys)
    assert got == 1 and isinstance(got, int), (
        f"For id2label {string_keys.id2label} (keys as strings, as JSON configs load them) you returned {got!r}: "
        "convert the key with int(...).")
    try:
        got = fn(SimpleNamespace(id2label={0: "LABEL_0", 1: "LABEL_1"}))
    except (ValueError, KeyError):
        pass
    else:
        raise AssertionError(f"For labels LABEL_0/LABEL_1 you returned {got!r}. No label is POSITIVE there: raise "
                             "a ValueError that shows the labels, so nobody trains on a guessed class.")
    print("✅ positive_label_index finds the label by name, in any order or case, and refuses to guess.")
    return fn


# ---------------------------------------------------------------------------------------------- notebook 03


def check_position_ids(fn: Callable) -> Callable:
    """fn(attention_mask (B, L)) -> position ids (B, L): 0 at each row's first real token."""
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]])
    out, attempted = _attempt("position_ids_from_mask", fn, mask, module="rlhf_helpers.sampling")
    if not attempted:
        return position_ids_from_mask
    want = position_ids_from_mask(mask)
    assert torch.is_tensor(out) and out.shape == mask.shape, \
        f"Return a (B, L) tensor like the mask (got {type(out).__name__} {tuple(getattr(out, 'shape', ()))})."
    real = mask.bool()
    if not torch.equal(out[real].long(), want[real]):
        if torch.equal(out[real].long(), torch.arange(6).expand(3, 6)[real]):
            raise AssertionError("Positions are counted from column 0, padding included: that is exactly the bug. "
                                 "Count real tokens only: attention_mask.cumsum(-1) - 1.")
        if torch.equal(out[real].long(), want[real] + 1):
            raise AssertionError("Off by one: the first real token is position 0, so subtract 1 from the cumsum.")
        raise AssertionError(f"Row 0 (mask {mask[0].tolist()}) should be {want[0].tolist()}, got {out[0].tolist()}.")
    if (out < 0).any():
        raise AssertionError("Padding columns got negative positions (cumsum - 1 = -1 before the first real token); "
                             "an embedding lookup at -1 fails or wraps around. Clamp them to 0 with .clamp(min=0).")
    print("✅ position ids count real tokens only, starting at 0.")
    return fn


def check_response_logits(fn: Callable, model, batch) -> Callable:
    """fn(model, batch: PackedBatch) -> logits (B, Lr, V) that predict each response token."""
    reference = lambda model, batch: response_logits(model, batch)[0]  # noqa: E731
    with torch.no_grad():
        out, attempted = _attempt("response_logits", fn, model, batch, module="rlhf_helpers.sampling")
        if not attempted:
            return reference
        want = reference(model, batch)
        device = want.device
        full = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                     position_ids=batch.position_ids.to(device)).logits
    assert torch.is_tensor(out), "Return the logits tensor (B, Lr, V), not the model output object."
    assert out.shape == want.shape, (f"Shape {tuple(out.shape)}, expected {tuple(want.shape)} = (B, Lr, V): one row "
                                     f"of logits per response position, Lr = batch.response_ids.shape[1].")
    lr, lq = want.shape[1], batch.query_len
    if not torch.allclose(out.float(), want.float(), atol=1e-3):
        if torch.allclose(out.float(), full[:, lq:lq + lr].float(), atol=1e-3):
            raise AssertionError("Off by one: the logits at column c predict the token at column c + 1, so response "
                                 "token t (column Lq + t) is predicted at column Lq + t - 1. Start the slice at "
                                 "batch.query_len - 1. (Taking the last Lr columns makes the same mistake.)")
        no_pos = model(input_ids=batch.input_ids.to(device),
                       attention_mask=batch.attention_mask.to(device)).logits[:, lq - 1:lq - 1 + lr]
        if torch.allclose(out.float(), no_pos.float(), atol=1e-3):
            raise AssertionError("The right columns, but without position_ids: left-padded rows then start at the "
                                 "wrong position. Pass position_ids=batch.position_ids to the model.")
        raise AssertionError("Logits differ from the reference. Run the model on input_ids, attention_mask and "
                             "position_ids, then keep columns [Lq - 1, Lq - 1 + Lr).")
    print("✅ response_logits picks the columns that predict each response token.")
    return fn


# ---------------------------------------------------------------------------------------------- notebook 04


def check_per_token_rewards(fn: Callable) -> Callable:
    """fn(scores (B,), logprobs, ref_logprobs, mask (B, T), kl_coef) -> rewards (B, T)."""
    mask, old, new, _, _, _ = _inputs(3)
    scores = torch.tensor([1.5, -0.5, 2.0, 0.25])
    out, attempted = _attempt("per_token_rewards", fn, scores, new, old, mask, 0.1)
    if not attempted:
        return ppo.per_token_rewards
    want = ppo.per_token_rewards(scores, new, old, mask, 0.1)
    assert torch.is_tensor(out) and out.shape == want.shape, \
        f"Return a (B, T) tensor of per-token rewards (got {tuple(getattr(out, 'shape', ()))})."
    if not _close(out, want):
        kl = -0.1 * (new - old) * mask
        last = mask.sum(1).long() - 1
        at_column = torch.zeros_like(mask)
        at_column[:, -1] = scores
        first = torch.zeros_like(mask)
        first[:, 0] = scores
        wrong = {
            "the score went to the last *column*, which is padding for shorter rows: put it on each row's last "
            "real token, index mask.sum(1) - 1": kl + at_column,
            "the score went to the first token: the classifier judges the finished text, so it arrives last":
                kl + first,
            "the score was added to every token: it is paid once, on the last token": kl + scores[:, None] * mask,
            "the KL term has the wrong sign: moving away from the reference must *cost* reward, "
            "−β·(logprobs − ref_logprobs)": -kl + (want - kl),
            "the KL penalty is missing: every token pays −β·(logprobs − ref_logprobs)": want - kl,
            "padding got a KL penalty: multiply it by the mask": -0.1 * (new - old) + (want - kl),
        }
        _name_the_mistake(out, wrong)
        raise AssertionError(f"Rewards differ, e.g. row 1: {out[1].tolist()} vs {want[1].tolist()}. Every response "
                             f"token: −β·(logprobs − ref_logprobs); the last one (index {last.tolist()}) also gets "
                             "the score; padding 0.")
    print("✅ per_token_rewards: KL on every token, the score on the last one, nothing on padding.")
    return fn


def check_clipped_value_loss(fn: Callable) -> Callable:
    """fn(values, old_values, returns, mask, clip_eps) -> (loss, stats) or loss."""
    mask, _, _, _, values, rewards = _inputs(4)
    old_values = values + 0.4 * torch.randn(values.shape, generator=torch.Generator().manual_seed(5))
    returns = rewards + values
    out, attempted = _attempt("clipped_value_loss", fn, values, old_values, returns, mask, 0.2)
    if not attempted:
        return ppo.clipped_value_loss
    loss = out[0] if isinstance(out, tuple) else out
    want, _ = ppo.clipped_value_loss(values, old_values, returns, mask, 0.2)
    assert torch.is_tensor(loss) and loss.dim() == 0, "Return a scalar loss (or (loss, stats))."
    if not _close(loss, want):
        clipped = old_values + (values - old_values).clamp(-0.2, 0.2)
        a, b = (values - returns) ** 2, (clipped - returns) ** 2
        wrong = {
            "the ½ is missing: the loss is ½·mean(max(...))": ppo.masked_mean(torch.maximum(a, b), mask),
            "min instead of max: like the policy loss, the value loss takes the pessimistic (larger) error":
                0.5 * ppo.masked_mean(torch.minimum(a, b), mask),
            "the values themselves were clipped to ±ε: clip the *change* around the old values, "
            "old_values + clamp(values − old_values, −ε, ε)":
                0.5 * ppo.masked_mean(torch.maximum(a, (values.clamp(-0.2, 0.2) - returns) ** 2), mask),
            "padding counted in the mean: average over response tokens only": 0.5 * torch.maximum(a, b).mean(),
            "no clipping at all: add the clipped branch and take the max": 0.5 * ppo.masked_mean(a, mask),
        }
        _name_the_mistake(loss, wrong)
        raise AssertionError(f"Loss {loss.item():.5f} != reference {want.item():.5f}: "
                             "½·masked_mean(max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)).")
    print("✅ clipped_value_loss matches the reference.")
    return fn


def check_masked_whiten(fn: Callable) -> Callable:
    """fn(x (B, T), mask (B, T)) -> (x - mean) / sqrt(var + 1e-8), statistics over unmasked entries."""
    mask, _, _, adv, _, _ = _inputs(7)
    x = (3.0 + 2.0 * adv) * mask + 50.0 * (1 - mask)  # padding holds garbage that must not count
    out, attempted = _attempt("masked_whiten", fn, x, mask)
    if not attempted:
        return ppo.masked_whiten
    want = ppo.masked_whiten(x, mask)
    assert torch.is_tensor(out) and out.shape == x.shape, "Return a tensor shaped like x."
    real = mask.bool()
    if not torch.allclose(out[real], want[real], atol=1e-4):
        if torch.allclose(out[real], ((x - x.mean()) / x.std())[real], atol=1e-4) or \
                torch.allclose(out[real], ((x - x.mean()) / x.std(unbiased=False))[real], atol=1e-4):
            raise AssertionError("The statistics include padding (x.mean(), x.std()): use masked_mean and "
                                 "masked_var over response tokens only.")
        mean = ppo.masked_mean(x, mask)
        n = mask.sum()
        unbiased = ((x - mean) ** 2 * mask).sum() / (n - 1)
        if torch.allclose(out[real], ((x - mean) / unbiased.sqrt())[real], atol=1e-4):
            raise AssertionError("Nearly: the course divides the variance by N (masked_var), not N − 1.")
        if torch.allclose(out[real], (x / ppo.masked_var(x, mask).sqrt())[real], atol=1e-4):
            raise AssertionError("The mean was not subtracted: advantages are centred, so about half the tokens are "
                                 "pushed down.")
        raise AssertionError("Whitened values differ: (x − masked_mean) / sqrt(masked_var + 1e-8).")
    print("✅ masked_whiten: mean 0, std 1 over response tokens.")
    return fn


def check_adaptive_kl_update(fn: Callable) -> Callable:
    """fn(kl_coef, current_kl, target, n_episodes, horizon) -> the new β (Ziegler et al. 2019)."""

    def reference(kl_coef, current_kl, target, n_episodes, horizon):
        controller = ppo.AdaptiveKLController(kl_coef, target, horizon)
        controller.update(current_kl, n_episodes)
        return controller.value

    out, attempted = _attempt("AdaptiveKLController.update", fn, 0.2, 7.0, 6.0, 128, 10_000)
    if not attempted:
        return reference
    cases = [(0.2, 7.0, 6.0, 128, 10_000), (0.2, 30.0, 6.0, 128, 10_000), (0.1, 1.0, 6.0, 256, 10_000),
             (0.05, 6.0, 6.0, 64, 1_000)]
    for case in cases:
        got, want = float(fn(*case)), reference(*case)
        if abs(got - want) > 1e-9:
            kl_coef, kl, target, n, horizon = case
            raw = kl / target - 1
            if abs(got - kl_coef * (1 + raw * n / horizon)) < 1e-9:
                raise AssertionError(f"At KL {kl} vs target {target} the error {raw:+.2f} is used unclipped: clip it "
                                     "to [−0.2, 0.2], so one wild batch cannot swing β.")
            if abs(got - kl_coef * (1 - min(max(raw, -0.2), 0.2) * n / horizon)) < 1e-9:
                raise AssertionError("The sign is flipped: a KL above target must *raise* β (a stronger penalty).")
            if abs(got - kl_coef * (1 + min(max(raw, -0.2), 0.2))) < 1e-9:
                raise AssertionError("β moved by the whole error: scale it by n_episodes / horizon (episodes in this "
                                     "step over the controller's horizon).")
            raise AssertionError(f"For {case}: got {got:.6f}, expected {want:.6f}. "
                                 "error = clip(KL/target − 1, −0.2, 0.2); β·(1 + error·n_episodes/horizon).")
    print("✅ the adaptive KL update matches AdaptiveKLController.")
    return fn


# ---------------------------------------------------------------------------------------------- notebook 05


def check_rewards_and_advantages(fn: Callable) -> Callable:
    """fn(scores, logprobs, ref_logprobs, values, mask, kl_coef, gamma, lam) -> (rewards, advantages, returns)."""
    mask, old, new, _, values, _ = _inputs(8)
    values = values * mask
    scores = torch.tensor([0.5, -1.0, 2.0, 0.0])
    args = (scores, new, old, values, mask, 0.05, 1.0, 0.95)
    out, attempted = _attempt("rewards_and_advantages", fn, *args, module="rlhf_helpers.ppo_loop")
    if not attempted:
        return rewards_and_advantages
    assert isinstance(out, tuple) and len(out) == 3, "Return three tensors: (rewards, advantages, returns)."
    rewards, advantages, returns = out
    want_rewards, want_adv, want_ret = rewards_and_advantages(*args)
    assert _close(rewards, want_rewards), "rewards differ: ppo.per_token_rewards(scores, logprobs, ref_logprobs, " \
                                          "mask, kl_coef)."
    assert _close(returns, want_ret, 1e-4), "returns differ: take them from ppo.compute_gae, *before* whitening."
    if not _close(advantages, want_adv, 1e-4):
        raw, _ = ppo.compute_gae(want_rewards, values, mask, 1.0, 0.95)
        if _close(advantages, raw, 1e-4):
            raise AssertionError("Advantages are not whitened: ppo.masked_whiten(advantages, mask) "
                                 "('N implementation details' #7).")
        if _close(advantages, ppo.masked_whiten(raw, mask), 1e-4):
            raise AssertionError("Whitening shifted the padding away from 0: multiply the whitened advantages by "
                                 "the mask again.")
        raise AssertionError("Advantages differ: GAE on the rewards and values, then masked_whiten, then × mask.")
    print("✅ rewards, advantages and returns match the loop's own rewards_and_advantages.")
    return fn


def check_sequence_kl(fn: Callable) -> Callable:
    """fn(logprobs, ref_logprobs, mask) -> float: k1 summed over each response, averaged over the batch."""
    mask, old, new, _, _, _ = _inputs(9)
    out, attempted = _attempt("sequence_kl", fn, new, old, mask, module="rlhf_helpers.ppo_loop")
    if not attempted:
        return sequence_kl
    want = sequence_kl(new, old, mask)
    got = float(out)
    if abs(got - want) > 1e-5:
        k1 = (new - old) * mask
        if abs(got - ppo.masked_mean(new - old, mask).item()) < 1e-5:
            raise AssertionError("That is the per-*token* mean. The target (6 nats) is per response: sum k1 over "
                                 "each response's tokens, then average over responses.")
        if abs(got - k1.sum().item()) < 1e-5:
            raise AssertionError("That is the sum over the whole batch: average the per-response sums over rows.")
        if abs(got - (new - old).sum(1).mean().item()) < 1e-5:
            raise AssertionError("Padding was summed too: multiply by the mask first.")
        if abs(got + want) < 1e-5:
            raise AssertionError("Sign flipped: KL(π‖π_ref) is estimated by log π − log π_ref on π's samples.")
        raise AssertionError(f"Got {got:.5f}, expected {want:.5f}: ((logprobs − ref_logprobs)·mask).sum(1).mean().")
    print("✅ sequence_kl matches the loop's.")
    return fn


def check_ppo_update(fn: Callable, state, rollout) -> Callable:
    """fn(state, rollout) -> stats dict. Runs the learner's update and the loop's `ppo_update` from the same
    starting point (weights, optimizer, generator) and compares the resulting weights. Leaves `state` as it
    found it: the notebook's next cell runs the update it returns."""
    import copy

    def snapshot():
        return (copy.deepcopy(state.policy.state_dict()), copy.deepcopy(state.value_head.state_dict()),
                copy.deepcopy(state.optimizer.state_dict()), state.generator.get_state())

    def restore(saved):
        state.policy.load_state_dict(saved[0])
        state.value_head.load_state_dict(saved[1])
        # A fresh copy each time: load_state_dict keeps the given tensors, and the next update changes them in place.
        state.optimizer.load_state_dict(copy.deepcopy(saved[2]))
        state.generator.set_state(saved[3])

    start = snapshot()
    before = [p.detach().clone() for p in state.policy.parameters()]
    out, attempted = _attempt("ppo_update", fn, state, rollout, module="rlhf_helpers.ppo_loop")
    if not attempted:
        restore(start)
        return ppo_update
    theirs = [p.detach().clone() for p in (*state.policy.parameters(), *state.value_head.parameters())]
    assert isinstance(out, dict) and "policy_loss" in out, \
        "Return the stats dict (at least 'policy_loss', 'value_loss', 'clipfrac', 'approxkl', averaged)."
    moved = any(not torch.equal(a, b) for a, b in zip(theirs, before))
    assert moved, "No weight changed: call loss.backward() and state.optimizer.step() for every minibatch."

    def frozen_losses(update):  # learning rate 0: the losses depend only on which rows each minibatch holds
        restore(start)
        for group in state.optimizer.param_groups:
            group["lr"] = 0.0
        stats = update(state, rollout)
        return stats["policy_loss"], stats.get("value_loss", float("nan"))

    (their_pg, their_vf), (want_pg, want_vf) = frozen_losses(fn), frozen_losses(ppo_update)
    restore(start)
    ppo_update(state, rollout)
    ours = [p.detach().clone() for p in (*state.policy.parameters(), *state.value_head.parameters())]
    if abs(their_pg - want_pg) > 1e-4:
        raise AssertionError(
            f"Even with the weights frozen, the mean policy loss is {their_pg:.5f} vs the loop's {want_pg:.5f}. The "
            "usual causes: minibatches not drawn with torch.randperm(batch_size, generator=state.generator) once per "
            "epoch; old log-probs, advantages or mask not indexed with the same minibatch indices; fewer or more "
            "than ppo_epochs passes.")
    if abs(their_vf - want_vf) > 1e-4:
        raise AssertionError(f"Mean value loss {their_vf:.5f} vs the loop's {want_vf:.5f}: clipped_value_loss(values, "
                             "rollout.values[idx], rollout.returns[idx], mask, cliprange_value).")
    worst = max((a.float() - b.float()).abs().max().item() for a, b in zip(theirs, ours))
    if worst > 1e-4:
        raise AssertionError(
            f"Same losses at the start, but the weights end up {worst:.2e} apart. The usual causes: no "
            "optimizer.zero_grad() before backward (gradients pile up across minibatches); no clip_grad_norm_ over "
            "policy *and* value head with max_grad_norm; the value loss not weighted by vf_coef.")
    restore(start)
    print("✅ your update moves the weights exactly as the loop's ppo_update does.")
    return fn


# ---------------------------------------------------------------------------------------------- notebook 06


def _group_rewards():
    return torch.tensor([0.9, -0.4, 0.2, 0.7, 1.5, 1.5, 0.0, -2.0])


def _check_advantages(fn: Callable, reference: Callable, tolerance: float, mistakes: Callable, done: str) -> Callable:
    """The notebook 06 checkers' common part: `fn` against `reference` on two groups of four rewards; on a mismatch,
    name the mistake from `mistakes(rewards, grouped)` (hint -> what that mistake computes)."""
    rewards = _group_rewards()
    out, attempted = _attempt(reference.__name__, fn, rewards, 4, module="rlhf_helpers.trl_runs")
    if not attempted:
        return reference
    want = reference(rewards, 4)
    assert torch.is_tensor(out) and out.shape == rewards.shape, "Return one advantage per completion, shape (N,)."
    if not _close(out, want, tolerance):
        _name_the_mistake(out, mistakes(rewards, rewards.view(2, 4)), tolerance)
        raise AssertionError(f"Got {out.tolist()}, expected {[round(x, 4) for x in want.tolist()]}.")
    print(done)
    return fn


def _grpo_mistakes(rewards: torch.Tensor, grouped: torch.Tensor) -> dict:
    centred = grouped - grouped.mean(1, keepdim=True)
    return {
        "the whole batch was one group: the baseline is the mean of *this prompt's* completions "
        "(rewards.view(-1, group_size))": (rewards - rewards.mean()) / (rewards.std() + 1e-4),
        "not divided by the group's std (that is scale_rewards='none', i.e. Dr. GRPO)": centred.reshape(-1),
        "the biased std (N): TRL divides by the unbiased one (torch.std's default, N − 1)":
            (centred / (grouped.std(1, unbiased=False, keepdim=True) + 1e-4)).reshape(-1),
        "groups were taken as strided columns: the G completions of one prompt are adjacent, view(-1, G)":
            ((rewards.view(4, 2) - rewards.view(4, 2).mean(0)) / (rewards.view(4, 2).std(0) + 1e-4)).reshape(-1),
    }


def _rloo_mistakes(rewards: torch.Tensor, grouped: torch.Tensor) -> dict:
    return {
        "the baseline includes the completion itself (plain group mean): leave it out, "
        "(group sum − r) / (G − 1)": (grouped - grouped.mean(1, keepdim=True)).reshape(-1),
        "divided by G instead of G − 1: the baseline averages the G − 1 *other* completions":
            (grouped - (grouped.sum(1, keepdim=True) - grouped) / 4).reshape(-1),
        "the whole batch was one group: use rewards.view(-1, group_size)":
            rewards - (rewards.sum() - rewards) / (len(rewards) - 1),
    }


def check_group_relative_advantages(fn: Callable) -> Callable:
    """fn(rewards (N,), group_size) -> (N,) GRPO advantages: (r − group mean) / (group std + 1e-4)."""
    # TRL-backed: imported on first use, so that notebooks 01 and 03-05 do not pay TRL's import (seconds)
    from .trl_runs import group_relative_advantages

    return _check_advantages(fn, group_relative_advantages, 1e-4, _grpo_mistakes,
                             "✅ group-relative advantages match GRPO's.")


def check_leave_one_out_advantages(fn: Callable) -> Callable:
    """fn(rewards (N,), group_size) -> (N,) RLOO advantages: r − mean of the other completions of the prompt."""
    # TRL-backed: imported on first use, so that notebooks 01 and 03-05 do not pay TRL's import (seconds)
    from .trl_runs import leave_one_out_advantages

    return _check_advantages(fn, leave_one_out_advantages, 1e-5, _rloo_mistakes,
                             "✅ leave-one-out advantages match RLOO's.")


# ---------------------------------------------------------------------------------------------- notebook 08


def _dpo_inputs():
    g = torch.Generator().manual_seed(7)
    lengths_c, lengths_r = [5, 2, 3, 1], [1, 4, 5, 2]
    mask_c = torch.tensor([[1.0] * n + [0.0] * (5 - n) for n in lengths_c])
    mask_r = torch.tensor([[1.0] * n + [0.0] * (5 - n) for n in lengths_r])
    logps = [-3 * torch.rand(4, 5, generator=g) for _ in range(4)]
    return logps, mask_c, mask_r


def check_dpo_loss(fn: Callable) -> Callable:
    """fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta), per-token
    log-probs and masks (B, T) each -> (losses (B,), chosen_rewards (B,), rejected_rewards (B,)), as `dpo.dpo_loss`
    computes them from the sequence sums."""
    import torch.nn.functional as F

    # TRL-backed: imported on first use, so that notebooks 01 and 03-05 do not pay TRL's import (seconds)
    from .dpo import dpo_loss

    def reference(pc, pr, rc, rr, mc, mr, beta):
        return dpo_loss((pc * mc).sum(-1), (pr * mr).sum(-1), (rc * mc).sum(-1), (rr * mr).sum(-1), beta)

    (pc, pr, rc, rr), mc, mr = _dpo_inputs()
    beta = 0.5
    leaves = [t.clone().requires_grad_() for t in (pc, pr, rc, rr)]
    out, attempted = _attempt("dpo_loss", fn, *leaves, mc, mr, beta, module="rlhf_helpers.dpo")
    if not attempted:
        return reference
    assert isinstance(out, tuple) and len(out) == 3, "Return (losses, chosen_rewards, rejected_rewards)."
    losses, chosen_rewards, rejected_rewards = out
    want = reference(pc, pr, rc, rr, mc, mr, beta)
    assert torch.is_tensor(losses) and losses.shape == (4,), \
        f"Return one loss per pair, shape (B,) = (4,) (got {getattr(losses, 'shape', type(losses))}): no mean yet."
    if not _close(losses, want[0]):
        def seq(x, m, mean=False):
            return (x * m).sum(-1) / (m.sum(-1) if mean else 1)

        delta = (seq(pc, mc) - seq(rc, mc)) - (seq(pr, mr) - seq(rr, mr))
        delta_mean = (seq(pc, mc, True) - seq(rc, mc, True)) - (seq(pr, mr, True) - seq(rr, mr, True))
        wrong = {
            "a per-token mean instead of the sum: log π(y|x) is the sum of the response's token log-probs "
            "(a mean would make long and short responses weigh the same)": -F.logsigmoid(beta * delta_mean),
            "the padding was summed too: multiply by the mask before summing":
                -F.logsigmoid(beta * ((pc.sum(-1) - rc.sum(-1)) - (pr.sum(-1) - rr.sum(-1)))),
            "chosen and rejected are swapped: the loss must fall as the chosen log-ratio rises": -F.logsigmoid(
                -beta * delta),
            "β outside the log-sigmoid: it scales the margin, −log σ(β·Δ), not the loss":
                -beta * F.logsigmoid(delta),
            "a missing minus sign: minimise −log σ(β·Δ)": F.logsigmoid(beta * delta),
            "the reference log-ratios are missing: Δ = (π_c − ref_c) − (π_r − ref_r)":
                -F.logsigmoid(beta * (seq(pc, mc) - seq(pr, mr))),
        }
        _name_the_mistake(losses, wrong)
        raise AssertionError(f"Losses {losses.tolist()} != reference {want[0].tolist()}. "
                             "loss = −log σ(β·[(π_c − ref_c) − (π_r − ref_r)]) with π = summed log-probs.")
    assert _close(chosen_rewards, want[1]) and _close(rejected_rewards, want[2]), \
        "The losses match, but the implicit rewards do not: chosen_rewards = β·(π_c − ref_c), likewise rejected."
    losses.sum().backward()
    for name, leaf in (("ref_chosen", leaves[2]), ("ref_rejected", leaves[3])):
        assert leaf.grad is None or not leaf.grad.abs().any(), \
            f"Values match, but gradient reaches {name}: the reference is frozen, so .detach() its log-probs."
    assert leaves[0].grad is not None and leaves[0].grad.abs().any(), \
        "Values match, but no gradient reaches the policy's log-probs: do not detach the policy side."
    print("✅ dpo_loss matches the reference, with the reference detached.")
    return fn
