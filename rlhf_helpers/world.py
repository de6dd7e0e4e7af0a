"""The next offline world, built in parts: a tokenizer, a *base* LM, the policy fine-tuned from it, the two judges and
a *reader* LM.

`offline.py` builds today's smoke world on every machine, in minutes, and its 0.9M-parameter policy does not write
words. This world is built once, for hours if need be, and shipped in the repository. Its parts, in build order:

* **tokenizer**: byte-level BPE trained on reviews and on the base corpus (GPT-2's quirks kept: `<|endoftext|>` is
  the only special token, no pad token);
* **base**: a small GPT-2 pretrained on English that is *not* reviews, Python's own documentation (what `gpt2` is
  to `lvwerra/gpt2-imdb`);
* **policy**: the base fine-tuned on IMDB's train reviews (`lvwerra/gpt2-imdb`'s recipe, small);
* **classifier**: the reward, a small DistilBERT trained from scratch on IMDB's labels (`lvwerra/distilbert-imdb`);
* **reader**: a larger GPT-2 trained on reviews from its own seed; it scores fluency for the gold rater and is
  never trained against;
* **gold**: the gold judge's sentiment, the reader's backbone fine-tuned on IMDB's labels (as
  `siebert/sentiment-roberta-large-english` is RoBERTa-large fine-tuned): more accurate than the reward.

Each part is built in a scratch folder and renamed into place with a `part.json` that records the recipe's key, its
seconds, the CPU and what it measured; a rerun skips the parts already built with the same recipe, so a long build
can stop and go on (`python -m rlhf_helpers.world build --out DIR --part policy`). The base corpus is a folder of
reST files (`--base-corpus`, or `$RLHF_BASE_CORPUS_DIR`): docs/offline-world.md says how to fetch the one shipped
(Debian's `python3.11-doc`, whose `html/_sources`); without one, the docstrings of this Python's standard library
stand in (small, but on every machine).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import heldout_prompts, imdb_source, make_prompts
from .evaluation import continuation_words, distinct_word_share, evaluate, unseen_word_rate, word_list
from .gold import as_record, calibrate, calibration_set, calibration_table
from .models import prepare_tokenizer, quiet_transformers
from .offline import (CHECKSUMS, GOLD_RATER, SHIPPED_WORLD, Checkpoint, _checksums, _classifier_tokenizer,
                      _finetune_classifier, _save_checkpoint, _schedule, _texts, _train_tokenizer, eval_pick,
                      judge_predictions, token_chunks)
from .profiles import Sampling, get_profile
from .results import machine
from .reward import GoldRater, ReaderFluency, SentimentReward
from .sampling import sample_with

WORLD_VERSION = 1
CORPUS_ENV = "RLHF_BASE_CORPUS_DIR"
PARTS = ("tokenizer", "base", "policy", "classifier", "reader", "gold")
NEEDS = {"tokenizer": (), "base": ("tokenizer",), "policy": ("base",), "classifier": ("tokenizer",),
         "reader": ("tokenizer",), "gold": ("tokenizer",)}
"""What each part starts from (its folder must be built first)."""


@dataclass(frozen=True)
class WorldConfig:
    """The recipe of the world; every field is part of its key (a changed field means a rebuild)."""

    seed: int = 0
    """Seed of every draw: tokenizer sample, inits, batch order (each part offsets it)."""
    vocab_size: int = 4096
    """BPE vocabulary: vocabulary x width is the LM head, most of an RL step's cost."""
    tokenizer_reviews: int = 8000
    """Train reviews the tokenizer learns from."""
    tokenizer_corpus_chars: int = 4_000_000
    """Characters of the base corpus the tokenizer learns from (so that it can spell documentation too)."""
    layers: int = 6
    """Transformer blocks of the base and the policy (depth is the cheapest capacity: the head does not grow)."""
    dim: int = 128
    """Hidden size of the base and the policy."""
    heads: int = 4
    """Attention heads of the base and the policy."""
    positions: int = 128
    """Context of the base and the policy (prompt + response are at most 24 tokens)."""
    seq_len: int = 64
    """Tokens per training sequence of the base and the policy."""
    batch: int = 64
    """Sequences per step of the base and the policy."""
    base_steps: int = 1000
    """Pretraining steps of the base on the base corpus."""
    base_lr: float = 1.5e-3
    """Peak AdamW learning rate of the base (linear warm-up, cosine decay to a tenth)."""
    policy_steps: int = 12000
    """Fine-tuning steps of the policy (the base on reviews)."""
    policy_lr: float = 1e-3
    """Peak AdamW learning rate of the policy's fine-tuning."""
    warmup: int = 200
    """Warm-up steps of every LM in the world."""
    curve_every: int = 500
    """Measure held-out loss and the unseen-word rate every this many LM steps (the curve in part.json)."""
    curve_prompts: int = 512
    """Held-out prompts (test reviews' first 2-8 tokens) the curve samples 16-token continuations of (128 left the
    rate's sampling noise near ±1.5 points: the same policy read 5.2 % and 7.8 % with two seeds)."""
    reader_layers: int = 6
    """Transformer blocks of the reader (larger than the policy: it judges the policy's language)."""
    reader_dim: int = 192
    """Hidden size of the reader."""
    reader_heads: int = 6
    """Attention heads of the reader."""
    reader_positions: int = 128
    """Context of the reader (it scores texts of at most a few dozen tokens)."""
    reader_seq_len: int = 128
    """Tokens per reader training sequence (its full context: every position vector is trained)."""
    reader_batch: int = 32
    """Sequences per reader step."""
    reader_steps: int = 2000
    """Training steps of the reader on reviews."""
    reader_lr: float = 1e-3
    """Peak AdamW learning rate of the reader."""
    reader_seed_offset: int = 21
    """Added to `seed` for the reader's init and batch order (independent of the policy's)."""
    clf_arch: str = "distilbert"
    """The reward classifier's architecture (lvwerra/distilbert-imdb's)."""
    clf_layers: int = 2
    """Transformer blocks of the reward classifier."""
    clf_dim: int = 128
    """Hidden size of the reward classifier."""
    clf_heads: int = 4
    """Attention heads of the reward classifier."""
    clf_max_len: int = 256
    """Longest classifier input in tokens."""
    clf_train_len: int = 256
    """Training window of the classifier, in tokens (its whole context: positions it never trains on would read
    long reviews with random position vectors)."""
    clf_steps: int = 2500
    """Training steps of the reward classifier."""
    clf_batch: int = 32
    """Reviews per classifier step."""
    clf_lr: float = 6e-4
    """Peak AdamW learning rate of the classifier."""
    clf_short_frac: float = 0.5
    """Share of batches cut to short windows (8-48 tokens): the reward scores 10-24-token texts."""
    clf_seed_offset: int = 1
    """Added to `seed` for the classifier's init and batch order."""
    clf_truncation_side: str = "left"
    """Which end of a long review the classifier keeps: the end, where the verdict usually is (round 1's classifier
    read 84.2 % of 1,000 test reviews from their first 256 tokens, 86.3 % from their last)."""
    clf_logit_scale: float = 3.0
    """Multiplies the head's weights and bias (argmax unchanged) so the reward spans about ±3 like the hub's."""
    gold_arch: str = "bert"
    """The gold judge's architecture: another than the reward's (as siebert's RoBERTa is to distilbert-imdb's)."""
    gold_layers: int = 3
    """Transformer blocks of the gold judge (more than the reward classifier's)."""
    gold_dim: int = 192
    """Hidden size of the gold judge (wider than the reward classifier's)."""
    gold_heads: int = 4
    """Attention heads of the gold judge."""
    gold_max_len: int = 512
    """Longest gold-judge input in tokens: whole reviews (82 % of IMDB's test reviews fit in 512)."""
    gold_train_len: int = 512
    """Training window of the gold judge: its whole context (every position vector is trained)."""
    gold_steps: int = 3600
    """Training steps of the gold judge."""
    gold_batch: int = 32
    """Reviews per gold-judge step."""
    gold_lr: float = 5e-4
    """Peak AdamW learning rate of the gold judge (from scratch)."""
    gold_short_frac: float = 0.3
    """Share of gold batches cut to short windows (it judges 10-24-token texts in the studies)."""
    gold_seed_offset: int = 31
    """Added to `seed` for the gold judge's init and batch order."""
    gold_truncation_side: str = "left"
    """Which end of a long review the gold judge keeps: the end, where the verdict usually is."""
    gold_logit_scale: float = 1.0
    """Multiplies the gold head (argmax unchanged); the rater's calibration sets the penalties' scale against it."""
    gold_bucket: bool = True
    """Full-length batches are runs of reviews of similar length (little padding: about half the cost at 512)."""
    eval_reviews: int = 2000
    """Test reviews the judges' accuracy is reported on."""
    max_reviews: int = 25_000
    """Train reviews the LMs read (all of IMDB's train split; FAST reads a few hundred)."""


