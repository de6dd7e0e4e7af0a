"""The next offline world's builder (`rlhf_helpers.world`), its measures, and the gold rater's fluency penalty.

The builder is run end to end at its FAST size on the shipped review fixture; the measures and the rater are checked
against hand computations and a naive loop."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, GPT2Config,
                          GPT2LMHeadModel, pipeline)

from rlhf_helpers.evaluation import continuation_words, distinct_word_share, unseen_word_rate, word_list
from rlhf_helpers.fixture import FIXTURE_DIR
from rlhf_helpers.gold import KINDS, calibrate, calibration_table, calibration_texts
from rlhf_helpers.offline import _verified_world, smoke_world, verify_world
from rlhf_helpers.reward import GoldRater, ReaderFluency
import rlhf_helpers.world as world_module
from rlhf_helpers.world import (FAST, GOLD_RATER, PARTS, SHIP_DTYPES, WorldConfig, build_part, data_fingerprint,
                                part_key, rst_to_paragraphs, ship)

SOURCE = str(FIXTURE_DIR)
DATA = data_fingerprint(SOURCE)

RST = """\
Reading files
=============

.. function:: open(file, mode='r')

   Open *file* and return a corresponding :term:`file object`.  If the file cannot be opened, an
   :exc:`OSError` is raised. See :ref:`the tutorial <tut-files>` for more.

For example::

   >>> f = open('workfile', 'w')
   >>> f.write('x')

