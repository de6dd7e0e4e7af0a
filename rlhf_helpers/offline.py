"""The offline world: a tokenizer, a policy and a reward classifier that the project builds itself.

The `smoke` profile cannot download `lvwerra/gpt2-imdb` or `lvwerra/distilbert-imdb`, so it builds
small stand-ins from review text, saves them with `save_pretrained`, and the course then loads them
through exactly the calls it uses for the hub ids (`AutoModelForCausalLM.from_pretrained`,
`pipeline("sentiment-analysis", ...)`). What is built:

* a byte-level BPE tokenizer trained on reviews, with GPT-2's quirks kept: the only special token is
  `<|endoftext|>` and there is **no pad token**;
* a tiny GPT-2 policy, pretrained briefly (next-token prediction) on reviews;
* a tiny DistilBERT classifier with labels NEGATIVE / POSITIVE, fine-tuned on labelled reviews.

Training runs a fixed number of steps from a fixed seed, so the same data gives the same weights.
Results are cached under ``$RLHF_CACHE_DIR`` (default ``~/.cache/rlhf-course``) in a folder named by a
hash of the recipe and the data, so a second call returns in about a second.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import cache_root, clean_review, imdb_source, load_imdb
from .faults import file_lock
from .profiles import get_profile

BUILDER_VERSION = 3  # 2: checksums.json in every world; 3: the gold judge
CHECKSUMS = "checksums.json"
EOS = "<|endoftext|>"


@dataclass(frozen=True)
class OfflineWorldConfig:
    """The recipe of the offline world; every field is part of the cache key."""

    seed: int = 0
    """Seed for tokenizer sampling, weight init and batch order."""
    vocab_size: int = 4096
    """BPE vocabulary size (GPT-2 has 50,257; the policy's output layer dominates its cost)."""
    tokenizer_texts: int = 8000
    """Reviews used to train the tokenizer."""
    policy_layers: int = 2
    """Transformer blocks of the tiny GPT-2."""
    policy_dim: int = 128
    """Hidden size of the tiny GPT-2."""
    policy_heads: int = 4
    """Attention heads of the tiny GPT-2."""
    policy_positions: int = 128
    """Context length of the tiny GPT-2 (prompts + responses are at most 24 tokens)."""
    policy_steps: int = 400
    """Pretraining steps (next-token prediction on reviews)."""
    policy_batch: int = 32
    """Sequences per pretraining step."""
    policy_seq_len: int = 64
    """Tokens per pretraining sequence."""
    policy_lr: float = 2e-3
    """Peak AdamW learning rate for pretraining (linear warm-up, cosine decay)."""
    clf_layers: int = 2
    """Transformer blocks of the tiny DistilBERT."""
    clf_dim: int = 128
    """Hidden size of the tiny DistilBERT."""
    clf_heads: int = 4
    """Attention heads of the tiny DistilBERT."""
    clf_max_len: int = 256
    """Longest classifier input in tokens; longer texts are truncated."""
    clf_train_len: int = 128
    """Longest training window: a step at 256 tokens costs ~5x one at 128 on CPU, and random 128-token
    windows of the review still see all of it over training."""
    clf_steps: int = 900
    """Fine-tuning steps of the classifier."""
    clf_batch: int = 32
    """Reviews per classifier step."""
    clf_lr: float = 6e-4
    """Peak AdamW learning rate for the classifier (1e-3 gave 78.7 % with tokenizers 0.23, 2e-3 diverged)."""
    clf_short_frac: float = 0.5
    """Fraction of training batches cut to short random windows (8-48 tokens), because the reward
    scores prompt + response texts of ~10-24 tokens, not whole reviews. Batches are all short or all
    full so that short ones are not padded to full length."""
    clf_arch: str = "distilbert"
    """Architecture of the reward classifier (lvwerra/distilbert-imdb's)."""
    clf_seed_offset: int = 1
    """Added to `seed` for the classifier's init and batch order."""
    clf_truncation_side: str = "right"
    """Which end of a long review the classifier keeps (the hub classifier keeps the start)."""
    clf_logit_scale: float = 3.0
    """Multiplies the trained head's weights and bias: the argmax (so the accuracy) is unchanged, and the POSITIVE
    logit, the reward, spans about ±3 like lvwerra/distilbert-imdb's instead of ±1 (a tiny model trained briefly
    stays unconfident: "Not bad at all." and a long rant both scored −1.05)."""
    gold_arch: str = "bert"
    """The gold judge of notebook 07 (the "human" who labels preferences): another architecture than the reward
    classifier, another seed, trained on the *end* of reviews, where the verdict usually is."""
    gold_layers: int = 1
    """Transformer blocks of the gold judge."""
    gold_dim: int = 128
    """Hidden size of the gold judge."""
    gold_heads: int = 4
    """Attention heads of the gold judge."""
    gold_max_len: int = 256
    """Longest gold-judge input in tokens."""
    gold_train_len: int = 128
    """Training window of the gold judge, in tokens."""
    gold_steps: int = 1200
    """Fine-tuning steps of the gold judge."""
    gold_batch: int = 32
    """Reviews per gold-judge step."""
    gold_lr: float = 1e-3
    """Peak AdamW learning rate of the gold judge."""
    gold_short_frac: float = 0.25
    """Share of short-window batches (the judge scores 10-24-token texts in notebook 07)."""
    gold_seed_offset: int = 11
    """Added to `seed` for the gold judge's init and batch order (independent of the classifier's)."""
    gold_truncation_side: str = "left"
    """Keep the last `gold_max_len` tokens of a long review: measured 85.3 % vs 82.8 % keeping the first."""
    eval_reviews: int = 2000
    """Test reviews used to report the classifiers' accuracy."""


FAST = OfflineWorldConfig(tokenizer_texts=1000, vocab_size=1024, policy_steps=20, clf_steps=20, gold_steps=20,
                          eval_reviews=200)
"""A seconds-long recipe for tests of the builder itself (caching, determinism)."""


@dataclass(frozen=True)
class OfflineWorld:
    """Paths of the built checkpoints (each loadable with `from_pretrained`) and build facts."""

    root: Path
    tokenizer: Path
    policy: Path
    classifier: Path
    info: dict
    gold: Path | None = None
    """The gold judge of notebook 07 (a second, independent classifier); None for the stand-ins."""


def _data_fingerprint(source: str) -> str:
    """Identify the data by its files' names and sizes (cheap, and enough to tell IMDB from the fixture)."""
    files = sorted(Path(source).glob("*.parquet"))
    return ";".join(f"{f.name}:{f.stat().st_size}" for f in files)


def world_key(config: OfflineWorldConfig, source: str) -> str:
    payload = json.dumps({"v": BUILDER_VERSION, "config": dataclasses.asdict(config),
                          "data": _data_fingerprint(source)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _texts(split: str, source: str) -> list[str]:
    columns = load_imdb(split, source=source)[:]  # one batch read; `ds["text"]` would format row by row
    return [clean_review(t) for t in columns["text"]], columns["label"]


def _train_tokenizer(texts: list[str], vocab_size: int, max_length: int, out: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Tokenizer

    bpe = ByteLevelBPETokenizer()  # GPT-2's byte-level pre-tokenizer: no unknown characters, ever
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                            show_progress=False)
    model = json.loads(bpe._tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # GPT-2's quirks: <|endoftext|> is bos, eos and unk; there is no pad token.
    tokenizer = GPT2Tokenizer(vocab=model["vocab"], merges=merges, pad_token=None)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(out)
    return tokenizer


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return float(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))  # a float: checkpoints load with weights_only


def token_chunks(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """Texts tokenized into one stream (EOS between them) and cut into `seq_len`-token rows: what an LM trains on."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    stream = np.fromiter((t for row in ids for t in (*row, tokenizer.eos_token_id)), dtype=np.int64)
    n = len(stream) // seq_len
    return torch.from_numpy(stream[: n * seq_len].reshape(n, seq_len))


def _pretrain_policy(tokenizer, texts: list[str], config: OfflineWorldConfig, out: Path, log) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    # Tokenize only about as many reviews as pretraining will read (~250 tokens per cleaned review).
    needed = config.policy_steps * config.policy_batch * config.policy_seq_len // 250 + 1000
    chunks = token_chunks(tokenizer, texts[:needed], config.policy_seq_len)
    n_seq = len(chunks)

    torch.manual_seed(config.seed)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=config.policy_positions, n_embd=config.policy_dim,
        n_layer=config.policy_layers, n_head=config.policy_heads,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id))
    opt = torch.optim.AdamW(model.parameters(), lr=config.policy_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, config.policy_steps, 50))
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(config.policy_steps):
        batch = chunks[torch.randint(0, n_seq, (config.policy_batch,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == config.policy_steps - 1:
            log(f"  policy step {step + 1}/{config.policy_steps}: loss {loss.item():.3f}")
    model.eval()
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"policy_params": sum(p.numel() for p in model.parameters()), "policy_final_loss": loss.item(),
            "policy_tokens_seen": config.policy_steps * config.policy_batch * config.policy_seq_len}


def _classifier_tokenizer(tokenizer_dir: Path, config: OfflineWorldConfig):
    """The policy's tokenizer plus what a classifier needs: a first-slot token to pool, and padding."""
    from transformers import GPT2Tokenizer

    clf_tok = GPT2Tokenizer.from_pretrained(tokenizer_dir, add_bos_token=True, pad_token=EOS)
    clf_tok.model_max_length = config.clf_max_len
    return clf_tok


def _recipe(config: OfflineWorldConfig, part: str) -> dict:
    """The `clf_*` or `gold_*` fields of the config without their prefix (one training function serves both)."""
    prefix = f"{part}_"
    return {f.name[len(prefix):]: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.name.startswith(prefix)}


def _classifier_model(recipe: dict, clf_tok):
    from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                              DistilBertForSequenceClassification)

    labels = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
    if recipe["arch"] == "distilbert":
        return DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=len(clf_tok), max_position_embeddings=recipe["max_len"], dim=recipe["dim"],
            n_layers=recipe["layers"], n_heads=recipe["heads"], hidden_dim=4 * recipe["dim"],
            pad_token_id=clf_tok.pad_token_id, num_labels=2, **labels))
    if recipe["arch"] == "bert":
        return BertForSequenceClassification(BertConfig(
            vocab_size=len(clf_tok), max_position_embeddings=recipe["max_len"], hidden_size=recipe["dim"],
            num_hidden_layers=recipe["layers"], num_attention_heads=recipe["heads"],
            intermediate_size=4 * recipe["dim"], pad_token_id=clf_tok.pad_token_id, num_labels=2, **labels))
    raise ValueError(f"Unknown classifier architecture {recipe['arch']!r}; choose 'distilbert' or 'bert'.")


def length_order(lengths: list[int], seed: int) -> np.ndarray:
    """Indices of `lengths` from shortest to longest, equal lengths in a seeded random order (not the data's)."""
    tie_break = np.random.default_rng(seed).permutation(len(lengths))
    return np.lexsort((tie_break, np.asarray(lengths)))


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Checkpoint:
    """Where a long training saves its state, for which recipe (`key`), and how often (steps)."""

    path: Path
    key: str
    every: int = 200


def _finetune_classifier(clf_tok, train: tuple, test: tuple, config: OfflineWorldConfig, out: Path,
                         log, part: str = "clf", checkpoint: Checkpoint | None = None) -> dict:
    """Train a classifier from scratch on the `clf_*` (or `gold_*`) recipe, save it to `out`, measure it on `test`.

    With a `checkpoint`, the training state (weights, optimizer, schedule, both random generators) is saved every
    `checkpoint.every` steps, and a run that finds one of the same key goes on from it to the same weights."""
    recipe = _recipe(config, part)
    texts, labels = train
    clf_tok.truncation_side = recipe["truncation_side"]
    clf_tok.init_kwargs["truncation_side"] = recipe["truncation_side"]  # save_pretrained writes only init kwargs
    ids = clf_tok(texts, truncation=True, max_length=recipe["max_len"])["input_ids"]
    labels = torch.tensor(labels)
    torch.manual_seed(config.seed + recipe["seed_offset"])
    model = _classifier_model(recipe, clf_tok)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, recipe["steps"], 50))
    rng = np.random.default_rng(config.seed + recipe["seed_offset"] + 1)
    bos, pad = clf_tok.bos_token_id, clf_tok.pad_token_id
    name = "classifier" if part == "clf" else "gold judge"
    model.train()
    # Bucketed recipes draw a full-length batch as a run of reviews of similar length: little padding. Ties are
    # broken at random: IMDB's train split is sorted by label, so a stable sort made runs of one label (the judge
    # then learned nothing in 400 steps).
    by_length = (length_order([len(s) for s in ids], config.seed + recipe["seed_offset"] + 2)
                 if recipe.get("bucket") else None)
    first = 0
    if checkpoint is not None and checkpoint.path.is_file():
        state = torch.load(checkpoint.path, weights_only=True)
        if state["key"] == checkpoint.key:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["schedule"])
            rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["rng"])
            first = state["step"]
            log(f"  {name}: resuming from step {first} ({checkpoint.path})")
    for step in range(first, recipe["steps"]):
        if checkpoint is not None and step > first and step % checkpoint.every == 0:
            _save_checkpoint(checkpoint.path, {
                "key": checkpoint.key, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "schedule": sched.state_dict(), "numpy_rng": rng.bit_generator.state, "rng": torch.get_rng_state()})
            log(f"  {name}: checkpoint at step {step}")
        rows = rng.integers(0, len(ids), size=recipe["batch"])
        short = rng.random() < recipe["short_frac"]
        if by_length is not None and not short:
            start = int(rng.integers(0, len(ids) - recipe["batch"] + 1))
            rows = by_length[start:start + recipe["batch"]]
        batch = []
        for r in rows:
            seq = ids[r]
            # Short windows starting anywhere in the review: the reward sees short texts.
            width = int(rng.integers(8, 49)) if short else recipe["train_len"] - 1
            if len(seq) > width + 1:
                start = int(rng.integers(1, len(seq) - width))
                seq = [bos] + seq[start:start + width]
            batch.append(seq)
        width = max(len(s) for s in batch)
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in batch])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels[rows]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == recipe["steps"] - 1:
            log(f"  {name} step {step + 1}/{recipe['steps']}: loss {loss.item():.3f}")
    model.eval()
    with torch.no_grad():  # the final layer is `classifier` in both DistilBERT and BERT
        model.classifier.weight.mul_(recipe.get("logit_scale", 1.0))
        model.classifier.bias.mul_(recipe.get("logit_scale", 1.0))
    model.save_pretrained(out, safe_serialization=True)
    clf_tok.model_max_length = recipe["max_len"]
    clf_tok.save_pretrained(out)

    accuracy, n = classifier_accuracy(model, clf_tok, test, seed=config.seed + 3, n=config.eval_reviews)
    key = "classifier" if part == "clf" else "gold"
    return {f"{key}_params": sum(p.numel() for p in model.parameters()),
            f"{key}_test_accuracy": accuracy, f"{key}_eval_reviews": n}