FAST = WorldConfig(vocab_size=512, tokenizer_reviews=300, tokenizer_corpus_chars=50_000, layers=1, dim=32, heads=2,
                   seq_len=32, batch=8, base_steps=4, policy_steps=6, warmup=2, curve_every=3, curve_prompts=8,
                   reader_layers=1, reader_dim=32, reader_heads=2, reader_seq_len=32, reader_batch=4, reader_steps=4,
                   clf_layers=1, clf_dim=32, clf_heads=2, clf_steps=4, clf_batch=4, gold_layers=1, gold_dim=32,
                   gold_heads=2, gold_steps=4, gold_batch=4,
                   eval_reviews=16, max_reviews=400)
"""A seconds-long recipe that runs every line of the builder (tests)."""


# --- the base corpus -------------------------------------------------------------------------------------------

_ROLE = re.compile(r":[\w:.-]+:`~?([^`<]*?)(?:\s*<[^`]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^`]*>`_+")
_LITERAL = re.compile(r"``([^`]*)``")
_MARKUP = re.compile(r"`([^`]*)`_*|\*\*?([^*]+)\*\*?")
_RULE = re.compile(r"^([=\-~^\"'*+#.`:])\1{3,}\s*$")
_FIELD = re.compile(r"^:[^:`]+:(\s|$)")  # ":param x: ..." (a field list), not ":func:`x` ..." (a role)
_BULLET = re.compile(r"^(?:[*+-]|#\.|\d+\.)\s+")


