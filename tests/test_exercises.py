"""The notebook checkers (03; the Bradley–Terry one for 06) accept the reference, name common mistakes, fall back."""

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
