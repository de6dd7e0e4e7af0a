"""Preferences -> reward model: the Bradley–Terry loss by hand, against a hand computation and TRL's RewardTrainer;
the best-of-n KL formula against Monte Carlo; best-of-n selection; Gao et al.'s fits."""

import math

import numpy as np
import pytest
import torch

from rlhf_helpers.overoptimization import bon_kl, fit_gao
from rlhf_helpers.reward_model import PreferencePairs, bradley_terry_labels, bradley_terry_loss, train_reward_model


def test_bradley_terry_loss_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([1.0, 0.5, 1.0])
    expected = (math.log(1 + math.exp(-1.0)) + math.log(2.0) + math.log(1 + math.exp(2.0))) / 3
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, abs=1e-7)
    # Large margins stay finite (a naive log(sigmoid(x)) gives -inf at x = -200).
    assert torch.isfinite(bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([0.0])))
    with pytest.raises(ValueError, match="pair up"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))


def test_rater_noise():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(20000, generator=gen), torch.randn(20000, generator=gen)
    assert torch.equal(bradley_terry_labels(a, b, 0.0), a > b)
    noisy = bradley_terry_labels(a, b, 0.5, torch.Generator().manual_seed(1))
    expected = torch.sigmoid((a - b) / 0.5).mean().item()
    assert noisy.float().mean().item() == pytest.approx(expected, abs=0.01)
    agree = (noisy == (a > b)).float().mean().item()
    assert 0.6 < agree < 0.95, "τ = 0.5 flips a real share of close pairs, not all and not none"


def test_reward_trainer_loss_equals_ours(fast_world, tmp_path):
    """The same model, tokenizer and batch: TRL's RewardTrainer.compute_loss and bradley_terry_loss agree to 1e-6."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from rlhf_helpers.models import quiet_transformers

    tok = AutoTokenizer.from_pretrained(fast_world.policy)
    tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(fast_world.policy, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    pairs = PreferencePairs(prompt=["A film", "The plot", "I think", "This is"],
                            chosen=[" that I loved.", " is great fun", " it is wonderful", " a gem of a movie"],
                            rejected=[" that bored me.", " is a mess", " it is dull and long", " awful"],
                            gold_chosen=[1.0] * 4, gold_rejected=[0.0] * 4)
    with quiet_transformers():  # TRL's own deprecation warnings, nothing this test can act on
        args = RewardConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none", use_cpu=True,
                            center_rewards_coefficient=None)
        trainer = RewardTrainer(model=model, args=args, train_dataset=pairs.to_dataset(), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()  # no dropout: both losses see the same forward pass
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(batch)).item()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        chosen, rejected = logits.chunk(2)
        ours = bradley_terry_loss(chosen, rejected).item()
    assert abs(trl_loss - ours) < 1e-6, (trl_loss, ours)
    # A different loss (a hinge) would be caught:
    assert abs(trl_loss - torch.relu(1 - (chosen - rejected)).mean().item()) > 1e-4


@pytest.mark.parametrize("n", [1, 2, 4, 16, 64])
def test_best_of_n_kl_formula_matches_monte_carlo(n):
    """KL(best-of-n ‖ base) = log n − (n − 1)/n for a continuous reward. Monte Carlo: the best-of-n density ratio at
    the winner x* is n·F(x*)^(n−1), so KL = E[log n + (n − 1) log F(x*)], with F(x*) the max of n uniforms."""
    gen = torch.Generator().manual_seed(n)
    quantiles = torch.rand(200_000, n, generator=gen, dtype=torch.float64).max(-1).values
    monte_carlo = (math.log(n) + (n - 1) * quantiles.log()).mean().item()
    assert monte_carlo == pytest.approx(bon_kl(n), abs=0.01)


def test_best_of_n_kl_on_a_discrete_base_with_distinct_rewards():
    """Exact best-of-n distribution over 100,000 equally likely outcomes: P(i) = (i/K)^n − ((i−1)/K)^n."""
    k, n = 100_000, 8
    i = np.arange(1, k + 1)
    p_bon = (i / k) ** n - ((i - 1) / k) ** n
    kl = float(np.sum(p_bon * np.log(p_bon * k, where=p_bon > 0, out=np.zeros(k))))
    assert kl == pytest.approx(bon_kl(n), abs=1e-3)


def test_gao_fits_recover_known_coefficients():
    d = np.linspace(0.1, 3, 30)
    bon = fit_gao(d, d * (1.2 - 0.4 * d), "bon")
    assert bon["alpha"] == pytest.approx(1.2) and bon["beta"] == pytest.approx(0.4) and bon["r2"] > 0.999
    rl = fit_gao(d, d * (0.8 - 0.3 * np.log(d)), "rl")
    assert rl["alpha"] == pytest.approx(0.8) and rl["beta"] == pytest.approx(0.3)


def test_best_of_n_uses_every_sample_and_never_gets_worse_on_its_own_reward(fast_world):
    """With the proxy as its own judge, the chosen sample's score cannot fall as n doubles (each 2n-group's max is at
    least the max of its two n-halves), and n = 1 is the plain sample mean."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from rlhf_helpers.models import prepare_tokenizer
    from rlhf_helpers.overoptimization import best_of_n
    from rlhf_helpers.reward import SentimentReward

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(fast_world.policy))
    policy = AutoModelForCausalLM.from_pretrained(fast_world.policy).eval()
    judge = SentimentReward(pipeline("sentiment-analysis", model=str(fast_world.classifier), device="cpu"))
    prompts = [tok(t)["input_ids"] for t in ("A film", "The plot", "I think")]
    rows, raw = best_of_n(policy, tok, judge, judge, prompts, max_n=8, seed=0)
    assert [r["n"] for r in rows] == [1, 2, 4, 8]
    assert [r["kl"] for r in rows] == [pytest.approx(bon_kl(n)) for n in (1, 2, 4, 8)]
    assert rows[0]["proxy"] == pytest.approx(raw["proxy"].mean().item(), abs=1e-6)
    scores = [r["proxy"] for r in rows]
    assert all(b >= a - 1e-7 for a, b in zip(scores, scores[1:])) and scores[-1] > scores[0]
    assert rows[-1]["proxy"] == pytest.approx(raw["proxy"].max(-1).values.mean().item(), abs=1e-6)


