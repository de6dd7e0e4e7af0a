"""DPO: the loss against a hand computation and TRL's DPOTrainer; sequence log-probs against a per-row loop; the
exercise checker accepts the reference and names the usual mistakes."""

import math

import pytest
import torch
import torch.nn.functional as F

from rlhf_helpers.dpo import dpo_loss, pair_metrics, sequence_logps
from rlhf_helpers.reward_model import PreferencePairs


def test_dpo_loss_by_hand():
    # Δ = (−3 − (−3.5)) − (−4 − (−3.5)) = 0.5 + 0.5 = 1; β = 0.1 -> loss = −log σ(0.1) = log(1 + e^−0.1)
    losses, chosen, rejected = dpo_loss(torch.tensor([-3.0]), torch.tensor([-4.0]), torch.tensor([-3.5]),
                                        torch.tensor([-3.5]), beta=0.1)
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-0.1)), abs=1e-7)
    assert chosen.item() == pytest.approx(0.05) and rejected.item() == pytest.approx(-0.05)
    # A policy equal to its reference: every pair costs log 2, whatever β.
    losses, _, _ = dpo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3), beta=5.0)
    assert torch.allclose(losses, torch.full((3,), math.log(2)))


def test_no_gradient_reaches_the_reference():
    pc, pr = torch.tensor([-2.0], requires_grad=True), torch.tensor([-1.0], requires_grad=True)
    rc, rr = torch.tensor([-2.5], requires_grad=True), torch.tensor([-1.5], requires_grad=True)
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.2)
    losses.sum().backward()
    assert rc.grad is None and rr.grad is None and pc.grad.item() < 0 < pr.grad.item()
    assert not chosen.requires_grad and not rejected.requires_grad


def _tiny(fast_world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_helpers.models import prepare_tokenizer

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(fast_world.policy))
    policy = AutoModelForCausalLM.from_pretrained(fast_world.policy).eval()
    return tok, policy


def test_sequence_logps_match_a_per_row_loop(fast_world):
    """Left-padded, batched, through `pack`/`response_logits`, equals scoring each row alone without padding."""
    tok, policy = _tiny(fast_world)
    queries = [tok(t)["input_ids"] for t in ("A film", "The plot of this movie", "I")]
    responses = [tok(t)["input_ids"] for t in (" was great.", " bored", " loved it so much")]
    batched = sequence_logps(policy, queries, responses, tok.pad_token_id)
    with torch.no_grad():
        for i, (q, r) in enumerate(zip(queries, responses)):
            logits = policy(torch.tensor([q + r])).logits[0]
            logps = F.log_softmax(logits[len(q) - 1:-1].float(), -1).gather(-1, torch.tensor(r)[:, None]).sum()
            assert batched[i].item() == pytest.approx(logps.item(), abs=1e-4)


