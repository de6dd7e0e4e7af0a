"""The notebook checkers (04; the Bradley–Terry one for 07) accept the reference, name common mistakes, fall back."""

import pytest
import torch

from rlhf_helpers import ppo
from rlhf_helpers.exercises import check_clipped_policy_loss, check_compute_gae, check_kl_estimate


def test_reference_solutions_pass():
    assert check_clipped_policy_loss(ppo.clipped_policy_loss) is ppo.clipped_policy_loss
    assert check_compute_gae(ppo.compute_gae) is ppo.compute_gae
    assert check_kl_estimate(ppo.kl_estimate) is ppo.kl_estimate


def test_unattempted_stubs_fall_back_to_the_reference(capsys):
    def stub(*args):
        raise NotImplementedError

    assert check_clipped_policy_loss(stub) is ppo.clipped_policy_loss
    assert check_compute_gae(stub) is ppo.compute_gae
    assert check_kl_estimate(stub) is ppo.kl_estimate
    assert capsys.readouterr().out.count("not attempted yet") == 3


def _policy_loss_with(combine=torch.maximum, mean=ppo.masked_mean, clip=True, detach_clip=False):
    def loss_fn(lp, old, adv, mask, eps):
        ratio = (lp - old).exp()
        clipped = ratio.clamp(1 - eps, 1 + eps) if clip else ratio
        if detach_clip:
            clipped = ratio.detach().clamp(1 - eps, 1 + eps)
        terms = combine(-adv * ratio, -adv * clipped)
        return mean(terms, mask) if mean is ppo.masked_mean else terms.mean()
    return loss_fn


