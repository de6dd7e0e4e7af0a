"""Supervised fine-tuning: the loss against a naive loop, the exercise checker's hints, TRL's SFTTrainer computing
the same loss on its own batch of the course's demonstrations, and a short run that lowers the held-out loss."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_helpers.exercises import _sft_inputs, check_sft_loss
from rlhf_helpers.sft import Demonstrations, SFTSettings, heldout_loss, sft_batch, sft_loss, train_by_hand


def test_the_sft_loss_is_the_token_mean_of_a_naive_loop():
    logits, ids, response, _ = _sft_inputs()
    total, count = 0.0, 0
    for row in range(ids.shape[0]):
        for t in range(1, ids.shape[1]):
            if response[row, t]:  # a response token, predicted from position t - 1
                total += -torch.log_softmax(logits[row, t - 1], -1)[ids[row, t]].item()
                count += 1
    assert count == 4 + 3 + 2
    assert sft_loss(logits, ids, response).item() == pytest.approx(total / count, rel=1e-6)


def test_the_checker_names_each_common_mistake(capsys):
    def no_shift(logits, ids, mask):
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
        return (nll * mask).sum() / mask.sum()

    def per_row(logits, ids, mask):
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        return ((nll * mask[:, 1:]).sum(1) / mask[:, 1:].sum(1)).mean()

    def with_padding(logits, ids, mask):
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        return (nll * mask[:, 1:]).sum() / nll.numel()

    for wrong, hint in [(no_shift, "no shift"), (per_row, "a mean per row"), (with_padding, "padding is averaged")]:
        with pytest.raises(AssertionError, match=hint):
            check_sft_loss(wrong)
    assert check_sft_loss(sft_loss) is sft_loss
    assert "✅" in capsys.readouterr().out

    def stub(logits, ids, mask):
        raise NotImplementedError

    assert check_sft_loss(stub) is sft_loss  # left empty: the notebook continues with the course's loss


def test_a_batch_masks_the_prompt_and_the_padding():
    demos = Demonstrations([[5, 6], [7]], [[1, 2, 3], [4, 4]])
    batch = sft_batch(demos, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 1, 2, 3], [7, 4, 4, 0, 0]]
    assert batch["response_mask"].tolist() == [[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


@pytest.fixture(scope="module")
def base_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_helpers.models import prepare_tokenizer
    from rlhf_helpers.offline import smoke_world

    world = smoke_world()
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(world.base))  # left padding, as the course samples
    return AutoModelForCausalLM.from_pretrained(world.base, dtype=torch.float32), tokenizer


def _demos(tokenizer, n, seed):
    texts = ["This movie was one of the best I have seen in years, the acting was superb and the story moving.",
             "I hated every minute of this film. The plot made no sense and the dialogue was wooden and dull.",
             "A quiet, beautiful film about a family, with a score that stays with you long after it ends.",
             "The worst sequel ever made: loud, long, and without one idea of its own. Avoid it at all costs."]
    g = torch.Generator().manual_seed(seed)
    prompts, responses = [], []
    for i in range(n):
        ids = tokenizer(texts[i % len(texts)])["input_ids"]
        k = int(torch.randint(2, 6, (1,), generator=g))
        prompts.append(ids[:k])
        responses.append(ids[k: k + 8 + i % 5])  # responses of different lengths
    return Demonstrations(prompts, responses)


def test_trl_sft_trainer_computes_the_course_loss_on_its_own_batch(base_model, tmp_path):
    """TRL's SFTTrainer, given the course's tokenized demonstrations, builds the same rows (right-padded, the response
    as the completion) and computes the same loss as `sft_loss` on them, to 1e-6."""
    from rlhf_helpers.sft import make_sft_trainer, sft_config

    model, tokenizer = base_model
    demos = _demos(tokenizer, 8, seed=0)
    settings = SFTSettings(steps=1, batch_size=8, learning_rate=1e-3, warmup_steps=1)
    trainer = make_sft_trainer(model, tokenizer, demos, sft_config(settings, str(tmp_path)))
    batch = next(iter(trainer.get_train_dataloader()))
    ours = sft_batch(demos.subset(range(8)), tokenizer.pad_token_id)
    rows = {tuple(r) for r in batch["input_ids"].tolist()}
    assert rows == {tuple(r) for r in ours["input_ids"].tolist()}  # the same rows, in TRL's shuffled order
    response = (batch["labels"] != -100).long()
    assert int(response.sum()) == int(ours["response_mask"].sum())  # prompt and padding masked as the course masks
    model.eval()
    with torch.no_grad():
        theirs = trainer.compute_loss(model, dict(batch)).item()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        mine = sft_loss(logits, batch["input_ids"], response).item()
    assert mine == pytest.approx(theirs, abs=1e-6)


def test_a_short_run_by_hand_lowers_the_heldout_loss(base_model):
    from transformers import AutoModelForCausalLM

    from rlhf_helpers.offline import smoke_world

    _, tokenizer = base_model
    model = AutoModelForCausalLM.from_pretrained(smoke_world().base, dtype=torch.float32)
    train, heldout = _demos(tokenizer, 32, seed=1), _demos(tokenizer, 8, seed=2)
    settings = SFTSettings(steps=6, batch_size=8, learning_rate=3e-3, warmup_steps=2, eval_every=3)
    log = train_by_hand(model, train, heldout, tokenizer.pad_token_id, settings)
    measured = [row["heldout_loss"] for row in log if "heldout_loss" in row]
    assert len(measured) == 3 and measured[-1] < measured[0]
    assert all(math.isfinite(row.get("loss", 0.0)) for row in log)
    assert heldout_loss(model, heldout, tokenizer.pad_token_id) == pytest.approx(measured[-1])


def test_evaluating_along_the_run_does_not_change_it(base_model):
    """EvaluateAlong samples in the middle of a run that uses dropout: the run must train exactly as without it."""
    from transformers import AutoModelForCausalLM

    from rlhf_helpers.data import HeldoutPrompts
    from rlhf_helpers.offline import smoke_world
    from rlhf_helpers.profiles import Sampling
    from rlhf_helpers.sft import EvaluateAlong

    _, tokenizer = base_model
    train, heldout = _demos(tokenizer, 16, seed=1), _demos(tokenizer, 4, seed=2)
    settings = SFTSettings(steps=4, batch_size=4, learning_rate=3e-3, warmup_steps=1, eval_every=2)
    prompts = HeldoutPrompts(["A film", "The plot"], [tokenizer("A film")["input_ids"],
                                                      tokenizer("The plot")["input_ids"]])
    runs = []
    for along in (None, "evaluate"):
        torch.manual_seed(0)  # dropout draws from the global generator
        model = AutoModelForCausalLM.from_pretrained(smoke_world().base, dtype=torch.float32)
        reference = AutoModelForCausalLM.from_pretrained(smoke_world().base, dtype=torch.float32).eval()
        def by_length(texts):  # a stand-in reward
            return torch.tensor([len(t) / 10.0 for t in texts])

        measure = along and EvaluateAlong(reference, tokenizer, by_length, prompts,
                                          Sampling(min_tokens=2, max_tokens=4, batch_size=2), steps=(2, 4))
        log = train_by_hand(model.train(), train, heldout, tokenizer.pad_token_id, settings, on_measure=measure)
        runs.append(([row.get("loss") for row in log], measure))
    assert runs[0][0] == runs[1][0]  # the same losses at every step, to the last bit
    points = runs[1][1].points
    assert [p["step"] for p in points] == [2, 4] and points[0]["kl"] != 0.0  # measured against the base, on the way
    assert runs[1][1].last.metrics == {k: v for k, v in points[-1].items()
                                       if k not in ("step", "mean_reward_se", "positive_rate_se")}


def test_the_sft_readings_say_what_moved_by_hand():
    from rlhf_helpers.sft import ppo_line, read_positive_sft, read_sft, text_row, unseen_change

    def row(loss, unseen, reward):  # standard errors 0.005 and 0.04: differences need 0.014 and 0.113
        return {"held-out loss (nats/token)": loss, "perplexity": math.exp(loss), "unseen-word rate": unseen,
                "unseen-word rate SE": 0.005, "mean reward": reward, "mean reward SE": 0.04, "prompts": 128}

    rows = {"base": row(6.9, 0.11, 0.07), "sft": row(5.3, 0.13, 0.19), "policy": row(4.0, 0.05, 0.09)}
    text = read_sft(rows, "base", "sft", "policy")
    assert text.startswith("Fine-tuning took the held-out loss from 6.90 to 5.30 nats per token (perplexity 992 -> "
                           "200); the unseen-word rate rose 11.0% -> 13.0%, beyond its noise (of 128 samples)")
    assert "the mean reward +0.07 -> +0.19, beyond its noise" in text
    assert "The course's policy, fine-tuned far longer, is at 4.00 nats and 5.0% unseen" in text
    quiet = read_sft({**rows, "sft": row(5.3, 0.115, 0.10)}, "base", "sft")
    assert "rose 11.0% -> 11.5%, within its noise" in quiet and "reward +0.07 -> +0.10, within its noise" in quiet
    assert quiet.endswith("SFT aims at the demonstrations, not at the reward.")
    yardstick = read_sft({**rows, "sft": row(5.3, 0.115, 0.10), "real": row(0.0, 0.007, 0.35)}, "base", "sft",
                         real="real")
    assert yardstick.endswith("not at the reward: real review text on the same prompts scores +0.35 ± 0.04, apart "
                              "from the fine-tuned model's beyond the noise.")  # 0.25 apart, 2 SE = 0.11
    alike = read_sft({**rows, "sft": row(5.3, 0.115, 0.10), "real": row(0.0, 0.007, 0.05)}, "base", "sft",
                     real="real")
    assert alike.endswith("scores +0.05 ± 0.04, indistinguishable from the fine-tuned model's.")
    # the paired reading decides the unseen-word verdict when given: the same rise, called beyond or within by its z
    paired = read_sft(rows, "base", "sft", paired={"difference": 0.02, "se": 0.012, "z": 1.67})
    assert ("rose 11.0% -> 13.0%, within its noise (paired over the same 128 prompts: +2.0 ± 1.2 points, one standard "
            "error, z = 1.7)") in paired
    assert "beyond its noise (paired" in read_sft(quiet_rows := {**rows, "sft": row(5.3, 0.115, 0.10)}, "base", "sft",
                                                  paired={"difference": 0.005, "se": 0.002, "z": 2.5})
    assert quiet_rows["sft"]["unseen-word rate"] == 0.115
    # a ratio's standard error by hand: two responses, 1 of 2 and 1 of 4 words unseen
    stats = text_row(["A", "B"], [" good zzq film", " bad qqx dull movie ok"], [1.0, -1.0], {"a", "b", "good",
                                                                                           "bad", "dull", "film",
                                                                                           "movie", "ok"})
    # continuation_words drops the last word (it may be cut): "good zzq" (1 of 2) and "bad qqx dull movie" (1 of 4)
    assert stats["unseen-word rate"] == pytest.approx(2 / 6)
    assert stats["unseen-word rate SE"] == pytest.approx((2 / 9) ** 0.5 / 6)  # residuals 1 - 2/3 and 1 - 4/3
    assert stats["mean reward"] == 0.0 and stats["positive rate"] == 0.5 and stats["prompts"] == 2
    assert stats["positive rate SE"] == pytest.approx(0.5 / 2 ** 0.5)  # sqrt(p (1 - p) / n)
    # the paired change by hand: after, prompt A's response has 0 of 2 unseen and B's 2 of 4 (rate 2/6 again)
    vocabulary = {"a", "b", "good", "bad", "dull", "film", "movie", "ok", "nice"}
    change = unseen_change(["A", "B"], [" good zzq film", " bad qqx dull movie ok"],
                           [" good nice film", " bad qqx qqy movie ok"], vocabulary)
    # per prompt: (u_b - r c_b)/6 - (u_a - r c_a)/6 with r = 1/3:
    # A (0 - 2/3)/6 - (1 - 2/3)/6 = -1/6, B (2 - 4/3)/6 - (1 - 4/3)/6 = 1/6
    assert change["difference"] == pytest.approx(0.0)
    assert change["se"] == pytest.approx(2 ** 0.5 / 6)
    same = unseen_change(["A", "B"], [" good zzq film", " bad qqx dull movie ok"],
                         [" good zzq film", " bad qqx dull movie ok"], vocabulary)
    assert same["difference"] == 0.0 and same["se"] == 0.0  # a writer against itself: nothing to pair away
    before = {"mean_reward": 0.05, "positive_rate": 0.55, "kl": 0.0}
    ppo = [{"kl": 3.0, "mean_reward": 1.05, "seeds": 3}, {"kl": 6.0, "mean_reward": 2.2, "seeds": 3}]
    text = read_positive_sft(before, {"mean_reward": 0.55, "positive_rate": 0.66, "kl": 1.5}, ppo)
    assert "+0.05 -> +0.55 (positive rate 55% -> 66%) for a KL of 1.5 nats" in text
    assert "(the mean of 3 seeds per coefficient)" in text
    assert "(positive rate 55% -> 66%, standard error about 4%) for a KL" in read_positive_sft(
        before, {"mean_reward": 0.55, "positive_rate": 0.66, "positive_rate_se": 0.042, "kl": 1.5}, ppo)
    assert "reaches about +0.55." in text  # halfway from (0, +0.05) to (3, +1.05)
    far = read_positive_sft(before, {"mean_reward": 0.55, "positive_rate": 0.66, "kl": 9.0}, ppo)
    assert far.endswith("started from.")  # beyond PPO's KL: nothing to read it against
    # PPO's line: +0.25 at KL 0.6, +0.55 at 1.5
    along = [{"step": 20, "kl": 0.6, "mean_reward": 0.2, "mean_reward_se": 0.1},
             {"step": 40, "kl": 1.5, "mean_reward": 0.25, "mean_reward_se": 0.1}]
    mixed = read_positive_sft(before, along[1] | {"positive_rate": 0.66}, ppo, along)
    assert ("At its evaluations (steps 20 and 40) the SFT run sits 0.05 below and 0.30 below that line, beyond twice "
            "its standard error at 1 of 2 (standard errors over the prompts 0.10, 0.10; one SFT run; PPO's spread over "
            "its seeds is not in this test).") in mixed
    close = [dict(along[0]), dict(along[1], mean_reward=0.6)]
    assert "0.05 below and 0.05 above that line, each within twice" in read_positive_sft(
        before, close[1] | {"positive_rate": 0.66}, ppo, close)
    assert "each beyond twice" in read_positive_sft(before, along[1] | {"positive_rate": 0.66}, ppo,
                                                    [dict(p, mean_reward_se=0.01) for p in along])
    assert [p["kl"] for p in ppo_line(before, list(reversed(ppo)))] == [0.0, 3.0, 6.0]  # from the start, by KL


def test_the_long_run_reading_finds_where_it_reached_the_policy():
    from rlhf_helpers.sft import read_sft_longer

    def point(step, loss, unseen, seconds=60.0):
        return {"step": step, "seconds": seconds, "held-out loss (nats/token)": loss, "unseen-word rate": unseen,
                "unseen-word rate SE": 0.01}

    longer = {"checkpoints": [point(0, 6.9, 0.10), point(120, 5.3, 0.14), point(960, 4.5, 0.05),
                              point(1920, 4.2, 0.035), point(3840, 4.0, 0.03, seconds=1800.0)]}
    rows = {"here": point(120, 5.35, 0.15), "policy": point(0, 4.0, 0.037)}
    text = read_sft_longer(longer, rows, "here", "policy", steps=120)
    assert text.startswith("The same recipe run 3,840 steps (about 30 min on one CPU core, one seed) took the "
                           "held-out loss to 4.00 nats and the unseen-word rate to 3.0%; it was first at or below the "
                           "course's policy's 3.7% at step 1,920.")
    assert ("At step 120 this run (its demonstrations include yours, in another order, with the loop by hand) was "
            "at 5.30 nats and 14.0% unseen, yours at 5.35 and 15.0%: 1.0 points apart, 0.7 standard errors "
            "(unpaired), both above the base's beyond the noise (10.0%).") in text  # SE of the gap: 1.41 points
    below = read_sft_longer(longer, {**rows, "here": point(120, 5.35, 0.09)}, "here", "policy", steps=120)
    assert ("yours at 5.35 and 9.0%: 5.0 points apart, 3.5 standard errors (unpaired), this run's above the base's "
            "beyond the noise, yours within it (10.0%).") in below
    close = read_sft_longer(longer, {**rows, "here": point(120, 5.35, 0.12)}, "here", "policy", steps=120)
    assert "this run's above the base's beyond the noise, yours within it" in close  # 12% vs 10%: 1.4 SE
    assert ("On the way its unseen-word rate first rose above the base's, to 14.0% at step 120 (the model mixes "
            "review sub-words before it spells review words), and was below the base's, beyond the noise, from step "
            "960.") in text  # 10% +- 1 -> 14% +- 1 is beyond twice the SE of the difference, 5% +- 1 too
    never = read_sft_longer(longer, {**rows, "policy": point(0, 4.0, 0.02)}, "here", "policy", steps=100)
    assert "still above the course's policy's 2.0% at its end, though within the noise of the two." in never
    assert "At step" not in never  # no step-100 point to compare
    assert "at its end, beyond the noise." in read_sft_longer(longer, {**rows, "policy": point(0, 4.0, 0.001)},
                                                             "here", "policy", steps=100)
    late = {"checkpoints": longer["checkpoints"][:2] + [point(960, 4.5, 0.09), point(3840, 4.0, 0.05)]}
    assert "below the base's beyond the noise only at its last evaluation." in read_sft_longer(
        late, rows, "here", "policy", steps=120)
    never_below = {"checkpoints": longer["checkpoints"][:2] + [point(3840, 4.0, 0.09)]}
    assert "never below the base's beyond the noise." in read_sft_longer(never_below, rows, "here", "policy", 120)
    settings = {"steps": 3840, "batch_size": 32, "n_train": 24000}
    why = read_sft_longer({**longer, "settings": settings}, {**rows, "policy": point(0, 4.0, 0.02)}, "here", "policy",
                          steps=100)
    assert ("within the noise of the two. It repeats the openings of 24,000 reviews, each about 5 times; the course's "
            "policy was trained on whole reviews, far more text. On the way") in why  # 3,840 x 32 / 24,000 = 5.1
    assert "repeats" not in read_sft_longer({**longer, "settings": settings}, rows, "here", "policy", steps=120)
    assert "lowest" not in text  # no curve given: nothing said of it
    falling = [6.9, 5.0, 4.5, 4.2, 4.1, 4.0, 3.95, 3.9, 3.9, 3.9]  # then rising by 0.1 a step, or wobbling
    curve = [{"step": 100 * i, "heldout_loss": v} for i, v in enumerate(falling + [4.0, 4.1, 4.2, 4.3, 4.4])]
    rising = read_sft_longer({**longer, "heldout_curve": curve}, rows, "here", "policy", steps=120)
    # means of 5: lowest 3.93 (steps 500-900: 4.0 3.95 3.9 3.9 3.9 -> 3.93), last 4.2 (steps 1000-1400)
    assert ("Its held-out loss (a mean of 5 evaluations) was lowest at step 900 (3.93) and rose 0.27 after: it had "
            "begun to memorise its demonstrations.") in rising
    wobble = [{"step": 100 * i, "heldout_loss": v} for i, v in enumerate(falling + [3.93, 3.88, 3.92, 3.87, 3.93])]
    flat = read_sft_longer({**longer, "heldout_curve": wobble}, rows, "here", "policy", steps=120)
    assert "lowest" not in flat  # the last 5 average 3.906, within RISE of the lowest mean (3.90): not a rise


@pytest.mark.slow  # fine-tunes the smoke world's base for a few steps and evaluates it twice (about 20 s)
def test_the_sft_run_writes_a_policy_that_every_notebook_can_start_from(tmp_path, monkeypatch, capsys):
    import json

    from rlhf_helpers import get_profile
    from rlhf_helpers.models import load_policy, model_ids
    from rlhf_helpers.train import main

    out = tmp_path / "sft"
    summary = main(["--algo", "sft", "--profile", "smoke", "--out", str(out), "--steps", "3", "--batch-size", "4"])
    assert (out / "policy" / "config.json").is_file() and (out / "policy" / "model.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text())["steps"] == 3 and summary["algo"] == "sft"
    losses = [json.loads(line)["heldout_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]  # three steps from the base already lower the held-out loss
    assert summary["before"]["kl"] == pytest.approx(0.0) and summary["after"]["kl"] > 0  # KL to the base
    monkeypatch.setenv("RLHF_POLICY_MODEL", str(out / "policy"))
    assert model_ids(get_profile("smoke")).policy == str(out / "policy")
    assert load_policy(get_profile("smoke")).config.n_layer > 0
    with pytest.raises(SystemExit):  # a finished run is never overwritten
        main(["--algo", "sft", "--profile", "smoke", "--out", str(out), "--steps", "3"])
    assert "holds a finished run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--algo", "sft", "--profile", "smoke", "--out", str(tmp_path / "x"), "--mini-batch-size", "2"])
    assert "--mini-batch-size does not apply to --algo sft" in capsys.readouterr().err


def test_the_real_continuations_continue_the_held_out_prompts_as_long_as_a_sample_may():
    from rlhf_helpers import get_profile
    from rlhf_helpers.data import filter_and_clean, heldout_prompts, load_imdb
    from rlhf_helpers.evaluation import EVAL_SEED
    from rlhf_helpers.models import load_tokenizer
    from rlhf_helpers.profiles import Sampling
    from rlhf_helpers.sampling import sample_responses
    from rlhf_helpers.sft import heldout_continuations

    profile = get_profile("smoke")
    tokenizer = load_tokenizer(profile)
    prompts = heldout_prompts(profile, tokenizer, n=8)
    sampling = Sampling(min_tokens=4, max_tokens=16)
    real = heldout_continuations(profile, tokenizer, prompts, sampling)
    reviews = set(filter_and_clean(load_imdb("test", profile), profile.min_review_chars)["text"])
    for query, continuation in zip(prompts.queries, real):  # each is the start of one real held-out review
        assert any(review.startswith(query + continuation) for review in reviews)

    class Never:  # a policy that never stops early: its responses are exactly as long as their caps
        device = torch.device("cpu")

        def parameters(self):
            yield torch.zeros(1)

        def generate(self, input_ids, max_new_tokens, **kwargs):
            return torch.cat([input_ids, torch.full((len(input_ids), max_new_tokens), 11)], 1)

    drawn = sample_responses(Never(), tokenizer, prompts.input_ids, 4, 16, seed=EVAL_SEED)
    assert [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in real] == [
        len(r) for r in drawn.response_ids]


def test_the_curve_reading_says_where_each_run_ended_and_whether_it_still_fell():
    from rlhf_helpers.sft import read_sft_curves

    trl = [{"step": 0, "heldout_loss": 6.9}, {"step": 60, "heldout_loss": 5.6}, {"step": 120, "heldout_loss": 5.3}]
    hand = [{"step": 0, "heldout_loss": 6.9}, {"step": 1, "loss": 6.8}, {"step": 30, "loss": 5.9, "heldout_loss": 5.8}]
    assert read_sft_curves(trl, hand, 3.97) == ("Held-out loss: TRL's run 6.90 -> 5.30 in 120 steps, still falling at "
                                                "its end; the loop by hand 6.90 -> 5.80 in its 30 steps, where TRL's "
                                                "run passed 6.25 (read between its evaluations); the course's policy "
                                                "is at 3.97.")  # 6.9 - 1.3 x 30/60
    flat = trl[:2] + [{"step": 120, "heldout_loss": 5.7}]
    assert "no longer falling at its end" in read_sft_curves(flat, hand, 3.97)