def test_our_loss_equals_trl_dpo_trainer_loss(fast_world, tmp_path):
    """The same model, reference, tokenizer and batch: DPOTrainer.compute_loss (sigmoid, β = 0.1) and the course's
    dpo_loss over sequence_logps agree to 1e-6."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from rlhf_helpers.device import trl_precision
    from rlhf_helpers.models import quiet_transformers

    tok, policy = _tiny(fast_world)
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy away from the reference, so the log-ratios are not all zero
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    reference = AutoModelForCausalLM.from_pretrained(fast_world.policy).eval()
    data = Dataset.from_dict({"prompt": ["A film", "The plot", "I think", "This is"],
                              "chosen": [" that I loved.", " is great fun", " it is wonderful", " a gem"],
                              "rejected": [" that bored me.", " is a mess", " it is dull and long", " awful"]})
    # bf16=False: TRL's configs default to bf16 where the CPU has it, and the reference forward would then run under
    # bf16 autocast (log-probs off by ~1e-2), which is `trl_precision`'s job to prevent in the course's own runs.
    with quiet_transformers():  # TRL's own deprecation warnings, nothing this test can act on
        args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none", beta=0.1,
                         loss_type=["sigmoid"], **trl_precision("cpu"))
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data, processing_class=tok)
        batch = next(iter(trainer.get_train_dataloader()))
        policy.eval()
        with torch.no_grad():
            trl_loss = trainer.compute_loss(policy, dict(batch)).item()
    # The same rows, read back from TRL's batch: [chosen..., rejected...], prompt then completion, right-padded.
    queries, responses = [], []
    for ids, attention, completion in zip(batch["input_ids"], batch["attention_mask"], batch["completion_mask"]):
        real = ids[attention.bool()]
        queries.append(real[~completion[attention.bool()].bool()].tolist())
        responses.append(real[completion[attention.bool()].bool()].tolist())
    with torch.no_grad():
        pi = sequence_logps(policy, queries, responses, tok.pad_token_id)
        ref = sequence_logps(reference, queries, responses, tok.pad_token_id)
    b = len(pi) // 2
    losses, chosen, rejected = dpo_loss(pi[:b], pi[b:], ref[:b], ref[b:], beta=0.1)
    assert abs(trl_loss - losses.mean().item()) < 1e-6, (trl_loss, losses.mean().item())
    # TRL's evaluation of the same pairs (what a DPO run reports on its held-out pairs) is the same loss, and its
    # accuracy and margin are those of the implicit rewards.
    pairs = PreferencePairs(list(data["prompt"]), list(data["chosen"]), list(data["rejected"]), [0.0] * 4, [0.0] * 4)
    metrics = pair_metrics(trainer, pairs)
    assert metrics["loss"] == pytest.approx(losses.mean().item(), abs=1e-6)
    assert metrics["accuracy"] == pytest.approx((chosen > rejected).float().mean().item())
    assert metrics["margin"] == pytest.approx((chosen - rejected).mean().item(), abs=1e-6)
    assert abs(trl_loss - math.log(2)) > 1e-3  # the policy really differs from the reference
    # The per-token mean (a common mistake) would not match:
    n = torch.tensor([len(r) for r in responses], dtype=torch.float)
    mean_losses, _, _ = dpo_loss(pi[:b] / n[:b], pi[b:] / n[b:], ref[:b] / n[:b], ref[b:] / n[b:], beta=0.1)
    assert abs(trl_loss - mean_losses.mean().item()) > 1e-5


def test_dpo_checker_accepts_the_reference_and_names_mistakes(capsys):
    from rlhf_helpers.exercises import check_dpo_loss

    def course(pc, pr, rc, rr, mc, mr, beta):
        return dpo_loss((pc * mc).sum(-1), (pr * mr).sum(-1), (rc * mc).sum(-1), (rr * mr).sum(-1), beta)

    assert check_dpo_loss(course) is course

    def per_token_mean(pc, pr, rc, rr, mc, mr, beta):
        def s(x, m):
            return (x * m).sum(-1) / m.sum(-1)
        return dpo_loss(s(pc, mc), s(pr, mr), s(rc, mc), s(rr, mr), beta)

    def beta_outside(pc, pr, rc, rr, mc, mr, beta):
        d = ((pc - rc) * mc).sum(-1) - ((pr - rr) * mr).sum(-1)
        return -beta * F.logsigmoid(d), beta * ((pc - rc) * mc).sum(-1), beta * ((pr - rr) * mr).sum(-1)

    def not_detached(pc, pr, rc, rr, mc, mr, beta):
        c, r = ((pc - rc) * mc).sum(-1), ((pr - rr) * mr).sum(-1)
        return -F.logsigmoid(beta * (c - r)), beta * c.detach(), beta * r.detach()

    def swapped(pc, pr, rc, rr, mc, mr, beta):
        return course(pr, pc, rr, rc, mr, mc, beta)

    for wrong, hint in [(per_token_mean, "per-token mean"), (beta_outside, "β outside"),
                        (not_detached, "detach"), (swapped, "swapped")]:
        with pytest.raises(AssertionError, match=hint):
            check_dpo_loss(wrong)

    def stub(*args):
        raise NotImplementedError

    fallback = check_dpo_loss(stub)
    assert "not attempted" in capsys.readouterr().out and fallback is not stub


def test_the_shipped_frontier_has_every_method_at_every_beta_over_seeds_from_one_evaluation():
    """Notebook 08 draws the measured sweep: every method of SWEEP at each of its β, over the same ≥ 3 seeds, each
    run with reward, KL and gold reward from the same held-out evaluation (same starting point), with its machine."""
    from rlhf_helpers.frontier import SWEEP, frontier_points
    from rlhf_helpers.results import load_result

    frontier = load_result("frontier", "smoke")
    assert frontier is not None and load_result("frontier", "gpu") is None
    assert frontier["machine"] and frontier["date"] and len(frontier["seeds"]) >= 3
    for algo, betas in SWEEP.items():
        for beta in betas:
            seeds = sorted(p["seed"] for p in frontier["points"] if p["algo"] == algo and p["beta"] == beta)
            assert seeds == sorted(frontier["seeds"]), (algo, beta)
    assert len({round(p["reward_before"], 6) for p in frontier["points"]}) == 1
    assert all(p["kl"] > 0 and set(p) >= {"mean_reward", "gold", "positive_rate", "labelled_completions"}
               for p in frontier["points"])
    means = frontier_points(frontier["points"])
    assert len(means) == sum(len(b) for b in SWEEP.values()) and all(m["seeds"] >= 3 for m in means)


def test_frontier_points_are_means_with_the_sample_standard_deviation():
    from rlhf_helpers.frontier import frontier_points

    runs = [{"algo": "ppo", "beta": 0.1, "seed": s, "mean_reward": r, "positive_rate": 0.5, "kl": k, "gold": 0.0,
             "ref_perplexity": 100.0} for s, r, k in [(0, 1.0, 4.0), (1, 2.0, 6.0), (2, 3.0, 8.0)]]
    (point,) = frontier_points(runs)
    assert point["seeds"] == 3 and point["mean_reward"] == 2.0 and point["kl"] == 6.0
    assert point["mean_reward_std"] == pytest.approx(1.0) and point["kl_std"] == pytest.approx(2.0)  # ddof = 1


def test_plot_frontier_draws_one_line_per_method():
    from rlhf_helpers.frontier import NAMES, plot_frontier

    points = [{"algo": a, "beta": b, "seed": 0, "kl": k, "mean_reward": r, "gold": g, "positive_rate": 0.5,
               "ref_perplexity": 100.0, "reward_before": -0.4, "gold_before": 0.0}
              for a, b, k, r, g in [("ppo", 0.1, 5, 1, 0.5), ("ppo", 0.2, 3, 0.5, 0.3), ("dpo", 0.1, 4, 0.8, 0.4)]]
    fig = plot_frontier(points, extra=({"label": "your run", "marker": "*", "kl": 4.5, "mean_reward": 0.9},))
    labels = [text.get_text() for text in fig.legends[0].get_texts()]  # one legend, below both panels
    assert any(label.startswith(NAMES["ppo"]) for label in labels)
    assert any(label.startswith(NAMES["dpo"]) for label in labels)
    assert not any(label.startswith(NAMES["grpo"]) for label in labels)
    assert labels.count("before training") == 1 and "your run" in labels
    assert all(ax.get_legend() is None for ax in fig.axes)  # no legend over a line
    star = [line for line in fig.axes[0].lines if line.get_label() == "your run"]
    assert len(star) == 1 and star[0].get_color() == "k" and not [
        line for line in fig.axes[1].lines if line.get_label() == "your run"]  # no gold given: left panel only


def test_the_frontier_table_has_one_row_per_method():
    from rlhf_helpers.frontier import NAMES, frontier_table

    points = [{"algo": a, "beta": b, "seed": s, "kl": k + s, "mean_reward": r, "gold": g, "positive_rate": 0.5,
               "ref_perplexity": 100.0, "labelled_completions": 2560}
              for s in (0, 1) for a, b, k, r, g in [("ppo", 0.1, 10, 3, 0.5), ("ppo", 1.0, 2, 0.5, 0.1),
                                                    ("dpo", 0.1, 4, 0.8, 0.4)]]
    table = frontier_table(points)
    assert table.index.tolist() == [NAMES["ppo"], NAMES["dpo"]]
    assert table.loc[NAMES["ppo"], "β"] == "1 / 0.1" and table.loc[NAMES["ppo"], "KL"] == "2.5 / 10.5"
    assert table.loc[NAMES["ppo"], "reward"] == "+0.50 / +3.00" and table.loc[NAMES["dpo"], "seeds"] == 2
    assert table.loc[NAMES["dpo"], "true-reward queries"] == "2,560"


@pytest.mark.slow
def test_online_dpo_samples_each_round_from_the_current_policy(tmp_path):
    """Online DPO spends DPO's pairs budget in rounds, and trains the policy it samples from."""
    import dataclasses

    from rlhf_helpers import get_profile
    from rlhf_helpers.dpo import dpo_pair_count, train_online_dpo
    from rlhf_helpers.runs import RunInputs

    profile = get_profile("smoke", steps=2)
    config = dataclasses.replace(profile.ppo, seed=0)
    inputs = RunInputs(profile, config).load()
    start = [p.detach().clone() for p in inputs.policy.parameters()]
    info = train_online_dpo(inputs, rounds=2)
    assert info["rounds"] == 2 and info["pairs"] == 2 * (dpo_pair_count(config) // 2)
    assert info["completions"] == info["pairs"] * profile.dpo.samples_per_prompt and info["gradient_steps"] > 0
    assert any(not torch.equal(a, b.detach()) for a, b in zip(start, inputs.policy.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(start, inputs.reference.parameters()))  # the reference stays frozen
    with pytest.raises(ValueError, match="rounds"):
        train_online_dpo(inputs, rounds=0)


def test_dpo_run_refuses_an_odd_mini_batch():
    from rlhf_helpers import get_profile
    from rlhf_helpers.train import RunSpec

    with pytest.raises(ValueError, match="must be even"):
        RunSpec("dpo", batch_size=63, mini_batch_size=21).check(get_profile("smoke"))
    RunSpec("dpo").check(get_profile("smoke"))  # the profile's own sizes are fine


@pytest.mark.slow
def test_ppo_against_a_reward_model_on_dpos_pairs_is_evaluated_like_every_run(tmp_path):
    """The frontier's PPO-RM: a reward model trained on the pairs DPO would get, then PPO against it; evaluated by
    the classifier on the held-out prompts, with the true-reward queries counted (the pairs' completions)."""
    import json

    from rlhf_helpers import get_profile
    from rlhf_helpers.dpo import dpo_pair_count
    from rlhf_helpers.frontier import _custom_run

    profile = get_profile("smoke", steps=2, init_kl_coef=0.06, kl_target=None)
    summary = _custom_run("ppo_rm", profile, tmp_path / "ppo_rm", seed=0)
    assert summary["reward_model_pairs"] == dpo_pair_count(profile.ppo)
    assert summary["labelled_completions"] == dpo_pair_count(profile.ppo) * profile.dpo.samples_per_prompt
    assert summary["episodes"] == profile.ppo.steps * profile.ppo.batch_size
    # the frontier's equal budget: the pairs' completions are as many as PPO-GT's episodes
    assert summary["labelled_completions"] == summary["episodes"]
    assert summary["after"]["kl"] > 0 and summary["before"]["kl"] == 0
    assert json.loads((tmp_path / "ppo_rm" / "summary.json").read_text()) == summary
    assert (tmp_path / "ppo_rm" / "samples.csv").read_text().startswith("prompt,response_before")


@pytest.mark.parametrize("name", ["gpu", "cpu", "smoke"])
def test_dpo_gets_ppos_budget_in_completions_and_gradient_steps(tmp_path, name):
    """The frontier's fairness, per profile: DPO's pairs are sampled from as many completions as PPO's episodes, and
    its DPOConfig (pairs per step, passes) takes at most as many gradient steps as PPO's minibatch updates: one pass
    is PPO's steps / ppo_epochs, and the passes are DPO's own early stopping, chosen on validation pairs
    (`benchmarks/dpo_learning_rate.py`), never more than PPO's epochs."""
    import math

    from rlhf_helpers import get_profile
    from rlhf_helpers.dpo import dpo_config, dpo_pair_count

    profile = get_profile(name)
    cfg = profile.ppo
    pairs = dpo_pair_count(cfg)
    assert pairs * profile.dpo.samples_per_prompt == cfg.steps * cfg.batch_size
    args = dpo_config(profile, str(tmp_path))
    steps_per_pass = math.ceil(pairs / args.per_device_train_batch_size)
    assert steps_per_pass == cfg.steps * (cfg.batch_size // cfg.mini_batch_size)
    assert 1 <= args.num_train_epochs <= cfg.ppo_epochs


def test_contrast_reads_two_methods_across_the_kl_range_they_share():
    from rlhf_helpers.frontier import contrast

    def point(algo, kl, reward, std=0.1):
        return {"algo": algo, "beta": kl, "seeds": 4, "kl": kl, "mean_reward": reward, "mean_reward_std": std}

    means = [point("x", 0.0, 0.0), point("x", 10.0, 2.0), point("x", 20.0, 3.0),
             point("y", 5.0, 0.0), point("y", 30.0, 0.5)]
    reading = contrast(means, "x", "y", points=3)
    assert (reading["low"], reading["high"]) == (5.0, 20.0)
    assert [r["kl"] for r in reading["rows"]] == [5.0, 12.5, 20.0]
    # x at 12.5 nats: 2.25 (between 2 at 10 and 3 at 20); y: 0.15 (between 0 at 5 and 0.5 at 30)
    assert reading["rows"][1]["difference"] == pytest.approx(2.25 - 0.15)
    # the 95 % interval: t with 3 degrees of freedom (4 seeds) times the standard error of two independent means
    assert reading["rows"][1]["noise"] == pytest.approx(3.182 * (0.1 ** 2 + 0.1 ** 2) ** 0.5 / 2)
    assert reading["verdict"] == "a"
    # At 5 nats x is at 1.0 against y's 0.0: a noisier y makes that end a tie, so the reading is mixed.
    noisy = [dict(m, mean_reward_std=3.0) if m["algo"] == "y" and m["kl"] == 5.0 else m for m in means]
    assert contrast(noisy, "x", "y", points=3)["verdict"] == "mixed"
    assert contrast([point("x", 0.0, 0.0), point("x", 1.0, 1.0), point("y", 2.0, 0.0)], "x", "y")["verdict"] == "apart"


def test_a_contrast_is_described_as_it_reads():
    from rlhf_helpers.frontier import contrast, describe_contrast

    def point(algo, kl, reward, std=0.1):
        return {"algo": algo, "beta": kl, "seeds": 3, "kl": kl, "mean_reward": reward, "mean_reward_std": std}

    means = [point("ppo", 0.0, 0.0), point("ppo", 10.0, 2.0), point("dpo", 0.0, 0.0), point("dpo", 10.0, 1.0)]
    text = describe_contrast(contrast(means, "ppo", "dpo", points=2), "Fresh samples")
    # a tie at KL 0, PPO ahead at 10: where each is ahead, by name and KL
    assert text.startswith("Fresh samples: PPO-GT has more reward than DPO at 1 of the 2 KL values (10.0 nats), and "
                           "they are within the noise at the rest")
    assert "from 0.0 to 10.0 nats (2 KL values, 3 seeds)" in text and "+1.00 ± 0.35" in text  # 4.303 × 0.0816
    ahead = [point("ppo", 1.0, 1.0), point("ppo", 10.0, 2.0), point("dpo", 1.0, 0.0), point("dpo", 10.0, 1.0)]
    assert "PPO-GT has more reward than DPO at every KL" in describe_contrast(contrast(ahead, "ppo", "dpo"))
    apart = [point("ppo", 0.0, 0.0), point("ppo", 1.0, 1.0), point("dpo", 2.0, 0.0)]
    assert "reach no common KL" in describe_contrast(contrast(apart, "ppo", "dpo"))


def test_contrasts_are_summarized_one_line_per_verdict():
    from rlhf_helpers.frontier import summarize_contrasts

    def reading(a, b, key, verdict, signs=()):
        rows = [{"difference": sign * 1.0, "noise": 0.5 if sign else 2.0} for sign in signs]
        return {"a": a, "b": b, "key": key, "verdict": verdict, "rows": rows}

    lines = summarize_contrasts([reading("ppo", "ppo_rm", "mean_reward", "a"), reading("ppo", "ppo_rm", "gold", "a"),
                                 reading("online_dpo", "dpo", "gold", "mixed", signs=(0, 1, 1)),
                                 reading("ppo_rm", "dpo", "gold", "mixed", signs=(-1, 0)),
                                 reading("ppo_rm", "dpo", "mean_reward", "tie"),
                                 reading("online_dpo", "ppo", "gold", "b"),
                                 reading("grpo", "dpo", "gold", "mixed", signs=(1, -1))])
    assert lines == [
        "Ahead at every shared KL, each difference outside its interval: PPO-GT over PPO-RM (reward, gold); PPO-GT "
        "over online DPO (gold).",
        "Ahead at some KL values, within the noise at the rest: online DPO over DPO (gold); DPO over PPO-RM (gold).",
        "Each ahead somewhere (they cross): GRPO and DPO (gold).",
        "Within the noise at every shared KL: PPO-RM and DPO (reward)."]


def test_a_validation_curve_is_read_for_overtraining_by_hand():
    from rlhf_helpers.dpo import pairs_beyond_chance, read_validation

    curve = [{"epoch": e, "loss": loss, "accuracy": 0.6, "margin": 0.1} for e, loss in
             [(1, 0.66), (2, 0.62), (3, 0.64), (4, 0.70)]]
    reading = read_validation(curve)
    assert (reading["best_epoch"], reading["last_epoch"]) == (2, 4)
    assert reading["rise"] == pytest.approx(0.08) and reading["overtrained"]
    assert not read_validation(curve[:2])["overtrained"]
    with pytest.raises(ValueError, match="No validation epochs"):
        read_validation([])
    assert pairs_beyond_chance(0.57, 256) and not pairs_beyond_chance(0.56, 256)  # 0.5 + 2 * 0.5 / 16 = 0.5625


def test_the_training_loss_is_read_by_quarters_against_its_swing():
    from rlhf_helpers.dpo import read_training_loss

    falling = [{"loss": x} for x in [0.70, 0.68, 0.72, 0.69, 0.66, 0.64, 0.67, 0.65, 0.60, 0.62, 0.61, 0.59]]
    text = read_training_loss(falling)
    assert text.startswith("Training loss: 0.700 over the first quarter of the 12 logged rounds, 0.607 over the last")
    assert "it fell" in text
    noisy = [{"loss": x} for x in [0.70, 0.60, 0.75, 0.65, 0.72, 0.58, 0.74, 0.62, 0.69, 0.71, 0.61, 0.70]]
    assert "it stayed level" in read_training_loss(noisy)  # 0.683 -> 0.673 against a swing of 0.06
    with pytest.raises(ValueError, match="at least 4"):
        read_training_loss(falling[:3])


def test_the_paper_ordering_is_read_per_baseline_and_a_narrow_lead_is_named():
    from rlhf_helpers.frontier import read_paper_ordering, summarize_contrasts

    def reading(a, b, diffs, noise=0.3, key="mean_reward"):
        rows = [{"kl": float(k), "difference": d, "noise": noise} for k, d in zip((2, 4, 6), diffs)]
        ahead = ["a" if d > noise else "b" if -d > noise else "tie" for d in diffs]
        return {"a": a, "b": b, "key": key, "rows": rows, "low": 2.0, "high": 6.0, "seeds": 3,
                "verdict": ahead[0] if len(set(ahead)) == 1 else "mixed"}

    text = read_paper_ordering([reading("ppo_rm", "dpo", [-0.1, -0.2, -0.2]), reading("ppo", "dpo", [0.1, 0.5, 0.9]),
                                reading("ppo", "dpo", [0.1, 0.5, 0.9], key="gold"),
                                reading("online_dpo", "dpo", [0.4, 0.5, 0.6])])
    assert text == ("Against the DPO paper's ordering, in reward: DPO against PPO-RM: the paper's direction (DPO "
                    "ahead) at every shared KL, beyond its interval at 0 of 3; DPO against PPO-GT: the opposite "
                    "direction (DPO behind) at every shared KL, beyond its interval at 2 of 3.")
    assert read_paper_ordering([reading("online_dpo", "dpo", [0.4, 0.5, 0.6])]) == ""
    lines = summarize_contrasts([reading("ppo", "ppo_rm", [0.32, 0.8, 1.0], key="gold")])
    assert lines == ["Ahead at every shared KL, each difference outside its interval: PPO-GT over PPO-RM (gold, "
                     "narrowly at 2.0 nats: +0.32 ± 0.30)."]


def test_the_learning_rate_sweep_names_its_near_ties():
    from rlhf_helpers.dpo import read_lr_sweep

    sweep = {"seed": 0, "points": [{"learning_rate": lr, "epochs": e, "validation_loss": loss} for lr, e, loss in
                                   [(1e-4, 1, 0.660), (1e-4, 2, 0.652), (2.5e-4, 1, 0.649), (5e-4, 1, 0.700)]]}
    text = read_lr_sweep(sweep, 2.5e-4, 1)
    assert text.startswith("The sweep's lowest validation loss: 0.649 at learning rate 0.00025 after 1 epoch(s)")
    assert "that choice" in text and "Within 0.005 nats of it: 0.0001 after 2 (0.652)" in text
    assert "0.660" not in text  # 0.011 above the best: not a tie
    assert "not the sweep's choice" in read_lr_sweep(sweep, 1e-4, 2)
    clear = {"seed": 0, "points": sweep["points"][2:]}
    assert "near-tie" not in read_lr_sweep(clear, 2.5e-4, 1)


def test_the_best_gold_point_names_the_points_within_its_noise():
    from rlhf_helpers.frontier import read_best_gold

    def point(algo, beta, gold, std=0.1):
        return {"algo": algo, "beta": beta, "gold": gold, "gold_std": std, "seeds": 4, "kl": 5.0}

    # the 95 % interval of the difference of two means with sd 0.1 over 4 seeds: 3.182 * 0.141 / 2 = 0.225
    text = read_best_gold([point("ppo", 0.1, 1.0), point("grpo", 0.1, 0.9), point("dpo", 0.1, 0.5)])
    assert text.startswith("Highest mean gold: PPO-GT (true reward) at β = 0.1, +1.00 (sd 0.10 over 4 seeds)")
    assert text.endswith("within the 95 % interval of the difference: GRPO at β = 0.1 (+0.90).")
    assert "GRPO" not in read_best_gold([point("ppo", 0.1, 1.0), point("grpo", 0.1, 0.77)])  # 0.23 apart
    assert "no other point" in read_best_gold([point("ppo", 0.1, 1.0), point("dpo", 0.1, 0.5)])
