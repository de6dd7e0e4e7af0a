"""TRL's own loss computations against the course's `clipped_policy_loss` and `kl_estimate`, on the same tensors."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf_helpers.models import prepare_tokenizer
from rlhf_helpers.profiles import get_profile
from rlhf_helpers.sampling import pack, response_logprobs
from rlhf_helpers import trl_runs
from rlhf_helpers.trl_runs import compare_losses, make_trl_trainer, sentiment_reward_func, trl_config

PROMPTS = ["I watched this movie", "The acting was", "What a film", "Bad"] * 4


def _trainer(fast_world, tmp_path, algo, **overrides):
    torch.manual_seed(0)
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(fast_world.policy))
    policy = AutoModelForCausalLM.from_pretrained(fast_world.policy)
    args = trl_config(algo, get_profile("smoke"), str(tmp_path), rounds=1, batch_size=16, mini_batch_size=16,
                      **overrides)
    reward_func = sentiment_reward_func(lambda texts: torch.zeros(len(texts)))
    return make_trl_trainer(algo, policy, tok, reward_func, PROMPTS, args), tok


@pytest.mark.parametrize("with_positions", [False, True])
def test_trl_scores_left_padded_prompts_where_generate_sampled_them_only_with_mask_positions(
        fast_world, tmp_path, with_positions, monkeypatch):
    """TRL's log-prob pass against the course's (`response_logprobs`, which numbers positions from each row's first
    real token, as `generate` does), for the policy and TRL's reference model, on prompts of different lengths."""
    monkeypatch.setattr(trl_runs, "MASK_POSITIONS", with_positions)  # False: TRL's own log-prob pass
    trainer, tok = _trainer(fast_world, tmp_path, "grpo", beta=0.05)
    queries = [torch.tensor(tok(p)["input_ids"]) for p in ("Bad", "I watched this movie", "The acting was")]
    responses = [torch.tensor([5, 6, 7, 8])] * 3
    batch = pack(queries, responses, tok.pad_token_id)
    for model in (trainer.model, trainer.ref_model):
        with torch.no_grad():
            theirs, _, _ = trainer._get_per_token_logps_and_entropies(model.eval(), batch.input_ids,
                                                                       batch.attention_mask, 4)
            ours = response_logprobs(model, batch)
        gap = (theirs - ours).abs().max().item()
        assert (gap < 1e-5) if with_positions else (gap > 1e-3), gap


@pytest.mark.parametrize("algo, overrides", [
    ("grpo", {"beta": 0.0}),
    ("grpo", {"beta": 0.05, "use_bias_correction_kl": False}),
    ("grpo", {"beta": 0.05, "use_bias_correction_kl": True}),  # TRL's default
    ("rloo", {"beta": 0.0}),
])
def test_trl_loss_equals_the_course_functions(fast_world, tmp_path, algo, overrides):
    trainer, tok = _trainer(fast_world, tmp_path, algo, **overrides)
    result = compare_losses(trainer, tok, PROMPTS[:6], seed=1)
    assert 0 < result["clipfrac"] < 1, "the inputs must exercise both branches of the clip"
    assert abs(result["trl"] - result["course"]) < 1e-6, result


def test_a_different_loss_would_be_caught(fast_world, tmp_path):
    """The comparison is sensitive: TRL's per-sequence 'grpo' normalisation is not a token-level mean."""
    trainer, tok = _trainer(fast_world, tmp_path, "grpo", beta=0.0, loss_type="grpo")
    trainer.args.loss_type = "grpo"
    result = compare_losses(trainer, tok, PROMPTS[:6], seed=1)
    assert abs(result["trl"] - result["course"]) > 1e-4, result


def test_trl_config_carries_the_course_settings():
    profile = get_profile("smoke")
    args = trl_config("grpo", profile, "/tmp/unused")
    assert args.beta == profile.ppo.init_kl_coef > 0 and args.num_iterations >= 2
    assert args.learning_rate == profile.ppo.learning_rate and args.disable_dropout
    assert (args.top_k, args.top_p, args.max_completion_length) == (0, 1.0, profile.ppo.gen_max_tokens)
    assert args.per_device_train_batch_size * args.steps_per_generation == profile.ppo.batch_size
    assert args.max_steps == profile.ppo.steps * args.steps_per_generation * args.num_iterations
    with pytest.raises(ValueError, match="not divisible"):
        trl_config("grpo", profile, "/tmp/unused", batch_size=64, mini_batch_size=12)