@pytest.mark.parametrize("wrong, hint", [
    (_policy_loss_with(combine=torch.minimum), "min of the two terms"),
    (_policy_loss_with(mean=None), "padding counted"),
    (_policy_loss_with(clip=False), "no clipping"),
])
def test_policy_loss_mistakes_get_hints(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_clipped_policy_loss(wrong)


def test_policy_loss_sign_error_gets_a_hint():
    with pytest.raises(AssertionError, match="minus sign"):
        check_clipped_policy_loss(lambda *a: -ppo.clipped_policy_loss(*a)[0])


def test_gae_mistakes_get_hints():
    def one_step(rewards, values, mask, gamma, lam):
        return (rewards - values) * mask, rewards * mask

    with pytest.raises(AssertionError, match="δ_t alone"):
        check_compute_gae(one_step)

    def leaky(rewards, values, mask, gamma, lam):
        return ppo.compute_gae(rewards, values, torch.ones_like(mask), gamma, lam)  # mask ignored

    with pytest.raises(AssertionError, match="Padding leaks"):
        check_compute_gae(leaky)


def test_kl_swap_gets_a_hint():
    with pytest.raises(AssertionError, match="swapped"):
        check_kl_estimate(lambda lp, ref, kind: ppo.kl_estimate(ref, lp, kind))


def test_bradley_terry_checker_accepts_reference_and_names_mistakes():
    import torch.nn.functional as F

    from rlhf_helpers.exercises import check_bradley_terry_loss
    from rlhf_helpers.reward_model import bradley_terry_loss

    assert check_bradley_terry_loss(bradley_terry_loss) is bradley_terry_loss
    with pytest.raises(AssertionError, match="swapped"):
        check_bradley_terry_loss(lambda c, r: -F.logsigmoid(r - c).mean())
    with pytest.raises(AssertionError, match="sum over pairs"):
        check_bradley_terry_loss(lambda c, r: -F.logsigmoid(c - r).sum())
    with pytest.raises(AssertionError, match="logsigmoid"):
        check_bradley_terry_loss(lambda c, r: -torch.log(torch.sigmoid(c - r)).mean())


def test_bradley_terry_stub_falls_back_to_reference(capsys):
    from rlhf_helpers.exercises import check_bradley_terry_loss
    from rlhf_helpers.reward_model import bradley_terry_loss

    def stub(chosen, rejected):
        raise NotImplementedError

    assert check_bradley_terry_loss(stub) is bradley_terry_loss
    assert "not attempted" in capsys.readouterr().out


# --- Every checker: accepts the course's reference, falls back on a stub, and names a plausible mistake. ---

from types import SimpleNamespace  # noqa: E402

from rlhf_helpers import exercises  # noqa: E402
from rlhf_helpers.ppo_loop import rewards_and_advantages, sequence_kl  # noqa: E402
from rlhf_helpers.reward import positive_label_index  # noqa: E402
from rlhf_helpers.sampling import position_ids_from_mask  # noqa: E402
from rlhf_helpers.trl_runs import group_relative_advantages, leave_one_out_advantages  # noqa: E402


def _stub(*args, **kwargs):
    raise NotImplementedError


def _kl_update(kl_coef, current_kl, target, n_steps, horizon):
    controller = ppo.AdaptiveKLController(kl_coef, target, horizon)
    controller.update(current_kl, n_steps)
    return controller.value


PURE = {  # checker: (reference, [(plausible wrong implementation, words its hint must contain), ...])
    "check_positive_label_index": (positive_label_index, [
        (lambda config, positive_label="POSITIVE": 1, "by name"),
        (lambda config, positive_label="POSITIVE": next(int(i) for i, n in config.id2label.items()
                                                        if n == positive_label), "case-insensitively"),
    ]),
    "check_position_ids": (position_ids_from_mask, [
        (lambda m: torch.arange(m.shape[1]).expand_as(m), "counted from column 0"),
        (lambda m: m.cumsum(-1) - 1, "Clamp"),
    ]),
    "check_per_token_rewards": (ppo.per_token_rewards, [
        (lambda s, lp, ref, m, b: -b * (lp - ref) * m + torch.nn.functional.pad(s[:, None], (m.shape[1] - 1, 0)),
         "last \\*column\\*"),
        (lambda s, lp, ref, m, b: ppo.per_token_rewards(s, ref, lp, m, b), "wrong sign"),
    ]),
    "check_clipped_value_loss": (ppo.clipped_value_loss, [
        (lambda v, old, r, m, e: 2 * ppo.clipped_value_loss(v, old, r, m, e)[0], "½ is missing"),
        (lambda v, old, r, m, e: 0.5 * ppo.masked_mean(torch.maximum((v - r) ** 2, (v.clamp(-e, e) - r) ** 2), m),
         "values themselves were clipped"),
    ]),
    "check_masked_whiten": (ppo.masked_whiten, [
        (lambda x, m: (x - x.mean()) / x.std(), "include padding"),
        (lambda x, m: x * torch.rsqrt(ppo.masked_var(x, m) + 1e-8), "mean was not subtracted"),
    ]),
    "check_adaptive_kl_update": (_kl_update, [
        (lambda b, kl, t, n, h: b * (1 + (kl / t - 1) * n / h), "unclipped"),
        (lambda b, kl, t, n, h: b * (1 + min(max(kl / t - 1, -0.2), 0.2)), "n_episodes / horizon"),
    ]),
    "check_rewards_and_advantages": (rewards_and_advantages, [
        (lambda s, lp, ref, v, m, b, g, lam: (lambda r: (r, *ppo.compute_gae(r, v, m, g, lam)))(
            ppo.per_token_rewards(s, lp, ref, m, b)), "not whitened"),
        (lambda s, lp, ref, v, m, b, g, lam: (lambda r, ar: (r, ppo.masked_whiten(ar[0], m), ar[1]))(
            ppo.per_token_rewards(s, lp, ref, m, b), ppo.compute_gae(ppo.per_token_rewards(s, lp, ref, m, b), v, m,
                                                                      g, lam)), "padding"),
    ]),
    "check_sequence_kl": (sequence_kl, [
        (lambda lp, ref, m: ppo.masked_mean(lp - ref, m).item(), "per-\\*token\\* mean"),
        (lambda lp, ref, m: (lp - ref).sum(1).mean().item(), "Padding was summed"),
    ]),
    "check_group_relative_advantages": (group_relative_advantages, [
        (lambda r, g: (r - r.mean()) / (r.std() + 1e-4), "whole batch was one group"),
        (lambda r, g: (r.view(-1, g) - r.view(-1, g).mean(1, keepdim=True)).reshape(-1), "scale_rewards='none'"),
    ]),
    "check_leave_one_out_advantages": (leave_one_out_advantages, [
        (lambda r, g: (r.view(-1, g) - r.view(-1, g).mean(1, keepdim=True)).reshape(-1), "includes the completion"),
        (lambda r, g: (r.view(-1, g) - (r.view(-1, g).sum(1, keepdim=True) - r.view(-1, g)) / g).reshape(-1),
         "G − 1"),
    ]),
}


@pytest.mark.parametrize("name", sorted(PURE))
def test_checker_accepts_reference_falls_back_and_names_mistakes(name, capsys):
    check = getattr(exercises, name)
    reference, mistakes = PURE[name]
    check(reference)  # must not raise
    assert "✅" in capsys.readouterr().out
    fallback = check(_stub)
    assert "not attempted" in capsys.readouterr().out
    args = {"check_positive_label_index": (SimpleNamespace(id2label={0: "NEGATIVE", 1: "POSITIVE"}),),
            "check_position_ids": (torch.tensor([[0, 1, 1]]),)}.get(name)
    if args:  # the fallback is the reference itself (or behaves exactly like it)
        assert fallback(*args) == reference(*args) if name != "check_position_ids" else \
            torch.equal(fallback(*args), reference(*args))
    for wrong, hint in mistakes:
        with pytest.raises(AssertionError, match=hint):
            check(wrong)


def test_positive_label_checker_demands_an_error_for_unknown_labels():
    def guesses(config, positive_label="POSITIVE"):
        names = {int(i): n for i, n in config.id2label.items()}
        return next((i for i, n in names.items() if n.lower() == positive_label.lower()), 1)

    with pytest.raises(AssertionError, match="raise a ValueError"):
        exercises.check_positive_label_index(guesses)


def test_response_logits_checker(fast_world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_helpers.models import prepare_tokenizer
    from rlhf_helpers.sampling import pack, response_logits

    model = AutoModelForCausalLM.from_pretrained(fast_world.policy).eval()
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(fast_world.policy))
    batch = pack([torch.tensor([5, 6, 7]), torch.tensor([9])], [torch.tensor([11, 12]), torch.tensor([13, 14, 15])],
                 tok.pad_token_id)
    exercises.check_response_logits(lambda m, b: response_logits(m, b)[0], model, batch)
    fallback = exercises.check_response_logits(_stub, model, batch)
    assert torch.equal(fallback(model, batch), response_logits(model, batch)[0])

    def off_by_one(m, b):
        w = b.response_ids.shape[1]
        return m(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids).logits[:, -w:]

    def no_positions(m, b):
        w, q = b.response_ids.shape[1], b.query_len
        return m(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, q - 1:q - 1 + w]

    with torch.no_grad():
        with pytest.raises(AssertionError, match="Off by one"):
            exercises.check_response_logits(off_by_one, model, batch)
        with pytest.raises(AssertionError, match="without position_ids"):
            exercises.check_response_logits(no_positions, model, batch)


def test_ppo_update_checker(tiny_ppo):
    from rlhf_helpers.ppo_loop import ppo_update

    state, rollout = tiny_ppo
    exercises.check_ppo_update(ppo_update, state, rollout)
    # Again, now that Adam has state: a learner re-running the cell must not get a false failure.
    exercises.check_ppo_update(ppo_update, state, rollout)

    def no_zero_grad(state, rollout):  # gradients pile up across minibatches
        state.optimizer.zero_grad = lambda set_to_none=True: None
        try:
            return ppo_update(state, rollout)
        finally:
            del state.optimizer.zero_grad

    def own_shuffle(state, rollout):  # minibatches not drawn from the run's generator
        generator = state.generator
        state.generator = torch.Generator().manual_seed(123)
        try:
            return ppo_update(state, rollout)
        finally:
            state.generator = generator

    with pytest.raises(AssertionError, match="zero_grad"):
        exercises.check_ppo_update(no_zero_grad, state, rollout)
    with pytest.raises(AssertionError, match="generator"):
        exercises.check_ppo_update(own_shuffle, state, rollout)
    # After a check the state holds the loop's own update, whatever the learner's function did.
    fallback = exercises.check_ppo_update(_stub, state, rollout)
    assert fallback is ppo_update


def test_grpo_and_rloo_advantages_match_a_naive_loop():
    import statistics

    rewards = torch.tensor([0.3, -1.2, 2.0, 0.5, 0.1, 0.1, 0.9, -0.7, 1.1, 0.0, 0.4, 0.8])
    g = 4
    grpo, rloo = [], []
    for start in range(0, len(rewards), g):
        group = rewards[start:start + g].tolist()
        mean, std = statistics.mean(group), statistics.stdev(group)
        for r in group:
            grpo.append((r - mean) / (std + 1e-4))
            rloo.append(r - (sum(group) - r) / (g - 1))
    torch.testing.assert_close(group_relative_advantages(rewards, g), torch.tensor(grpo))
    torch.testing.assert_close(leave_one_out_advantages(rewards, g), torch.tensor(rloo))
    with pytest.raises(ValueError, match="multiple of"):
        group_relative_advantages(rewards[:5], g)


def test_gae_checker_catches_a_missing_discount():
    """γ = 1 alone would accept an implementation that ignores γ."""
    def no_gamma(rewards, values, mask, gamma, lam):
        return ppo.compute_gae(rewards, values, mask, 1.0, lam)

    with pytest.raises(AssertionError, match="γ = 0.9"):
        exercises.check_compute_gae(no_gamma)