def rst_to_paragraphs(text: str) -> list[str]:
    """The prose of a reST document, one paragraph per string: code blocks, directives, tables and doctests dropped,
    roles and links reduced to their text."""
    paragraphs, current, code_indent = [], [], None
    for raw in text.splitlines() + [""]:
        indent = len(raw) - len(raw.lstrip())
        line = raw.strip()
        if code_indent is not None:  # inside a literal block: it ends at the first line indented no deeper
            if not line or indent > code_indent:
                continue
            code_indent = None
        if (not line or _RULE.match(line) or line.startswith((".. ", ">>>", "...", "|", "+-", "+="))
                or _FIELD.match(line)):
            if current:
                paragraphs.append(" ".join(current))
                current = []
            if line.endswith("::"):
                code_indent = indent
            continue
        if _BULLET.match(line):  # a list item starts a paragraph of its own
            if current:
                paragraphs.append(" ".join(current))
                current = []
            line = _BULLET.sub("", line)
        if line.endswith("::"):  # the paragraph ends here and a literal block (code) follows
            code_indent = indent
            current.append(line[:-2] + ("" if line.endswith(" ::") or line == "::" else ":"))
            paragraphs.append(" ".join(current))
            current = []
            continue
        current.append(line)
    cleaned = []
    for p in paragraphs:
        p = _LITERAL.sub(r"\1", _LINK.sub(r"\1", _ROLE.sub(r"\1", p)))
        p = " ".join(_MARKUP.sub(lambda m: m.group(1) or m.group(2) or "", p).split())
        if len(p) >= 40 and sum(c.isalpha() or c == " " for c in p) > 0.8 * len(p):  # prose, not a signature
            cleaned.append(p)
    return cleaned


