"""TRL's own loss computations against the course's `clipped_policy_loss` and `kl_estimate`, on the same tensors."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf_helpers import ppo
from rlhf_helpers.models import prepare_tokenizer
from rlhf_helpers.profiles import get_profile
from rlhf_helpers.trl_runs import make_trl_trainer, sentiment_reward_func, trl_config

PROMPTS = ["I watched this movie", "The acting was", "What a film", "Bad"] * 4


def _trainer(fast_world, tmp_path, algo, beta, **overrides):
    torch.manual_seed(0)
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(fast_world.policy))
    policy = AutoModelForCausalLM.from_pretrained(fast_world.policy)
    args = trl_config(algo, get_profile("smoke"), str(tmp_path), rounds=1, batch_size=16, mini_batch_size=16,
                      beta=beta, **overrides)
    reward_func = sentiment_reward_func(lambda texts: torch.zeros(len(texts)))
    return make_trl_trainer(algo, policy, tok, reward_func, PROMPTS, args), tok


def _inputs(tok, device):
    g = torch.Generator().manual_seed(1)
    enc = tok(PROMPTS[:6], return_tensors="pt", padding=True)
    completion_ids = torch.randint(0, len(tok), (6, 5), generator=g)
    completion_mask = torch.tensor([[1] * n + [0] * (5 - n) for n in (5, 3, 1, 4, 5, 2)])
    return {"prompt_ids": enc["input_ids"].to(device), "prompt_mask": enc["attention_mask"].to(device),
            "completion_ids": completion_ids.to(device), "completion_mask": completion_mask.to(device),
            "advantages": torch.randn(6, generator=g).to(device)}


@pytest.mark.parametrize("beta, bias_correction", [(0.0, True), (0.05, False), (0.05, True)])
def test_grpo_loss_is_clipped_policy_loss_plus_beta_k3(fast_world, tmp_path, beta, bias_correction):
    trainer, tok = _trainer(fast_world, tmp_path, "grpo", beta, use_bias_correction_kl=bias_correction)
    model = trainer.model.eval()  # eval mode: TRL normalizes by the tokens of this batch alone
    inputs = _inputs(tok, model.device)
    mask = inputs["completion_mask"].float()
    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention, 5)
    g = torch.Generator().manual_seed(2)
    inputs["old_per_token_logps"] = logps + 0.3 * torch.randn(logps.shape, generator=g)  # ratios away from 1
    inputs["ref_per_token_logps"] = logps + 0.5 * torch.randn(logps.shape, generator=g)
    inputs["num_items_in_batch"] = mask.sum()
    with torch.no_grad():
        trl_loss = trainer._compute_loss(model, inputs)

    advantages = inputs["advantages"][:, None].expand_as(logps)
    ours, stats = ppo.clipped_policy_loss(logps, inputs["old_per_token_logps"], advantages, mask, 0.2)
    assert 0 < stats["clipfrac"] < 1, "the test must exercise both branches of the clip"
    if beta:
        k3 = ppo.kl_estimate(logps, inputs["ref_per_token_logps"], "k3")
        if bias_correction:  # TRL's default: weight the KL by the ratio π/π_old (DeepSeek-V3.2)
            k3 = k3 * torch.exp(logps - inputs["old_per_token_logps"])
        ours = ours + beta * ppo.masked_mean(k3, mask)
    assert abs(trl_loss.item() - ours.item()) < 1e-6, (trl_loss.item(), ours.item())


def test_rloo_loss_is_clipped_policy_loss_on_sequence_logprobs(fast_world, tmp_path):
    trainer, tok = _trainer(fast_world, tmp_path, "rloo", 0.0)
    model = trainer.model.eval()
    inputs = _inputs(tok, model.device)
    mask = inputs["completion_mask"].float()
    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention, 5)
    sequence_logps = (logps * mask).sum(1)
    inputs["old_logps"] = sequence_logps + 0.3 * torch.randn(6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        trl_loss = trainer._compute_loss(model, inputs)
    # RLOO's ratio is per sequence: the same clipped surrogate with one "token" per response.
    ones = torch.ones(6, 1)
    ours, _ = ppo.clipped_policy_loss(sequence_logps[:, None], inputs["old_logps"][:, None],
                                      inputs["advantages"][:, None], ones, 0.2)
    assert abs(trl_loss.item() - ours.item()) < 1e-6, (trl_loss.item(), ours.item())


def test_trl_config_carries_the_course_settings():
    profile = get_profile("smoke")
    args = trl_config("grpo", profile, "/tmp/unused")
    assert args.beta == profile.init_kl_coef > 0 and args.num_iterations >= 2
    assert args.learning_rate == profile.learning_rate and args.disable_dropout
    assert (args.top_k, args.top_p, args.max_completion_length) == (0, 1.0, profile.gen_max_tokens)
    assert args.per_device_train_batch_size * args.steps_per_generation == profile.batch_size
    assert args.max_steps == profile.total_steps * args.steps_per_generation * args.num_iterations
    with pytest.raises(ValueError, match="must divide"):
        trl_config("grpo", profile, "/tmp/unused", batch_size=64, mini_batch_size=12)


def test_reward_function_scores_prompt_plus_completion():
    seen = []
    func = sentiment_reward_func(lambda texts: (seen.extend(texts), torch.arange(len(texts)).float())[1])
    assert func(prompts=["A ", "B "], completions=["good", "bad"]) == [0.0, 1.0]
    assert seen == ["A good", "B bad"] and func.calls == 2