def test_reward_model_training_is_seeded_whatever_ran_before(fast_world, tmp_path):
    """The fresh one-number head is drawn from the global generator: `train_reward_model` seeds it, so two calls with
    the same seed give the same model even when other code drew random numbers in between (it used not to)."""
    pairs = PreferencePairs(prompt=["A film", "The plot"] * 4, chosen=[" I loved.", " is great"] * 4,
                            rejected=[" bored me.", " is a mess"] * 4, gold_chosen=[1.0] * 8, gold_rejected=[0.0] * 8)
    texts = ["A film I loved.", "The plot is a mess"]
    torch.manual_seed(123)
    _, first = train_reward_model(str(fast_world.classifier), pairs, str(tmp_path / "a"), epochs=1, batch_size=4)
    torch.rand(1000)  # anything else that draws from the global generator
    _, second = train_reward_model(str(fast_world.classifier), pairs, str(tmp_path / "b"), epochs=1, batch_size=4)
    assert torch.equal(first(texts), second(texts))
    _, other = train_reward_model(str(fast_world.classifier), pairs, str(tmp_path / "c"), epochs=1, batch_size=4,
                                  seed=1)
    assert not torch.equal(first(texts), other(texts))


def test_pairs_labelled_by_a_gold_rater_keep_its_penalties(fast_world):
    """`make_preference_pairs` keeps the judge's sentiment beside each gold score, so `penalty_share` equals the
    penalties measured again on the texts (the notebook's former way, which scored every text a second time)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from rlhf_helpers.models import prepare_tokenizer
    from rlhf_helpers.reward import GoldRater, SentimentReward
    from rlhf_helpers.reward_model import make_preference_pairs

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(fast_world.policy))
    policy = AutoModelForCausalLM.from_pretrained(fast_world.policy).eval()
    judge = SentimentReward(pipeline("sentiment-analysis", model=str(fast_world.classifier), device="cpu"))
    gold = GoldRater(judge, allowed=0.0)  # every repeated word costs: the penalties are not all zero
    prompts = [tok(t)["input_ids"] for t in ("A film", "The plot", "I think", "This is", "It was", "Bad")]
    pairs = make_preference_pairs(policy, tok, gold, prompts, noise=0.5, seed=0)
    chosen = [p + c for p, c in zip(pairs.prompt, pairs.chosen)]
    rejected = [p + r for p, r in zip(pairs.prompt, pairs.rejected)]
    assert pairs.gold_chosen == pytest.approx(gold(chosen).tolist(), abs=1e-5)
    assert pairs.sentiment_rejected == pytest.approx(judge(rejected).tolist(), abs=1e-5)
    penalty_gap = gold.repetition_penalty(chosen) - gold.repetition_penalty(rejected)
    gold_gap = torch.tensor(pairs.gold_chosen) - torch.tensor(pairs.gold_rejected)
    assert penalty_gap.abs().sum() > 0
    assert pairs.penalty_share == pytest.approx((penalty_gap.abs().mean() / gold_gap.abs().mean()).item(), abs=1e-5)
    assert pairs.subset(3).sentiment_chosen == pairs.sentiment_chosen[:3]
    with pytest.raises(ValueError, match="GoldRater"):
        _ = PreferencePairs(["a"], [" b"], [" c"], [1.0], [0.0]).penalty_share


def test_calibration_is_tabled_and_read_by_hand():
    from rlhf_helpers.reward_model import calibration_table, read_calibration

    # 10 pairs at p 0.9 of which 9 won, 10 at p 0.1 of which 1 won: calibrated; 0.9 with 6 wins in 10: over-confident,
    # beyond twice the standard error with 40 pairs a bin
    p = [0.9] * 10 + [0.1] * 10
    table = calibration_table(p, [1] * 9 + [0] + [0] * 9 + [1])
    assert table.pairs.tolist() == [10, 10] and table.observed.tolist() == pytest.approx([0.1, 0.9])
    assert table.stderr.tolist() == pytest.approx([(0.09 / 10) ** 0.5] * 2)
    assert read_calibration(table) == ("Calibration: predicted and observed differ by 0.000 on average (weighted by "
                                       "pairs), 2 of 2 bins within twice their standard error of the diagonal; the "
                                       "model is neither over- nor under-confident on average.")
    sure = read_calibration(calibration_table([0.9] * 40 + [0.1] * 40, [1] * 24 + [0] * 16 + [0] * 24 + [1] * 16))
    assert "differ by 0.300" in sure and "0 of 2 bins" in sure and "over-confident" in sure