def _stdlib_docstrings() -> list[str]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(lib.rglob("*.py")):
        if {"site-packages", "test", "tests", "idlelib"} & set(path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts += [" ".join(p.split()) for p in doc.split("\n\n") if len(p.strip()) >= 40]
    return texts


def base_corpus(folder: str | os.PathLike | None = None) -> tuple[list[str], str]:
    """Paragraphs of English that are not reviews, and a name for them (part of the world's key).

    `folder` (else `$RLHF_BASE_CORPUS_DIR`) holds reST files (`*.rst`, `*.rst.txt`), e.g. the `_sources` of Python's
    HTML documentation; without one, the docstrings of this Python's standard library."""
    folder = folder or os.environ.get(CORPUS_ENV)
    if not folder:
        texts = _stdlib_docstrings()
        return texts, f"stdlib-docstrings-{sys.version_info.major}.{sys.version_info.minor}:{sum(map(len, texts))}"
    files = sorted(p for p in Path(folder).rglob("*") if p.name.endswith((".rst", ".rst.txt")))
    if not files:
        raise FileNotFoundError(f"No .rst or .rst.txt files under {folder} ({CORPUS_ENV} or --base-corpus): point it "
                                f"at the reST sources of a documentation, see docs/offline-world.md.")
    texts = [p for f in files for p in rst_to_paragraphs(f.read_text(encoding="utf-8", errors="replace"))]
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    return texts, f"rst:{len(files)} files:{sum(map(len, texts))} chars:{digest}"


# --- measuring an LM as a writer --------------------------------------------------------------------------------

@dataclass
class WriterProbe:
    """What the curve measures an LM on: held-out chunks of test reviews, prompts cut from other test reviews, the
    true continuations of those prompts, and the words of IMDB's train reviews."""

    chunks: torch.Tensor
    prompt_ids: list[list[int]]
    prompts: list[str]
    real_continuations: list[str]
    train_words: frozenset

    @classmethod
    def build(cls, tokenizer, config: WorldConfig, source: str) -> WriterProbe:
        train_texts, _ = _texts("train", source)
        test_texts, _ = _texts("test", source)
        order = np.random.default_rng(config.seed + 5).permutation(len(test_texts))
        prompt_texts = [test_texts[i] for i in order[: config.curve_prompts]]
        prompts = make_prompts(prompt_texts, tokenizer, 2, 8, seed=config.seed + 5)
        real = []
        for text, prompt in zip(prompt_texts, prompts):
            ids = tokenizer(text[:400], add_special_tokens=False)["input_ids"]
            real.append(tokenizer.decode(ids[len(prompt["input_ids"]):len(prompt["input_ids"]) + 16]))
        held = [test_texts[i] for i in order[config.curve_prompts: config.curve_prompts + 400]]
        chunks = token_chunks(tokenizer, held, config.seq_len)[:64]
        words = frozenset(w for t in train_texts for w in word_list(t))
        return cls(chunks, [p["input_ids"] for p in prompts], [p["query"] for p in prompts], real, words)

    def _words(self, continuations: list[str]) -> list[list[str]]:
        return [continuation_words(p, c) for p, c in zip(self.prompts, continuations)]

    def real_text(self) -> dict:
        words = self._words(self.real_continuations)
        return {"unseen_word_rate": unseen_word_rate(words, self.train_words),
                "distinct_word_share": distinct_word_share(words)}

    @torch.no_grad()
    def measure(self, model, tokenizer, seed: int) -> dict:
        was_training = model.training
        model.eval()
        loss = model(input_ids=self.chunks, labels=self.chunks).loss.item()
        samples = sample_with(model, tokenizer, self.prompt_ids, Sampling(16, 16, 1.0, 128), seed=seed)
        model.train(was_training)
        words = self._words(samples.responses)
        return {"heldout_loss": loss, "unseen_word_rate": unseen_word_rate(words, self.train_words),
                "distinct_word_share": distinct_word_share(words), "sample": samples.texts[0]}


# --- training ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LMRecipe:
    """One LM training: its data stream, optimiser schedule and seed (base, policy and reader share the loop)."""

    steps: int
    batch: int
    lr: float
    warmup: int
    seed: int
    curve_every: int


def _train_lm(model, chunks: torch.Tensor, recipe: LMRecipe, log, probe: WriterProbe | None = None,
              tokenizer=None, checkpoint: Path | None = None, key: str = "") -> list[dict]:
    """Next-token training on random rows of `chunks`; every `curve_every` steps (and at the end) the probe measures
    the model. Returns the curve (one dict per measurement, with the tokens seen so far).

    With `checkpoint`, the whole training state (weights, optimizer, schedule, batch-order generator, torch's random
    state for dropout, the curve) is saved there at every measurement, and a run that finds a checkpoint of the same
    `key` goes on from it: a build killed after hours loses at most `curve_every` steps, and ends with the weights an
    uninterrupted build ends with."""
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, recipe.steps, recipe.warmup))
    gen = torch.Generator().manual_seed(recipe.seed)
    curve, first, elapsed = [], 0, 0.0
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        if state["key"] == key:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["schedule"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["rng"])
            curve, first, elapsed = state["curve"], state["step"], state["seconds"]
            log(f"    resuming from step {first} ({checkpoint})")
    model.train()
    start = time.perf_counter() - elapsed
    for step in range(first, recipe.steps + 1):
        if probe is not None and (step % recipe.curve_every == 0 or step == recipe.steps):
            if not (curve and curve[-1]["step"] == step):  # a resumed run measured this step already
                point = {"step": step, "tokens": step * recipe.batch * chunks.shape[1],
                         "seconds": round(time.perf_counter() - start, 1),
                         **probe.measure(model, tokenizer, seed=recipe.seed)}
                curve.append(point)
                log(f"    step {step}: held-out loss {point['heldout_loss']:.3f}, unseen words "
                    f"{point['unseen_word_rate']:.1%}: {point['sample']!r}")
                if checkpoint is not None and step < recipe.steps:
                    _save_checkpoint(checkpoint, {
                        "key": key, "step": step, "seconds": time.perf_counter() - start, "curve": curve,
                        "model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                        "generator": gen.get_state(), "rng": torch.get_rng_state()})
        if step == recipe.steps:
            break
        batch = chunks[torch.randint(0, len(chunks), (recipe.batch,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0:
            log(f"    step {step}/{recipe.steps}: train loss {loss.item():.3f}")
    model.eval()
    return curve


def _new_lm(tokenizer, layers: int, dim: int, heads: int, positions: int, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=positions, n_embd=dim, n_layer=layers,
                                       n_head=heads, bos_token_id=tokenizer.eos_token_id,
                                       eos_token_id=tokenizer.eos_token_id))
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    return model


def _save_lm(model, tokenizer, out: Path, dtype: torch.dtype = torch.float32) -> None:
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _shuffled_reviews(source: str, seed: int, limit: int) -> list[str]:
    texts, _ = _texts("train", source)
    return [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))[:limit]]


def _build_tokenizer(config: WorldConfig, source: str, corpus: list[str], root: Path, out: Path, log,
                     key: str = "") -> dict:
    reviews = _shuffled_reviews(source, config.seed, config.tokenizer_reviews)
    sample, chars = [], 0
    for i in np.random.default_rng(config.seed + 1).permutation(len(corpus)):
        if chars >= config.tokenizer_corpus_chars:
            break
        sample.append(corpus[i])
        chars += len(corpus[i])
    tokenizer = _train_tokenizer(reviews + sample, config.vocab_size, config.positions, out)
    return {"vocab": len(tokenizer), "review_texts": len(reviews), "corpus_chars": chars}


def _build_lm_part(part: str, config: WorldConfig, source: str, corpus: list[str], root: Path, out: Path,
                   log, key: str = "") -> dict:
    """The base, the policy or the reader: one LM training each, measured along the way."""
    from transformers import AutoModelForCausalLM, GPT2Tokenizer

    tokenizer = GPT2Tokenizer.from_pretrained(root / "tokenizer")
    probe = WriterProbe.build(tokenizer, config, source)
    if part == "base":
        texts = [corpus[i] for i in np.random.default_rng(config.seed + 2).permutation(len(corpus))]
        model = _new_lm(tokenizer, config.layers, config.dim, config.heads, config.positions, config.seed)
        recipe = LMRecipe(config.base_steps, config.batch, config.base_lr, config.warmup, config.seed + 2,
                          config.curve_every)
        seq_len, dtype = config.seq_len, torch.float32
    elif part == "policy":
        texts = _shuffled_reviews(source, config.seed + 3, config.max_reviews)
        model = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32)
        recipe = LMRecipe(config.policy_steps, config.batch, config.policy_lr, config.warmup, config.seed + 3,
                          config.curve_every)
        seq_len, dtype = config.seq_len, torch.float32
    else:  # the reader: scores fluency, so 16-bit storage is enough (its scores need to be stable, not trainable)
        seed = config.seed + config.reader_seed_offset
        texts = _shuffled_reviews(source, seed, config.max_reviews)
        model = _new_lm(tokenizer, config.reader_layers, config.reader_dim, config.reader_heads,
                        config.reader_positions, seed)
        recipe = LMRecipe(config.reader_steps, config.reader_batch, config.reader_lr, config.warmup, seed,
                          config.curve_every)
        seq_len, dtype = config.reader_seq_len, torch.bfloat16
    chunks = token_chunks(tokenizer, texts, seq_len)
    log(f"  {part}: {sum(p.numel() for p in model.parameters()):,} parameters, {chunks.numel():,} tokens of text")
    checkpoint = root / f".{part}.checkpoint.pt"
    curve = _train_lm(model, chunks, recipe, log, probe, tokenizer, checkpoint=checkpoint, key=key)
    _save_lm(model, tokenizer, out, dtype)
    return {"params": sum(p.numel() for p in model.parameters()), "text_tokens": chunks.numel(),
            "tokens_seen": recipe.steps * recipe.batch * seq_len, "curve": curve, "real_text": probe.real_text(),
            "dtype": str(dtype).removeprefix("torch.")}


def _build_judge(part: str, config: WorldConfig, source: str, corpus: list[str], root: Path, out: Path, log,
                 key: str = "") -> dict:
    """The reward classifier (`clf_*`) or the gold judge (`gold_*`, another architecture, reading whole reviews):
    a classifier trained from scratch on IMDB's labels, checkpointed as it goes."""
    prefix = "clf" if part == "classifier" else "gold"
    info = _finetune_classifier(_classifier_tokenizer(root / "tokenizer", config), _texts("train", source),
                                _texts("test", source), config, out, log, part=prefix,
                                checkpoint=Checkpoint(root / f".{part}.checkpoint.pt", key))
    return {"params": info[f"{part}_params"], "test_accuracy": info[f"{part}_test_accuracy"],
            "eval_reviews": info[f"{part}_eval_reviews"]}


_BUILDERS = {
    "tokenizer": _build_tokenizer,
    "base": lambda *args: _build_lm_part("base", *args),
    "policy": lambda *args: _build_lm_part("policy", *args),
    "classifier": lambda *args: _build_judge("classifier", *args),
    "reader": lambda *args: _build_lm_part("reader", *args),
    "gold": lambda *args: _build_judge("gold", *args),
}
"""Each part's builder: (config, source, corpus, root, scratch folder, log, key) -> the part's record."""


# --- parts, keys, resuming --------------------------------------------------------------------------------------

SHARED_FIELDS = {
    "tokenizer": ("seed", "vocab_size", "tokenizer_reviews", "tokenizer_corpus_chars", "positions"),
    "base": ("layers", "dim", "heads", "positions", "seq_len", "batch", "base_steps", "base_lr", "warmup"),
    "policy": ("policy_steps", "policy_lr", "warmup", "max_reviews", "seq_len", "batch"),
    "classifier": ("eval_reviews",),
    "reader": ("warmup", "max_reviews"),
    "gold": ("eval_reviews",),
}
"""The recipe fields each part reads besides those named after it (`clf_*` for the classifier, `reader_*`, ...).
What only measures a part (`curve_every`, `curve_prompts`) is not among them: it changes no weight."""
PREFIX = {"classifier": "clf_", "reader": "reader_", "gold": "gold_"}


def part_recipe(config: WorldConfig, part: str) -> dict:
    """The fields of `config` that decide this part (not those of its needs: their keys enter its key)."""
    prefix = PREFIX.get(part)
    names = set(SHARED_FIELDS[part]) | {f.name for f in dataclasses.fields(config)
                                        if prefix and f.name.startswith(prefix)}
    return {name: getattr(config, name) for name in sorted(names | {"seed"})}


def data_fingerprint(source: str) -> str:
    """The review data as a key sees it: its parquet files' names and sizes (tells real IMDB from the fixture)."""
    return ";".join(f"{f.name}:{f.stat().st_size}" for f in sorted(Path(source).glob("*.parquet")))


def part_key(config: WorldConfig, part: str, data: str, corpus_name: str) -> str:
    """A hash of what decides this part: its recipe fields, the review data, the base corpus and its needs' keys.

    A change to the reader's recipe leaves the policy's key alone, so a long build is redone only where it changed."""
    payload = {"v": WORLD_VERSION, "part": part, "recipe": part_recipe(config, part), "data": data,
               "needs": {need: part_key(config, need, data, corpus_name) for need in NEEDS[part]}}
    if part in ("tokenizer", "base"):
        payload["corpus"] = corpus_name
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def part_info(root: Path, part: str) -> dict | None:
    path = root / part / "part.json"
    return json.loads(path.read_text()) if path.is_file() else None


def build_part(part: str, root: Path, config: WorldConfig = WorldConfig(), source: str | None = None,
               corpus_dir: str | None = None, log=print) -> dict:
    """Build one part into `root/part` (skipped when already built with this recipe); return its record."""
    source = source or imdb_source()

    def need_first(need):
        return RuntimeError(f"The world's {part} starts from its {need}, which is not built with this recipe in "
                            f"{root}: run `python -m rlhf_helpers.world build --out {root} --part {need}` first.")

    for need in NEEDS[part]:  # before reading any corpus: the cheap refusal first
        if part_info(root, need) is None:
            raise need_first(need)
    corpus, corpus_name = base_corpus(corpus_dir)
    key = part_key(config, part, data_fingerprint(source), corpus_name)
    if (done := part_info(root, part)) and done["key"] == key:
        log(f"  {part}: already built ({done['seconds']:.0f} s on {done['cpu']})")
        return done
    for need in NEEDS[part]:
        if part_info(root, need)["key"] != part_key(config, need, data_fingerprint(source), corpus_name):
            raise need_first(need)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{part}.tmp-", dir=root))
    start = time.perf_counter()
    log(f"Building the world's {part} in {root} ({torch.get_num_threads()} threads) ...")
    try:
        with quiet_transformers():
            info = _BUILDERS[part](config, source, corpus, root, tmp, log, key)
        info = {"part": part, "key": key, "corpus": corpus_name, "data": data_fingerprint(source),
                "seconds": round(time.perf_counter() - start, 1),
                "cpu": machine(),
                "built": time.strftime("%Y-%m-%d"), **info}
        (tmp / "part.json").write_text(json.dumps(info, indent=1))
        if (root / part).exists():
            shutil.rmtree(root / part)
        os.replace(tmp, root / part)
        (root / f".{part}.checkpoint.pt").unlink(missing_ok=True)  # the part is built: nothing to resume
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"  {part} built in {info['seconds']:.0f} s")
    return info


