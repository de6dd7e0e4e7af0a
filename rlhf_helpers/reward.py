"""The sentiment reward: text in, the classifier's POSITIVE logit out.

Why the raw logit and not a probability: the logit keeps growing as a text gets more positive, while a
probability saturates at 1 and its gradient signal vanishes (TRL issue #173; the classic notebook used
`function_to_apply="none"`).

Why the label is looked up **by name**: the pipeline sorts its outputs by score, and models order their
labels differently. Reading "index 1" or "the first output" scored the wrong class in TRL's own notebook
(issue #117, PR #1738), and a 2-label classifier handed to a trainer as a reward model scores index 0,
which is NEGATIVE for `lvwerra/distilbert-imdb` (issue #3269).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch


def positive_label_index(config, positive_label: str = "POSITIVE") -> int:
    """The output index whose label name is `positive_label` (case-insensitive). Never assume 1."""
    names = {int(i): str(name) for i, name in config.id2label.items()}
    matches = [i for i, name in names.items() if name.lower() == positive_label.lower()]
    if len(matches) != 1:
        raise ValueError(
            f"The classifier's labels are {names}; none is named {positive_label!r}. Pass "
            f"positive_label='<name of the positive class>' (for lvwerra/distilbert-imdb it is 'POSITIVE').")
    return matches[0]


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or len(texts) == 0:
        raise ValueError("Pass a non-empty list of strings to score.")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"Text {i} is a {type(t).__name__}, not a str. Decode token ids with "
                            f"tokenizer.batch_decode(...) before scoring.")
        if not t.strip():
            raise ValueError(f"Text {i} is empty or blank; the classifier cannot score it. Filter empty "
                             f"responses out, or score prompt + response together.")
    return list(texts)


class SentimentReward:
    """Batched POSITIVE-logit scorer around a `pipeline("sentiment-analysis", ...)`.

    >>> reward = SentimentReward(pipeline("sentiment-analysis", model="lvwerra/distilbert-imdb"))
    >>> reward(["A wonderful film.", "Dreadful."])            # tensor([ 2.6, -2.4]) or so

    Texts longer than the classifier reads are truncated (`truncation=True`, as the classic notebook
    did); with `truncation=False` they raise instead.
    """

    def __init__(self, classifier, positive_label: str = "POSITIVE", batch_size: int = 64,
                 truncation: bool = True, label_index=positive_label_index):
        self.pipeline = classifier
        self.model = classifier.model.eval()
        self.tokenizer = classifier.tokenizer
        if self.tokenizer.pad_token is None:  # batching needs one; reuse EOS as GPT-2-style models do
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # label_index(config, name) -> int: notebook 01 passes the learner's own lookup
        self.positive_index = label_index(self.model.config, positive_label)
        self.positive_label = positive_label
        self.batch_size = batch_size
        self.truncation = truncation
        self.max_length = min(self.tokenizer.model_max_length,
                              getattr(self.model.config, "max_position_embeddings", 10**9))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def logits(self, texts) -> torch.Tensor:
        """(N,) float32 tensor of the POSITIVE logit of each text, on the classifier's device."""
        texts = _check_texts(texts)
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            if not self.truncation:
                lengths = [len(ids) for ids in self.tokenizer(chunk)["input_ids"]]
                too_long = [(start + i, n) for i, n in enumerate(lengths) if n > self.max_length]
                if too_long:
                    i, n = too_long[0]
                    raise ValueError(
                        f"Text {i} has {n} tokens but the classifier reads at most {self.max_length}. "
                        f"Use SentimentReward(..., truncation=True) or shorten the text.")
            enc = self.tokenizer(chunk, truncation=True, max_length=self.max_length, padding=True,
                                 return_tensors="pt").to(self.device)
            out.append(self.model(**enc).logits[:, self.positive_index].float())
        return torch.cat(out)

    def __call__(self, texts) -> torch.Tensor:
        """Rewards: the POSITIVE logit of each text."""
        return self.logits(texts)


REPEATS_ALLOWED = 0.15
"""Share of repeated words the gold rater lets pass unpenalized: natural short reviews repeat a few words ("the",
"and"), so the penalty only starts above this share."""
REPETITION_PENALTY = 8.0
"""Gold points the rater takes off per unit of repeated-word share above `REPEATS_ALLOWED`."""


