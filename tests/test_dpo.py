"""DPO: the loss against a hand computation and TRL's DPOTrainer; sequence log-probs against a per-row loop; the
exercise checker accepts the reference and names the usual mistakes."""

import math

import pytest
import torch
import torch.nn.functional as F

from rlhf_helpers.dpo import dpo_loss, sequence_logps


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
    losses, _, _ = dpo_loss(pi[:b], pi[b:], ref[:b], ref[b:], beta=0.1)
    assert abs(trl_loss - losses.mean().item()) < 1e-6, (trl_loss, losses.mean().item())
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


def test_the_shipped_frontier_has_three_points_per_method_from_one_evaluation():
    """Notebook 07 draws the measured sweep: at least 3 runs per method, each with reward, KL and gold reward from
    the same held-out evaluation (same starting point for every run)."""
    from rlhf_helpers.frontier import measured_frontier

    frontier = measured_frontier("smoke")
    assert frontier is not None and measured_frontier("gpu") is None
    for algo in ("ppo", "grpo", "dpo"):
        points = [p for p in frontier["points"] if p["algo"] == algo]
        assert len(points) >= 3, algo
        assert len({p["beta"] for p in points}) == len(points)
    assert len({round(p["reward_before"], 6) for p in frontier["points"]}) == 1
    assert all(p["kl"] > 0 and set(p) >= {"mean_reward", "gold", "positive_rate"} for p in frontier["points"])


def test_plot_frontier_draws_one_line_per_method():
    from rlhf_helpers.frontier import plot_frontier

    points = [{"algo": a, "beta": b, "kl": k, "mean_reward": r, "gold": g, "reward_before": -0.4, "gold_before": 0.0}
              for a, b, k, r, g in [("ppo", 0.1, 5, 1, 0.5), ("ppo", 0.2, 3, 0.5, 0.3), ("dpo", 0.1, 4, 0.8, 0.4)]]
    fig = plot_frontier(points)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "PPO" in labels and "DPO" in labels and "GRPO" not in labels


def test_dpo_run_refuses_an_odd_mini_batch():
    from rlhf_helpers import get_profile
    from rlhf_helpers.train import check_run_arguments

    with pytest.raises(ValueError, match="must be even"):
        check_run_arguments("dpo", get_profile("smoke"), batch_size=63, mini_batch_size=21)
    check_run_arguments("dpo", get_profile("smoke"))  # the profile's own sizes are fine
