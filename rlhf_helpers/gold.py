"""Calibrating the gold rater's fluency penalty on texts the studies never evaluate.

The rater (`reward.GoldRater`) charges `weight · max(0, nll − free)` for text that reads worse than real reviews, nll
being the reader LM's mean negative log-likelihood per token. Its two constants are read off four kinds of
calibration text, all cut from IMDB's *train* reviews (the studies evaluate on test-split prompts):

* **real**: a prompt (the first 2-8 tokens of a review) and the review's true next 16 tokens;
* **shuffled**: the same words in a random order: every word is English, the sentence is not;
* **repeated praise**: the prompt, then praise words repeated ("great great best great ..."), the PPO hack;
* **gibberish**: the prompt, then 16 tokens drawn uniformly from the vocabulary (sub-word soup).

The rule: `free` is the 95th percentile of the real texts' nll (95 % of real text pays nothing), and `weight` makes
the median shuffled text pay as much as the judge's own gap between a typical positive and a typical negative real
text (so "not a sentence" costs as much as "the opposite opinion", and neither dwarfs the other).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .data import cache_root, clean_review, load_imdb, make_prompts
from .faults import write_text_atomic
from .profiles import Profile
from .reward import GoldRater, ReaderFluency, SentimentReward, repeated_word_share

KINDS = ("real", "shuffled", "repeated praise", "gibberish")
FREE_QUANTILE = 0.95
"""Share of real calibration texts that pay no fluency penalty."""
PRAISE = ("great", "best", "wonderful", "excellent", "love", "beautiful", "perfect", "amazing")


@dataclass(frozen=True)
class Calibration:
    """The rater's fluency constants and what they were read from."""

    free: float
    """Reader nll (nats/token) below which a text pays nothing: the real texts' 95th percentile."""
    weight: float
    """Gold points per nat/token above `free`."""
    sentiment_gap: float
    """The judge's median POSITIVE logit on real positive texts minus that on real negative ones."""
    shuffled_nll: float
    """Median reader nll of the shuffled texts."""
    texts: int
    """Calibration texts per kind."""


def calibration_texts(reviews: list[str], labels: list[int], tokenizer, n: int = 200, seed: int = 0) -> pd.DataFrame:
    """`n` texts of each kind (KINDS) from the first `n` of `reviews` (pass train-split reviews). Columns: kind,
    label (the review's sentiment; None for the made-up kinds), text."""
    rng = np.random.default_rng(seed)
    reviews, labels = reviews[:n], labels[:n]
    prompts = make_prompts(reviews, tokenizer, 2, 8, seed=seed)
    rows = []
    for review, label, prompt in zip(reviews, labels, prompts):
        ids = tokenizer(review[:400], add_special_tokens=False)["input_ids"]
        k = len(prompt["input_ids"])
        real = tokenizer.decode(ids[k:k + 16])
        words = real.split()
        shuffled = " ".join(words[i] for i in rng.permutation(len(words))) if words else real
        praise = " ".join(rng.choice(PRAISE, size=8))
        gibberish = tokenizer.decode(rng.integers(0, len(tokenizer) - 1, size=16).tolist())
        rows += [{"kind": "real", "label": label, "text": prompt["query"] + real},
                 {"kind": "shuffled", "label": None, "text": prompt["query"] + " " + shuffled},
                 {"kind": "repeated praise", "label": None, "text": prompt["query"] + " " + praise},
                 {"kind": "gibberish", "label": None, "text": prompt["query"] + gibberish}]
    return pd.DataFrame(rows)


def calibrate(judge: SentimentReward, reader: ReaderFluency, texts: pd.DataFrame) -> tuple[Calibration, pd.DataFrame]:
    """The constants (see the module's rule) and `texts` with each one's sentiment, nll and repeated-word share."""
    scored = texts.assign(sentiment=judge(list(texts.text)).cpu().numpy(),
                          nll=reader(list(texts.text)).cpu().numpy(),
                          repeated=[repeated_word_share(t) for t in texts.text])
    real = scored[scored.kind == "real"]
    free = float(np.quantile(real.nll, FREE_QUANTILE))
    gap = float(real[real.label == 1].sentiment.median() - real[real.label == 0].sentiment.median())
    shuffled = float(scored[scored.kind == "shuffled"].nll.median())
    if shuffled <= free:
        raise ValueError(f"The reader finds shuffled text as easy as real text (median nll {shuffled:.2f} <= "
                         f"{free:.2f}): it cannot tell language apart; train it longer.")
    return Calibration(free, gap / (shuffled - free), gap, shuffled, int((scored.kind == "real").sum())), scored


def calibration_table(scored: pd.DataFrame, calibration: Calibration, rater) -> pd.DataFrame:
    """One row per kind: the mean judge sentiment, reader nll, the two penalties and the gold score."""
    texts = list(scored.text)
    scored = scored.assign(repetition_penalty=rater.repetition_penalty(texts).cpu().numpy(),
                           fluency_penalty=calibration.weight * np.clip(scored.nll - calibration.free, 0, None))
    scored = scored.assign(gold=scored.sentiment - scored.repetition_penalty - scored.fluency_penalty)
    columns = ["sentiment", "nll", "repetition_penalty", "fluency_penalty", "gold"]
    return scored.groupby("kind", sort=False)[columns].mean().reindex(list(KINDS))


def as_record(calibration: Calibration, table: pd.DataFrame) -> dict:
    """The calibration as JSON: the constants and the per-kind table."""
    return {**asdict(calibration), "table": {kind: {k: round(float(v), 4) for k, v in row.items()}
                                             for kind, row in table.iterrows()}}


CALIBRATION_SEED = 7
"""Which train reviews the calibration texts come from (the world's build uses the same draw)."""


def calibration_set(reviews: list[str], labels: list[int], tokenizer, n: int = 200,
                    seed: int = CALIBRATION_SEED) -> pd.DataFrame:
    """`calibration_texts` on `n` train reviews drawn with `seed` (the draw the shipped world was calibrated on)."""
    order = np.random.default_rng(seed).permutation(len(reviews))[:n]
    return calibration_texts([reviews[i] for i in order], [int(labels[i]) for i in order], tokenizer, n=n, seed=seed)


def calibrated_rater_constants(judge: SentimentReward, reader: ReaderFluency, tokenizer, profile: Profile,
                               ids: tuple[str, str]) -> dict:
    """The fluency constants for this judge and reader (the hub profiles' siebert and GPT-2 medium, or overrides),
    calibrated on first use on IMDB train reviews and cached by their ids; prints the table once."""
    key = hashlib.sha256(json.dumps([list(ids), CALIBRATION_SEED, FREE_QUANTILE]).encode()).hexdigest()[:16]
    path = cache_root() / f"gold-calibration-{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    columns = load_imdb("train", profile)[:]
    texts = calibration_set([clean_review(t) for t in columns["text"]], columns["label"], tokenizer)
    calibration, scored = calibrate(judge, reader, texts)
    record = as_record(calibration, calibration_table(scored, calibration, GoldRater(judge)))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=1))
    print(f"Calibrated the gold rater's fluency penalty for {ids[0]} with reader {ids[1]}: free {calibration.free:.2f} "
          f"nats/token, {calibration.weight:.2f} gold points per nat above it (cached in {path}).")
    return record