The ``mode`` argument is optional; ``'r'`` will be assumed if it is omitted, as `PEP 8 <https://x>`_ says.
"""


def test_rst_prose_keeps_sentences_and_drops_code_and_markup():
    paragraphs = rst_to_paragraphs(RST)
    assert paragraphs == [
        "Open file and return a corresponding file object. If the file cannot be opened, an OSError is raised. "
        "See the tutorial for more.",
        "The mode argument is optional; 'r' will be assumed if it is omitted, as PEP 8 says."]


def test_word_measures_by_hand():
    assert word_list("Don't stop: it's GREAT!") == ["don", "t", "stop", "it", "s", "great"]
    # the prompt's half-word ("mov" + "ie") and the continuation's last, maybe cut, word are not the writer's
    assert continuation_words("I watched this mov", "ie and it was grea") == ["and", "it", "was"]
    assert continuation_words("A film", " that") == []
    vocabulary = {"a", "fine", "film"}
    assert unseen_word_rate([["a", "fine", "film"], ["a", "fine", "flim"]], vocabulary) == pytest.approx(1 / 6)
    assert unseen_word_rate([[]], vocabulary) == 0.0
    assert distinct_word_share([["great", "great"], ["great", "film"]]) == pytest.approx(2 / 4)


def test_a_part_key_follows_its_own_recipe_and_its_needs_only():
    base = {part: part_key(FAST, part, DATA, "corpus") for part in PARTS}
    reader_changed = dataclasses.replace(FAST, reader_steps=FAST.reader_steps + 1)
    assert part_key(reader_changed, "policy", DATA, "corpus") == base["policy"]
    assert part_key(reader_changed, "reader", DATA, "corpus") != base["reader"]
    assert part_key(reader_changed, "gold", DATA, "corpus") == base["gold"]  # the gold judge is its own model
    gold_changed = dataclasses.replace(FAST, gold_steps=FAST.gold_steps + 1)
    assert [p for p in PARTS if part_key(gold_changed, p, DATA, "corpus") != base[p]] == ["gold"]
    base_changed = dataclasses.replace(FAST, base_steps=FAST.base_steps + 1)
    assert part_key(base_changed, "policy", DATA, "corpus") != base["policy"]
    assert part_key(base_changed, "classifier", DATA, "corpus") == base["classifier"]
    assert part_key(FAST, "base", DATA, "another corpus") != base["base"]
    assert part_key(FAST, "reader", DATA, "another corpus") != base["reader"]  # through the tokenizer


def test_a_part_refuses_to_start_without_what_it_starts_from(tmp_path):
    with pytest.raises(RuntimeError, match=r"starts from its base.*--part base"):
        build_part("policy", tmp_path, FAST, source=SOURCE, log=lambda *_: None)


def _tiny_lm(vocab: int = 50, seed: int = 0):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=1, n_head=2)).eval()


class _CharTokenizer:
    """One token per character (ids 1-40), EOS 0: enough to drive ReaderFluency by hand."""

    eos_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[1 + ord(c) % 40 for c in t] for t in texts]}


def test_reader_fluency_matches_a_naive_loop():
    model, tokenizer = _tiny_lm(), _CharTokenizer()
    texts = ["a fine film", "ok", "zzzz zz zzzz zzz"]
    got = ReaderFluency(model, tokenizer, batch_size=2)(texts)
    for text, value in zip(texts, got):
        ids = [0] + tokenizer([text])["input_ids"][0]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        nll = -sum(logp[t, ids[t + 1]].item() for t in range(len(ids) - 1)) / (len(ids) - 1)
        assert value.item() == pytest.approx(nll, abs=1e-5)


class _Judge:
    """A stand-in sentiment judge: +1 for texts with 'good', -1 otherwise."""

    pipeline = None
    device = torch.device("cpu")

    def __call__(self, texts):
        return torch.tensor([1.0 if "good" in t else -1.0 for t in texts])


class _Reader:
    """A stand-in reader: nll = number of 'x' characters."""

    def __call__(self, texts):
        return torch.tensor([float(t.count("x")) for t in texts])


def test_gold_rater_charges_only_what_reads_worse_than_free():
    rater = GoldRater(_Judge(), reader=_Reader(), fluency_free=2.0, fluency_weight=0.5)
    texts = ["a good film", "a good xxxxxx film", "a bad xx film"]
    assert rater.fluency_penalty(texts).tolist() == pytest.approx([0.0, 0.5 * (6 - 2), 0.0])
    assert rater(texts).tolist() == pytest.approx([1.0, 1.0 - 2.0, -1.0])
    assert GoldRater(_Judge())(texts).tolist() == pytest.approx([1.0, 1.0, -1.0])  # no reader: no fluency term


def test_calibration_rule_by_hand():
    texts = pd.DataFrame({
        "kind": ["real"] * 4 + ["shuffled"] * 2 + ["repeated praise", "gibberish"],
        "label": [1, 1, 0, 0, None, None, None, None],
        "text": ["good x", "good", "bad", "bad xx", "xxxxx", "xxxxxxx", "good good good", "xxxxxxxxx"]})
    calibration, scored = calibrate(_Judge(), _Reader(), texts)
    free = pd.Series([1.0, 0.0, 0.0, 2.0]).quantile(0.95)  # the real texts' nll: one 'x' per nat
    assert calibration.free == pytest.approx(free)
    assert calibration.sentiment_gap == pytest.approx(2.0)
    assert calibration.shuffled_nll == pytest.approx(6.0)
    assert calibration.weight == pytest.approx(2.0 / (6.0 - free))
    table = calibration_table(scored, calibration, GoldRater(_Judge()))
    assert list(table.index) == list(KINDS)
    real_nll = pd.Series([1.0, 0.0, 0.0, 2.0])
    assert table.loc["real", "fluency_penalty"] == pytest.approx(
        calibration.weight * (real_nll - free).clip(lower=0).mean())  # only the texts above the 95th percentile pay
    assert table.loc["gibberish", "gold"] == pytest.approx(-1.0 - calibration.weight * (9 - free))
    with pytest.raises(ValueError, match="cannot tell language apart"):
        calibrate(_Judge(), lambda t: torch.zeros(len(t)), texts)


class _WordTokenizer:
    """Whitespace words as tokens (enough for `make_prompts` and `calibration_texts`)."""

    def __init__(self, texts):
        self.vocab = sorted({w for t in texts for w in t.split()})

    def __len__(self):
        return len(self.vocab) + 1

    def __call__(self, texts, add_special_tokens=False, truncation=False, max_length=None):
        if isinstance(texts, str):
            return {"input_ids": self([texts])["input_ids"][0]}
        ids = [[self.vocab.index(w) for w in t.split() if w in self.vocab] for t in texts]
        return {"input_ids": [row[:max_length] if truncation else row for row in ids]}

    def decode(self, ids):
        return "".join(" " + self.vocab[i] for i in ids if i < len(self.vocab))


def test_calibration_texts_are_four_kinds_per_review():
    reviews = ["one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
               "seventeen eighteen nineteen twenty twentyone twentytwo twentythree twentyfour"] * 3
    texts = calibration_texts(reviews, [1, 0, 1], _WordTokenizer(reviews), n=3)
    assert list(texts.kind) == list(KINDS) * 3
    real, shuffled = texts.text[0], texts.text[1]
    assert sorted(real.split()) == sorted(shuffled.split()) and real != shuffled
    assert texts.label[0] == 1 and texts.label[1:4].isna().all()  # only real texts carry the review's label


@pytest.fixture(scope="module")
def fast_world_parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    for part in PARTS:
        build_part(part, root, FAST, source=SOURCE, log=lambda *_: None)
    return root


@pytest.mark.slow
def test_fast_world_builds_every_part_loads_and_ships(fast_world_parts, tmp_path, monkeypatch):
    root = tmp_path / "world"
    shutil.copytree(fast_world_parts, root)  # damaged below, not in the shared build
    records = {part: json.loads((root / part / "part.json").read_text()) for part in PARTS}
    assert records["policy"]["curve"][0]["step"] == 0 and records["policy"]["curve"][-1]["step"] == FAST.policy_steps
    assert 0 <= records["policy"]["real_text"]["unseen_word_rate"] < 1
    assert records["reader"]["dtype"] == "bfloat16" and records["policy"]["dtype"] == "float32"
    tokenizer = AutoTokenizer.from_pretrained(root / "policy")
    assert tokenizer.pad_token is None and len(tokenizer) == FAST.vocab_size
    policy = AutoModelForCausalLM.from_pretrained(root / "policy", use_safetensors=True)
    base = AutoModelForCausalLM.from_pretrained(root / "base", use_safetensors=True)
    assert any(not torch.equal(a, b) for a, b in zip(policy.parameters(), base.parameters()))
    for part in ("classifier", "gold"):
        judge = pipeline("sentiment-analysis", model=str(root / part), device="cpu")
        assert judge(["A fine film."])[0]["label"] in ("POSITIVE", "NEGATIVE")
        assert 0 <= records[part]["test_accuracy"] <= 1
        assert AutoTokenizer.from_pretrained(root / part).truncation_side == "left"  # a review's end, as built
    gold = AutoModelForSequenceClassification.from_pretrained(root / "gold", use_safetensors=True)
    assert gold.config.model_type == FAST.gold_arch != FAST.clf_arch  # another architecture than the reward's
    assert gold.config.max_position_embeddings == FAST.gold_max_len > FAST.clf_max_len  # it reads whole reviews

    # Shipping: stored types, judges measured again as stored, the rater's record, checksums. The calibration itself
    # needs a reader that tells shuffled words from real ones (FAST's cannot): it is checked by hand above and on the
    # shipped world in test_shipped_world.
    rater = {"free": 5.0, "weight": 1.0}
    monkeypatch.setattr(world_module, "calibrate_gold", lambda *args: rater)
    dest = tmp_path / "shipped"
    world = ship(root, dest, FAST, source=SOURCE, log=lambda *_: None)
    assert set(world["keys"]) == set(PARTS) and verify_world(dest) is None
    assert json.loads((dest / GOLD_RATER).read_text()) == rater
    for part, dtype in SHIP_DTYPES.items():
        stored = load_file(dest / part / "model.safetensors")
        assert {t.dtype for t in stored.values() if t.is_floating_point()} == {dtype}, part
    assert set(world["accuracy_as_stored"]) == {"classifier", "gold"}
    assert world["step0_evaluation"]["metrics"]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy against itself
    assert len(world["step0_evaluation"]["samples"]) == 6
    loaded = smoke_world(dest)
    assert loaded.rater == rater and loaded.info["keys"] == world["keys"]
    assert AutoModelForCausalLM.from_pretrained(loaded.policy, use_safetensors=True).config.n_layer == FAST.layers

    weights = dest / "policy" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert "does not match" in verify_world(dest)
    _verified_world.cache_clear()  # a new process would verify again: the damage is refused, naming the file
    with pytest.raises(RuntimeError, match=r"policy/model.safetensors does not match.*git checkout"):
        smoke_world(dest)
    with pytest.raises(FileNotFoundError, match="No smoke world"):
        smoke_world(tmp_path / "nowhere")
    with pytest.raises(RuntimeError, match="lacks part"):
        ship(tmp_path / "empty", tmp_path / "nowhere", FAST, source=SOURCE, log=lambda *_: None)


@pytest.mark.slow
def test_a_built_part_is_skipped_and_a_changed_recipe_is_refused(fast_world_parts):
    start = json.loads((fast_world_parts / "policy" / "part.json").read_text())
    again = build_part("policy", fast_world_parts, FAST, source=SOURCE, log=lambda *_: None)
    assert again == start
    changed = dataclasses.replace(FAST, base_steps=FAST.base_steps + 1)
    with pytest.raises(RuntimeError, match="starts from its base"):
        build_part("policy", fast_world_parts, changed, source=SOURCE, log=lambda *_: None)


def test_full_recipe_keeps_the_head_and_a_larger_reader():
    """The policy's LM head (vocabulary x width, most of an RL step) stays today's 4,096 x 128; the reader that
    judges the policy's language is the larger model."""
    config = WorldConfig()
    assert config.vocab_size * config.dim <= 4096 * 128
    assert config.reader_dim * config.reader_layers > config.dim * config.layers