def eval_pick(test: tuple, seed: int, n: int) -> np.ndarray:
    """Indices of the `n` seeded test reviews a judge is measured on (the same draw at build, ship and test time)."""
    return np.random.default_rng(seed).permutation(len(test[0]))[:n]


@torch.no_grad()
def judge_predictions(model, tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """(N,) the argmax label of each text, in order, `batch_size` texts at a time (truncated to the model's length)."""
    preds = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], truncation=True, padding=True, return_tensors="pt")
        preds.append(model(**enc).logits.argmax(-1))
    return torch.cat(preds)


def classifier_accuracy(model, tokenizer, test: tuple, seed: int, n: int) -> tuple[float, int]:
    """(accuracy, reviews): the argmax label of `n` seeded test reviews (texts, labels) against their labels."""
    texts, labels = test
    pick = eval_pick(test, seed, n)
    pred = judge_predictions(model, tokenizer, [texts[j] for j in pick])
    return (pred == torch.tensor([labels[j] for j in pick])).sum().item() / len(pick), len(pick)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` except the manifest itself, by relative path."""
    return {str(p.relative_to(folder)): _file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != CHECKSUMS}


def verify_world(root: Path) -> str | None:
    """None when every file recorded at build time is present and unchanged, else what is wrong.

    Hashing the smoke world's ~10 MB takes a few hundredths of a second; it catches a truncated or
    bit-flipped `model.safetensors` and a deleted `tokenizer.json` before they load into something wrong."""
    manifest = root / CHECKSUMS
    if not manifest.is_file():
        return f"{manifest} is missing"
    expected = json.loads(manifest.read_text())
    for name, digest in expected.items():
        path = root / name
        if not path.is_file():
            return f"{path} is missing"
        if _file_sha256(path) != digest:
            return f"{path} does not match the checksum recorded when it was built"
    return None


def _build_lock(root: Path, log):
    """Concurrent builders of one world wait for a single build (`faults.file_lock` on `<world>.lock`)."""
    return file_lock(root.parent / f"{root.name}.lock",
                     wait=lambda: log(f"Another process is building {root.name}; waiting for it ..."))


def _remove_stale_builds(parent: Path, own_name: str, log) -> None:
    """Delete `*.tmp-*` folders that killed builds left behind. Call it holding the lock of `own_name`.

    A scratch folder belongs to a live build only while that build holds its world's lock: ours are all stale
    (we hold our lock), and another world's are removed only if its lock is free."""
    for tmp in sorted(parent.glob("offline-world-*.tmp-*")):
        if not tmp.is_dir():
            continue
        name = tmp.name.split(".tmp-")[0]
        if name != own_name:
            with file_lock(parent / f"{name}.lock") as handle:
                if handle is None:
                    continue  # that world is being built right now
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"  removed {tmp.name}, left behind by a build that was killed")


def build_offline_world(config: OfflineWorldConfig = OfflineWorldConfig(), data_source: str | None = None,
                        cache_dir: str | Path | None = None, force: bool = False,
                        verbose: bool = True) -> OfflineWorld:
    """Build (or load from cache) the offline tokenizer, policy and classifier; return their paths.

    `data_source` is a folder in IMDB's parquet layout; by default `RLHF_IMDB_DIR`, else the shipped
    fixture. The first build takes about two minutes on two CPU cores, a cached one about a second.
    """
    source = data_source or imdb_source(get_profile("smoke"))
    root = Path(cache_dir or cache_root()) / f"offline-world-{world_key(config, source)}"
    log = print if verbose else (lambda *_: None)
    if not force and (world := _load_verified(root, log)):
        return world
    root.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(root, log):
        # Whoever held the lock before us may have just built it: then there is nothing left to do.
        if not force and (world := _load_verified(root, log, quiet=True)):
            return world
        _remove_stale_builds(root.parent, root.name, log)
        _build(config, source, root, log)
    world = _load_verified(root, log)
    if world is None:
        raise RuntimeError(f"The offline world just built in {root} fails its own checksums; delete {root} "
                           f"and run again.")
    return world


def _load_verified(root: Path, log, quiet: bool = False, tokenizer: str = "tokenizer") -> OfflineWorld | None:
    """The cached world at `root` if it is complete and unchanged since its build, else None (rebuild it)."""
    if not (root / "build_info.json").is_file():
        return None
    problem = verify_world(root)
    if problem:
        if not quiet:
            log(f"The cached offline world is damaged ({problem}); rebuilding it. If this repeats, delete "
                f"{root} by hand.")
        return None
    gold = root / "gold"
    return OfflineWorld(root, root / tokenizer, root / "policy", root / "classifier",
                        json.loads((root / "build_info.json").read_text()), gold=gold if gold.is_dir() else None)


def _publish(tmp: Path, root: Path, info: dict) -> None:
    """Finish a build: write its facts and checksums, then move it into place (replacing a damaged or forced copy)."""
    (tmp / "build_info.json").write_text(json.dumps(info, indent=2))
    (tmp / CHECKSUMS).write_text(json.dumps(_checksums(tmp), indent=1))
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)


PARALLEL_MIN_STEPS = 300
"""Build the policy, the classifier and the gold judge in three processes when their steps add up to at least this
many: starting a process costs seconds (importing torch, reading the reviews), which only a long build earns back."""


def _policy_order(config: OfflineWorldConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The tokenizer's sample and the policy's reading order: two draws, in this order, from the recipe's seed."""
    rng = np.random.default_rng(config.seed)
    tok_order = rng.permutation(n)[: config.tokenizer_texts]
    return tok_order, rng.permutation(n)


def _build_part(part: str, config: OfflineWorldConfig, source: str, tmp: Path, threads: int | None = None,
                verbose: bool = False) -> dict:
    """Train one part of the world ("policy", "clf" or "gold") from the tokenizer already saved in `tmp`.

    A module-level function, so a spawned process can run it; `threads` caps torch's threads there (three builders
    on two cores would otherwise oversubscribe them)."""
    from transformers import GPT2Tokenizer

    if threads:
        torch.set_num_threads(threads)
    log = print if verbose else (lambda *_: None)
    start = time.perf_counter()
    train_texts, train_labels = _texts("train", source)
    if part == "policy":
        tokenizer = GPT2Tokenizer.from_pretrained(tmp / "tokenizer")
        order = _policy_order(config, len(train_texts))[1]
        info = _pretrain_policy(tokenizer, [train_texts[i] for i in order], config, tmp / "policy", log)
    else:
        clf_tok = _classifier_tokenizer(tmp / "tokenizer", config)
        info = _finetune_classifier(clf_tok, (train_texts, train_labels), _texts("test", source), config,
                                    tmp / ("classifier" if part == "clf" else "gold"), log, part=part)
    return {"info": info, "seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}


def _build_parts_side_by_side(parts, config: OfflineWorldConfig, source: str, tmp: Path, threads: int) -> dict:
    """Run `_build_part` for each part in its own `python -m rlhf_helpers.offline --part` process; wait for all.

    Subprocesses rather than multiprocessing: a spawned worker re-imports the caller's main module (a notebook, a
    script without a main guard, stdin), and a forked child of a process that has run OpenMP threads can hang."""
    import subprocess
    import sys

    recipe = json.dumps(dataclasses.asdict(config))
    procs = {}
    try:
        for part in parts:
            cmd = [sys.executable, "-m", "rlhf_helpers.offline", "--part", part, "--recipe", recipe,
                   "--source", source, "--scratch", str(tmp), "--threads", str(threads)]
            procs[part] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        errors = {part: proc.communicate()[1] for part, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = [part for part, proc in procs.items() if proc.returncode != 0]
    if failed:
        part = failed[0]
        raise RuntimeError(f"Building the offline world's {part} failed (exit {procs[part].returncode}):\n"
                           f"{errors[part][-3000:]}")
    return {part: json.loads((tmp / f".part-{part}.json").read_text()) for part in parts}


def _build(config: OfflineWorldConfig, source: str, root: Path, log) -> None:
    log(f"Building the offline world in {root} (data: {source}) ...")
    root.parent.mkdir(parents=True, exist_ok=True)
    # Build in a scratch folder and rename at the end: a killed build never leaves a half-written cache
    # (and the next build removes the scratch folder it left).
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
    t0 = time.perf_counter()
    try:
        train_texts, _ = _texts("train", source)
        tok_order = _policy_order(config, len(train_texts))[0]
        tokenizer = _train_tokenizer([train_texts[i] for i in tok_order], config.vocab_size, config.policy_positions,
                                     tmp / "tokenizer")
        t_tok = time.perf_counter()
        log(f"  tokenizer: {len(tokenizer)} tokens in {t_tok - t0:.1f} s")
        del train_texts
        parts = ("policy", "clf", "gold")
        cores = os.cpu_count() or 1
        parallel = cores > 1 and config.policy_steps + config.clf_steps + config.gold_steps >= PARALLEL_MIN_STEPS
        if parallel:
            # Three independent trainings from one tokenizer: one process each, the cores shared out.
            built = _build_parts_side_by_side(parts, config, source, tmp, max(1, cores // len(parts)))
        else:
            built = {part: _build_part(part, config, source, tmp, verbose=log is print) for part in parts}
        info = {}
        for part in parts:
            info |= built[part]["info"]
        log(f"  policy: {info['policy_params']:,} parameters in {built['policy']['seconds']:.1f} s")
        log(f"  classifier: {info['classifier_params']:,} parameters, test accuracy "
            f"{info['classifier_test_accuracy']:.3f} on {info['classifier_eval_reviews']} reviews "
            f"in {built['clf']['seconds']:.1f} s")
        log(f"  gold judge: {info['gold_params']:,} parameters, test accuracy {info['gold_test_accuracy']:.3f} "
            f"in {built['gold']['seconds']:.1f} s")
        for marker in tmp.glob(".part-*.json"):
            marker.unlink()
        total = time.perf_counter() - t0
        info |= {"config": dataclasses.asdict(config), "data_source": source, "parallel": parallel,
                 "torch_threads": {part: built[part]["threads"] for part in parts},
                 "seconds": {"tokenizer": t_tok - t0, "policy": built["policy"]["seconds"],
                             "classifier": built["clf"]["seconds"], "gold": built["gold"]["seconds"],
                             "total": total}}
        _publish(tmp, root, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"Offline world ready in {time.perf_counter() - t0:.0f} s"
        f"{' (policy, classifier and gold judge trained side by side)' if parallel else ''}.")


SHIPPED_WORLD = Path(__file__).resolve().parent / "smoke_world"
"""Where the repository carries the smoke world built by `python -m rlhf_helpers.world` (package data)."""
WORLD_ENV = "RLHF_SMOKE_WORLD"
"""A folder in the shipped world's layout to use instead (a world you rebuilt, or a test's)."""
GOLD_RATER = "gold_rater.json"


@dataclass(frozen=True)
class SmokeWorld:
    """The shipped world: each model's folder (loadable with `from_pretrained`), its record and the gold rater's
    calibrated constants."""

    root: Path
    info: dict
    """world.json: the recipe, each part's key, record and build time and CPU."""
    rater: dict
    """gold_rater.json: the fluency penalty's `free` and `weight` and the calibration table they come from."""

    def __getattr__(self, part: str) -> Path:
        if part in ("tokenizer", "base", "policy", "classifier", "reader", "gold"):
            return self.root / part
        raise AttributeError(part)


def smoke_world(root: str | os.PathLike | None = None) -> SmokeWorld:
    """The smoke world (`root`, else $RLHF_SMOKE_WORLD, else the one in the package), its checksums verified once per
    process (about 0.1 s). Builds nothing: a missing or damaged world is an error that says how to restore it."""
    return _verified_world(str(Path(root or os.environ.get(WORLD_ENV) or SHIPPED_WORLD).resolve()))


@functools.lru_cache(maxsize=4)
def _verified_world(root: str) -> SmokeWorld:
    path = Path(root)
    restore = ("restore the shipped one with `git checkout -- rlhf_helpers/smoke_world` (or reinstall the package), "
               "or rebuild it: docs/offline-world.md")
    if not (path / "world.json").is_file():
        raise FileNotFoundError(f"No smoke world in {path} (world.json is missing"
                                f"{f'; unset {WORLD_ENV}' if os.environ.get(WORLD_ENV) else ''}): {restore}.")
    problem = verify_world(path)
    if problem:
        raise RuntimeError(f"The smoke world in {path} is damaged: {problem}. Nothing was loaded; {restore}.")
    return SmokeWorld(path, json.loads((path / "world.json").read_text()),
                      json.loads((path / GOLD_RATER).read_text()))


STAND_INS_VERSION = 1
TOKENIZER_ENV = "RLHF_GPT2_TOKENIZER_DIR"


def build_stand_ins(small: bool = False, cache_dir: str | Path | None = None, verbose: bool = True) -> OfflineWorld:
    """Hub-format stand-ins for `lvwerra/gpt2-imdb` and `lvwerra/distilbert-imdb` at their real sizes, seeded
    random init: GPT-2 124M (`GPT2Config()` defaults) with the real GPT-2 tokenizer from $RLHF_GPT2_TOKENIZER_DIR,
    and a DistilBERT-base-sized classifier (6 layers, width 768; GPT-2's vocabulary) with labels NEGATIVE/POSITIVE.

    They exist to time and size a profile's real settings (`benchmarks/rehearsal.py`), not to align anything: random
    weights write random text. `small=True` keeps the real vocabulary and widths with 2 layers each (for tests)."""
    from transformers import (AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification, GPT2Config,
                              GPT2LMHeadModel, GPT2Tokenizer)

    tok_dir = os.environ.get(TOKENIZER_ENV)
    if not tok_dir or not (Path(tok_dir) / "vocab.json").is_file():
        raise FileNotFoundError(f"The stand-ins use the real GPT-2 tokenizer: set {TOKENIZER_ENV} to a folder holding "
                                f"GPT-2's vocab.json and merges.txt (got {tok_dir!r}).")
    fingerprint = ";".join(f"{f.name}:{f.stat().st_size}" for f in sorted(Path(tok_dir).iterdir()) if f.is_file())
    key = hashlib.sha256(json.dumps([STAND_INS_VERSION, small, fingerprint]).encode()).hexdigest()[:16]
    root = Path(cache_dir or cache_root()) / f"stand-ins-{key}"
    log = print if verbose else (lambda *_: None)

    if world := _load_verified(root, log, tokenizer="policy"):
        return world
    root.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(root, log):
        if world := _load_verified(root, log, quiet=True, tokenizer="policy"):
            return world
        log(f"Writing {'small ' if small else ''}GPT-2-scale stand-ins to {root} ...")
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
        try:
            tokenizer = AutoTokenizer.from_pretrained(tok_dir)
            layers = {"n_layer": 2} if small else {}
            torch.manual_seed(0)
            policy = GPT2LMHeadModel(GPT2Config(**layers))
            policy.generation_config.pad_token_id = tokenizer.eos_token_id
            policy.save_pretrained(tmp / "policy", safe_serialization=True)
            tokenizer.save_pretrained(tmp / "policy")
            clf_tok = GPT2Tokenizer.from_pretrained(tok_dir, add_bos_token=True, pad_token=EOS)
            clf_tok.model_max_length = 512
            torch.manual_seed(1)
            classifier = DistilBertForSequenceClassification(DistilBertConfig(
                vocab_size=len(clf_tok), pad_token_id=clf_tok.pad_token_id, num_labels=2,
                **({"n_layers": 2} if small else {}),
                id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1}))
            classifier.save_pretrained(tmp / "classifier", safe_serialization=True)
            clf_tok.save_pretrained(tmp / "classifier")
            info = {"policy_params": sum(p.numel() for p in policy.parameters()),
                    "classifier_params": sum(p.numel() for p in classifier.parameters()), "small": small,
                    "tokenizer": tok_dir, "note": "random init: for timing and memory only"}
            _publish(tmp, root, info)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log(f"  policy {info['policy_params']:,} parameters, classifier {info['classifier_params']:,}")
    return _load_verified(root, log, tokenizer="policy")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rlhf_helpers.offline",
                                     description="Build the offline world (smoke profile) or the GPT-2-scale "
                                                 "stand-ins, and print where they are.")
    parser.add_argument("--stand-ins", action="store_true", help="GPT-2 124M + DistilBERT-base-sized stand-ins")
    parser.add_argument("--small", action="store_true", help="with --stand-ins: 2 layers each (tests)")
    # Internal: one part of a world build, run by _build_parts_side_by_side.
    parser.add_argument("--part", choices=("policy", "clf", "gold"), help=argparse.SUPPRESS)
    parser.add_argument("--recipe", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        tmp = Path(args.scratch)
        result = _build_part(args.part, OfflineWorldConfig(**json.loads(args.recipe)), args.source, tmp, args.threads)
        (tmp / f".part-{args.part}.json").write_text(json.dumps(result))
        return
    world = build_stand_ins(small=args.small) if args.stand_ins else build_offline_world()
    print(json.dumps({"root": str(world.root), "policy": str(world.policy), "classifier": str(world.classifier),
                      **{k: v for k, v in world.info.items() if k.endswith("_params")}}))


if __name__ == "__main__":
    main()