def repeated_word_share(text: str) -> float:
    """1 − distinct words / words, lower-cased: 0 for "A fine film.", 0.75 for "great great great great"."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    return 1.0 - len(set(words)) / len(words) if words else 0.0


class ReaderFluency:
    """How hard a text is to read: its mean per-token negative log-likelihood (nats) under a *reader* LM, an
    independent language model larger than the policy that is only ever used to evaluate.

    Each text is read from a leading `<|endoftext|>`, so its first word is scored too (as GPT-2 scores a document).
    Real review text reads at a few nats per token; shuffled words and gibberish at many more."""

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_tokens = model.config.n_positions - 1

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def __call__(self, texts) -> torch.Tensor:
        """(N,) float32 mean negative log-likelihood per token of each text, on the reader's device."""
        texts = _check_texts(texts)
        bos = self.tokenizer.eos_token_id
        rows = [[bos] + ids[: self.max_tokens] for ids in
                self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        out = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            width = max(map(len, chunk))
            ids = torch.tensor([r + [bos] * (width - len(r)) for r in chunk], device=self.device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in chunk], device=self.device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            keep = mask[:, 1:].float()
            out.append((nll * keep).sum(1) / keep.sum(1))
        return torch.cat(out)


class GoldRater:
    """Notebooks 07-08's simulated human: the gold sentiment judge's POSITIVE logit, minus a penalty for repetitive
    text and, with a reader, a penalty for text that does not read as language.

    A person rating movie-review continuations values two things the course's reward does not separate: how
    positive the text is, and whether it is a sentence at all. Samples of the initial policy hardly ever repeat
    themselves, so preference pairs drawn from it carry almost no signal about the second; a policy pushed hard
    against a reward model learned from those pairs drifts into "great great great best" (or into words no reader
    knows) where the judge, like a reader, stops liking it. That is the gap Gao et al. (2022) measure between a proxy
    reward model and their gold one: the proxy is right where its training pairs were, and wrong off that
    distribution.

    score(text) = sentiment(text)
                  − REPETITION_PENALTY · max(0, repeated_word_share(text) − REPEATS_ALLOWED)
                  − fluency_weight · max(0, reader_nll(text) − fluency_free)

    `fluency_free` and `fluency_weight` come from a calibration (`gold.calibrate`); without a reader the last term
    is zero.
    """

    def __init__(self, sentiment: SentimentReward, penalty: float = REPETITION_PENALTY,
                 allowed: float = REPEATS_ALLOWED, reader: ReaderFluency | None = None, fluency_free: float = 0.0,
                 fluency_weight: float = 0.0, calibration: dict | None = None):
        self.sentiment = sentiment
        self.calibration = calibration
        """The calibration the fluency constants came from (`gold.as_record`: constants and per-kind table), if any."""
        self.pipeline = sentiment.pipeline
        self.penalty = penalty
        self.allowed = allowed
        self.reader = reader
        self.fluency_free = fluency_free
        self.fluency_weight = fluency_weight

    @property
    def device(self) -> torch.device:
        return self.sentiment.device

    def repetition_penalty(self, texts) -> torch.Tensor:
        """(N,) the points the rater takes off each text for repeated words, on the judge's device."""
        shares = torch.tensor([repeated_word_share(t) for t in _check_texts(texts)], device=self.device)
        return self.penalty * (shares - self.allowed).clamp(min=0)

    def fluency_penalty(self, texts) -> torch.Tensor:
        """(N,) the points the rater takes off each text for reading worse than real text (0 without a reader)."""
        texts = _check_texts(texts)
        if self.reader is None or self.fluency_weight == 0:
            return torch.zeros(len(texts), device=self.device)
        nll = self.reader(texts).to(self.device)
        return self.fluency_weight * (nll - self.fluency_free).clamp(min=0)

    def components(self, texts) -> dict[str, torch.Tensor]:
        """What the score is made of, per text (each (N,), on the judge's device): the judge's `sentiment`, the
        `repeated` word share and the reader's `nll` (NaN without a reader). `score` turns them into gold rewards
        under any constants, so a study can re-read its saved samples under other constants (a sensitivity check)."""
        texts = _check_texts(texts)
        nll = (self.reader(texts).to(self.device) if self.reader is not None
               else torch.full((len(texts),), float("nan"), device=self.device))
        return {"sentiment": self.sentiment(texts).float(),
                "repeated": torch.tensor([repeated_word_share(t) for t in texts], device=self.device),
                "nll": nll}

    def score(self, components: dict, penalty: float | None = None, allowed: float | None = None,
              fluency_free: float | None = None, fluency_weight: float | None = None) -> torch.Tensor:
        """Gold rewards from `components`, with this rater's constants unless others are given."""
        penalty = self.penalty if penalty is None else penalty
        allowed = self.allowed if allowed is None else allowed
        free = self.fluency_free if fluency_free is None else fluency_free
        weight = self.fluency_weight if fluency_weight is None else fluency_weight
        gold = components["sentiment"] - penalty * (components["repeated"] - allowed).clamp(min=0)
        if weight:
            gold = gold - weight * (components["nll"] - free).clamp(min=0)
        return gold

    def __call__(self, texts) -> torch.Tensor:
        """Gold rewards: sentiment minus the repetition and fluency penalties."""
        return self.score(self.components(texts))