def test_bucketed_batches_mix_the_labels_of_label_sorted_data():
    """IMDB's train split is sorted by label: runs of equal-length reviews in the data's order would be one label."""
    from rlhf_helpers.offline import length_order

    labels = np.array([0] * 500 + [1] * 500)
    lengths = np.array([7] * 1000)
    order = length_order(lengths, seed=0)
    shares = [labels[order[start:start + 32]].mean() for start in range(0, 960, 32)]
    assert 0.2 < min(shares) and max(shares) < 0.8
    lengths = np.random.default_rng(1).integers(5, 50, size=1000)
    assert np.all(np.diff(lengths[length_order(lengths, seed=0)]) >= 0)


def test_a_killed_classifier_training_resumes_to_the_same_weights(tmp_path):
    """The judges' training checkpoints too: killed right after a checkpoint and run again, it ends with the weights
    of an uninterrupted run (the bucketed gold recipe, so both random generators are in the state)."""
    from transformers import AutoModelForSequenceClassification

    from rlhf_helpers.offline import Checkpoint, _classifier_tokenizer, _finetune_classifier
    from rlhf_helpers.world import _texts

    config = dataclasses.replace(FAST, gold_steps=6)
    tokenizer_dir = tmp_path / "tokenizer"
    build_part("tokenizer", tmp_path, config, source=SOURCE, log=lambda *_: None)
    train, test = _texts("train", SOURCE), _texts("test", SOURCE)

    def train_once(out, log, checkpoint=None):
        return _finetune_classifier(_classifier_tokenizer(tokenizer_dir, config), train, test, config, out, log,
                                    part="gold", checkpoint=checkpoint and Checkpoint(checkpoint, "k", every=2))

    train_once(tmp_path / "whole", lambda *_: None)
    saved = []

    def kill_at_second_checkpoint(message):
        if "checkpoint at step" in message:
            saved.append(message)
            if len(saved) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_once(tmp_path / "killed", kill_at_second_checkpoint, tmp_path / "gold.pt")
    resumed = []
    train_once(tmp_path / "resumed", resumed.append, tmp_path / "gold.pt")
    assert any("resuming from step 4" in m for m in resumed), resumed
    whole = AutoModelForSequenceClassification.from_pretrained(tmp_path / "whole", use_safetensors=True)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "resumed", use_safetensors=True)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), again.state_dict().values()))