SHIPPED_DIR = SHIPPED_WORLD
SHIP_DTYPES = {"base": torch.bfloat16, "policy": torch.float32, "classifier": torch.bfloat16,
               "reader": torch.bfloat16, "gold": torch.bfloat16}
"""Storage of each model in the repository (all load as float32). The policy is trained and stays exact; the base is
only a starting point, and the reward, the reader and the gold judge only score, so 16 bits keep their scores stable
at half the size (round 2's classifier read the same 86.3 % of 2,000 test reviews from bfloat16 weights as from
float32; in float32 the world would pass 30 MB)."""


def _summary(record: dict) -> dict:
    """A part's record for world.json: its last measurement in place of the whole curve (part.json keeps that)."""
    summary = {k: v for k, v in record.items() if k != "curve"}
    if record.get("curve"):
        summary["final"] = record["curve"][-1]
    return summary


def _checked_records(root: Path, config: WorldConfig, source: str) -> dict:
    records = {part: part_info(root, part) for part in PARTS}
    missing = [p for p, r in records.items() if r is None]
    if missing:
        raise RuntimeError(f"{root} lacks part(s) {missing}: run `python -m rlhf_helpers.world build --out {root}`.")
    corpus_name = records["base"]["corpus"]
    stale = [p for p, r in records.items() if r["key"] != part_key(config, p, data_fingerprint(source), corpus_name)]
    if stale:
        raise RuntimeError(f"Part(s) {stale} in {root} were built from another recipe or data; rebuild them with "
                           f"`python -m rlhf_helpers.world build --out {root} --part ...`.")
    return records