def test_reward_function_scores_prompt_plus_completion():
    seen = []
    func = sentiment_reward_func(lambda texts: (seen.extend(texts), torch.arange(len(texts)).float())[1])
    assert func(prompts=["A ", "B "], completions=["good", "bad"]) == [0.0, 1.0]
    assert seen == ["A good", "B bad"] and func.calls == 2


def test_trl_completions_are_cut_to_the_course_lengths():
    """With min_completion_length, every completion TRL samples is cut at its own length in [min, max] (seeded), so
    GRPO and RLOO train on the completion lengths PPO trains on and every method is evaluated on."""
    from types import SimpleNamespace

    from rlhf_helpers.trl_runs import _cut_to_course_lengths

    trainer = SimpleNamespace(course_min_completion_length=4, args=SimpleNamespace(max_completion_length=16),
                              course_length_generator=torch.Generator().manual_seed(0))
    completions = [list(range(16)) for _ in range(400)]
    cut, logprobs = _cut_to_course_lengths(trainer, completions, [[0.0] * 16 for _ in range(400)])
    lengths = [len(c) for c in cut]
    assert min(lengths) == 4 and max(lengths) == 16 and len(set(lengths)) == 13  # every length in [4, 16] occurs
    assert all(c == list(range(n)) for c, n in zip(cut, lengths))  # prefixes: the tokens the policy sampled first
    assert [len(lp) for lp in logprobs] == lengths
    short = _cut_to_course_lengths(trainer, [[1, 2]], None)[0]
    assert short == [[1, 2]]  # a completion that stopped early (EOS) is left as it is


def test_the_grpo_round_logs_are_read_for_spikes_clip_and_length():
    import pandas as pd

    from rlhf_helpers.trl_runs import read_grpo_round_logs

    tails = {"k3_median": 0.1, "k3_mean": 0.3, "k3_max": 24.0, "k3_top1pct_share": 0.18, "kl_per_response": 2.8}
    grpo = pd.DataFrame({"kl_per_token": [0.1, 0.2, 0.15, 0.2], "clipfrac": [0.0, 0.04, 0.05, 0.03],
                         "response_length": [16, 10, 9, 11], "reward_mean": [0.5, 1.0, 1.5, 2.0]})
    ppo = pd.DataFrame({"clipfrac": [0.02, 0.04]})
    table, reading = read_grpo_round_logs(grpo, ppo, tails, 1.18, (4, 16))
    assert table.loc["rounds > 5× median", "value"] == "0"
    assert table.loc["logged KL/token, round 2", "value"] == "0.20"
    assert reading[0].startswith("No round's logged KL rose above 5× the median") and "18%" in reading[0]
    assert reading[1].startswith("clipfrac 0.03 (GRPO) and 0.03 (PPO) on average, GRPO's largest 0.05 in round 3: a "
                                 "few percent, not the sign of a step too big")
    assert "11.5 tokens" in reading[2] and "+1.25" in reading[2] and "+1.18 held out" in reading[2]
    spiky = grpo.assign(kl_per_token=[0.1, 0.1, 2.0, 0.1], clipfrac=[0.3, 0.3, 0.3, 0.3])
    _, reading = read_grpo_round_logs(spiky, ppo, tails, 1.18, (4, 16))
    assert reading[0].startswith("1 round(s) logged more than 5× the median KL, the largest 2.00 in round 3")
    assert reading[0].endswith("pulled back to 0.10 in the next round.") and "too big" in reading[1]


def test_a_trl_run_gets_only_the_panels_that_apply():
    from rlhf_helpers.plots import plot_training_curves

    trl = [{"episodes": 64 * i, "reward_mean": 0.1 * i, "reward_std": 1.0, "kl_per_token": 0.1, "clipfrac": 0.02,
            "response_length": 10.0, "entropy": 4.0} for i in range(1, 5)]
    fig = plot_training_curves(trl)
    # four panels, the entropy one with a twin axis for the response length (two units, two axes)
    assert len(fig.axes) == 5 and fig.axes[1].get_ylabel() == "nats per token"
    assert fig.axes[-1].get_ylabel() == "response length (tokens)"
    assert not any(text.get_text() == "no value head" for ax in fig.axes for text in ax.texts)
    ppo = [dict(row, kl=6.0, kl_coef=0.3, explained_variance=0.1) for row in trl]
    fig = plot_training_curves(ppo, kl_target=6.0)
    assert len(fig.axes) == 7 and fig.axes[1].get_ylabel() == "nats per response"