class _Probe:
    """A stand-in probe that can stop the training at its `stop_at`-th measurement (a build killed mid-part)."""

    def __init__(self, stop_at=None):
        self.calls, self.stop_at = 0, stop_at

    def measure(self, model, tokenizer, seed):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return {"heldout_loss": 0.0, "unseen_word_rate": 0.0, "distinct_word_share": 0.0, "sample": ""}


def test_a_killed_lm_training_resumes_to_the_same_weights(tmp_path):
    from rlhf_helpers.world import LMRecipe, _train_lm

    chunks = torch.randint(0, 50, (40, 8), generator=torch.Generator().manual_seed(0))
    recipe = LMRecipe(steps=6, batch=4, lr=1e-2, warmup=2, seed=0, curve_every=3)
    whole = _tiny_lm(seed=1)  # GPT-2's dropout (0.1) draws from torch's global generator: the checkpoint carries it
    assert whole.config.resid_pdrop > 0
    _train_lm(whole, chunks, recipe, log=lambda *_: None, probe=_Probe())

    checkpoint = tmp_path / "lm.checkpoint.pt"
    resumed = _tiny_lm(seed=1)
    with pytest.raises(KeyboardInterrupt):  # killed at the step-6 measurement: the step-3 checkpoint is on disk
        _train_lm(resumed, chunks, recipe, log=lambda *_: None, probe=_Probe(stop_at=3), checkpoint=checkpoint,
                  key="k")
    assert torch.load(checkpoint, weights_only=True)["step"] == 3
    again = _tiny_lm(seed=1)
    curve = _train_lm(again, chunks, recipe, log=lambda *_: None, probe=_Probe(), checkpoint=checkpoint, key="k")
    assert [p["step"] for p in curve] == [0, 3, 6]
    for a, b in zip(whole.parameters(), again.parameters()):
        assert torch.equal(a, b)
    other = _tiny_lm(seed=1)  # a checkpoint of another recipe (key) is not resumed from
    _train_lm(other, chunks, recipe, log=lambda *_: None, probe=_Probe(), checkpoint=checkpoint, key="other")
    for a, b in zip(whole.parameters(), other.parameters()):
        assert torch.equal(a, b)