def _store(src: Path, dest: Path, dtype: torch.dtype) -> None:
    """Copy a part's folder, its weights cast to `dtype` (floating tensors only)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    weights = dest / "model.safetensors"
    if weights.is_file():
        tensors = load_file(weights)
        save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}, weights,
                  metadata={"format": "pt"})


def _judge(folder: Path):
    from transformers import pipeline

    return pipeline("sentiment-analysis", model=str(folder), device="cpu", dtype=torch.float32)


def judged_reviews(test: tuple, config: WorldConfig) -> np.ndarray:
    """Indices of the `config.eval_reviews` test reviews the judges are measured on, in the order they were judged."""
    return eval_pick(test, config.seed + 3, config.eval_reviews)


def stored_predictions(folder: Path, test: tuple, config: WorldConfig, rows=None) -> str:
    """A judge folder's predicted label (0 or 1) of each of `judged_reviews` (or of `rows` of them), as one string:
    the record `world ship` keeps, so a test can check any sample of the reviews against it."""
    judge = _judge(folder)
    pick = judged_reviews(test, config)
    pick = pick if rows is None else pick[rows]
    return "".join(str(int(p)) for p in judge_predictions(judge.model, judge.tokenizer, [test[0][j] for j in pick]))


def predictions_accuracy(predictions: str, test: tuple, config: WorldConfig) -> float:
    """The accuracy of `stored_predictions` against the reviews' labels (what `classifier_accuracy` measures)."""
    labels = [test[1][j] for j in judged_reviews(test, config)]
    return sum(int(p) == label for p, label in zip(predictions, labels, strict=True)) / len(labels)


def _reader(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    return ReaderFluency(model, AutoTokenizer.from_pretrained(folder))


def calibrate_gold(root: Path, source: str) -> dict:
    """The gold rater's fluency constants, read off calibration texts from IMDB's train reviews (`gold.calibrate`)."""
    from transformers import AutoTokenizer

    texts, labels = _texts("train", source)
    calibration_texts = calibration_set(texts, labels, AutoTokenizer.from_pretrained(root / "tokenizer"))
    judge = SentimentReward(_judge(root / "gold"))
    reader = _reader(root / "reader")
    calibration, scored = calibrate(judge, reader, calibration_texts)
    table = calibration_table(scored, calibration, GoldRater(judge))
    return as_record(calibration, table)


def step0_evaluation(root: Path) -> dict:
    """The smoke profile's held-out evaluation (its prompts, sampling and seed) of the stored policy, scored by the
    stored reward, before any training: the same weights and seed should give the same samples on every machine,
    and tests/test_shipped_world.py checks that they do on the one it runs on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    profile = get_profile("smoke")
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(root / "policy"))
    policy = AutoModelForCausalLM.from_pretrained(root / "policy", dtype=torch.float32, use_safetensors=True).eval()
    reward = SentimentReward(_judge(root / "classifier"))
    ev = evaluate(policy, policy, tokenizer, reward, heldout_prompts(profile, tokenizer), profile.eval_sampling)
    digest = hashlib.sha256("\n".join(ev.samples.response).encode()).hexdigest()
    return {"metrics": ev.metrics, "responses_sha256": digest, "samples": ev.samples.head(6).to_dict("records")}


def ship(root: Path, dest: Path = SHIPPED_DIR, config: WorldConfig = WorldConfig(), source: str | None = None,
         log=print) -> dict:
    """Copy a fully built world from `root` into `dest` (the repository's `smoke_world/`) at its storage types, measure
    the judges again as stored, calibrate the gold rater, and write `world.json` and `checksums.json`."""
    source = source or imdb_source()
    records = _checked_records(root, config, source)
    tmp = Path(tempfile.mkdtemp(prefix=".smoke_world.tmp-", dir=dest.parent))
    try:
        for part in PARTS:
            _store(root / part, tmp / part, SHIP_DTYPES.get(part, torch.float32))
        with quiet_transformers():
            test = _texts("test", source)
            predictions = {part: stored_predictions(tmp / part, test, config) for part in ("classifier", "gold")}
            stored = {part: predictions_accuracy(labels, test, config) for part, labels in predictions.items()}
            rater = calibrate_gold(tmp, source)
            step0 = step0_evaluation(tmp)
        log(f"  accuracy as stored: {stored}; gold rater: free {rater['free']:.2f} nats, weight {rater['weight']:.2f}")
        (tmp / GOLD_RATER).write_text(json.dumps(rater, indent=1))
        world = {"version": WORLD_VERSION, "config": dataclasses.asdict(config), "corpus": records["base"]["corpus"],
                 "data": data_fingerprint(source),
                 "keys": {p: r["key"] for p, r in records.items()},
                 "stored_as": {p: str(d).removeprefix("torch.") for p, d in SHIP_DTYPES.items()},
                 "accuracy_as_stored": stored, "predictions_as_stored": predictions, "step0_evaluation": step0,
                 "parts": {p: _summary(r) for p, r in records.items()}}
        (tmp / "world.json").write_text(json.dumps(world, indent=1))
        (tmp / CHECKSUMS).write_text(json.dumps(_checksums(tmp), indent=1))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return world


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rlhf_helpers.world",
                                     description="Build the offline world part by part (hours at full size).")
    parser.add_argument("command", choices=("build", "ship"),
                        help="build: train parts into --out; ship: copy a built --out into the repository")
    parser.add_argument("--out", required=True, help="the folder the parts are built in")
    parser.add_argument("--dest", default=str(SHIPPED_DIR), help="ship: where the world goes (default: the package's)")
    parser.add_argument("--part", action="append", choices=PARTS, help="a part to build (repeat; default all)")
    parser.add_argument("--fast", action="store_true", help="the seconds-long FAST recipe (tests)")
    parser.add_argument("--base-corpus", help=f"folder of reST files (default ${CORPUS_ENV}, else stdlib docstrings)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = FAST if args.fast else WorldConfig()
    root = Path(args.out)
    if args.command == "ship":
        world = ship(root, Path(args.dest), config)
        print(json.dumps({"accuracy_as_stored": world["accuracy_as_stored"]}))
        return
    for part in args.part or PARTS:
        build_part(part, root, config, corpus_dir=args.base_corpus)


if __name__ == "__main__":
    main()
