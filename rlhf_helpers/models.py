"""Loading the policy, its tokenizer and the reward classifier for a profile.

The `gpu`/`cpu` profiles load hub ids; `smoke` loads the world shipped in the package (`offline.smoke_world`).
Both go through the same `from_pretrained` / `pipeline` calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from datasets.utils import logging as datasets_logging
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)
from transformers.utils import logging as hf_logging

from .device import default_device
from .faults import MissingPathError, ModelFolderError
from .hub import ensure_available
from .gold import calibrated_rater_constants
from .offline import smoke_world
from .profiles import Profile
from .reward import GoldRater, ReaderFluency, SentimentReward


def _quiet_loading() -> None:
    """transformers 5 draws a "Loading weights" bar per checkpoint (7 in some cells); the course loads a handful of
    small models, so the bars are noise, not progress."""
    hf_logging.disable_progress_bar()

@contextlib.contextmanager
def quiet_transformers():
    """Only transformers' errors inside the block, and none of its deprecation warnings: loading a classifier with a
    fresh one-number head prints a "LOAD REPORT" of the replaced 2-way head (which is what we asked for), TRL 1.16
    touches transformers' deprecated `gradient_checkpointing` field, and DPOTrainer warns when a prompt cut mid-word
    re-tokenizes into its completion (the course's prompts are token prefixes of reviews; TRL then starts the
    completion at the merged token, see `dpo.dpo_pairs`). None is something a learner can act on."""
    before, trl_logger = hf_logging.get_verbosity(), logging.getLogger("trl")
    trl_before, bars = trl_logger.level, datasets_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    trl_logger.setLevel(logging.ERROR)
    datasets_logging.disable_progress_bar()  # TRL's dataset passes over a few thousand pairs take under a second
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(before)
        trl_logger.setLevel(trl_before)
        if bars:
            datasets_logging.enable_progress_bar()


POLICY_ENV = "RLHF_POLICY_MODEL"
REWARD_ENV = "RLHF_REWARD_MODEL"
GOLD_ENV = "RLHF_GOLD_MODEL"
READER_ENV = "RLHF_READER_MODEL"
BASE_ENV = "RLHF_BASE_MODEL"
__all__ = ["BASE_ENV", "GOLD_ENV", "POLICY_ENV", "READER_ENV", "REWARD_ENV", "base_model_id", "default_device",
           "gold_model_id", "load_classifier", "load_gold", "load_policy", "load_reward", "load_tokenizer", "model_ids",
           "prepare_tokenizer", "reader_model_id"]


ROLES = {POLICY_ENV: "policy", REWARD_ENV: "reward", GOLD_ENV: "gold", READER_ENV: "reader", BASE_ENV: "base"}
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def _architecture_kind(architectures: list[str]) -> str | None:
    """"causal-lm", "classifier" or None (unknown) for a config.json's `architectures`."""
    def names(mapping):
        return {n for v in mapping.values() for n in ((v,) if isinstance(v, str) else v)}

    for arch in architectures:
        if arch in names(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES) or arch.endswith("ForSequenceClassification"):
            return "classifier"
        if arch in names(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) or arch.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal-lm"
    return None


def check_model_folder(folder: str | os.PathLike, role: str, env: str | None = None) -> None:
    """Refuse, before anything loads, a folder that is not a model for `role` ("policy": a causal LM; "reward" or
    "gold": a sequence classifier): no config.json, no safetensors weights, no tokenizer, the wrong architecture.
    Reads config.json and the weights' header only (milliseconds)."""
    folder = Path(folder)
    where = f"{env}={str(folder)!r}" if env else f"the {role} model folder {str(folder)!r}"
    unset = f", or unset {env}" if env else ""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelFolderError(f"{where} is not a model folder: it has no config.json. Point it at a folder saved with "
                               f"save_pretrained (config.json, model.safetensors, tokenizer files){unset}.")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as error:
        raise ModelFolderError(f"{config_path} is not valid JSON ({error}). Save the model again with "
                               f"save_pretrained{unset}.") from None
    weights = [folder / name for name in ("model.safetensors", "model.safetensors.index.json")
               if (folder / name).is_file()]
    if not weights:
        pickled = [name for name in _PICKLE_WEIGHTS if (folder / name).is_file()]
        if pickled:
            raise ModelFolderError(f"{where} holds only pickle weights ({pickled[0]}); the course loads safetensors "
                                   f"only (no code runs on load). Save the model again with save_pretrained, whose "
                                   f"default is safetensors{unset}.")
        raise ModelFolderError(f"{where} has config.json but no weights (model.safetensors). Save the model there with "
                               f"save_pretrained, or copy its model.safetensors beside config.json{unset}.")
    if weights[0].name == "model.safetensors":
        try:
            with safe_open(str(weights[0]), framework="pt") as handle:
                handle.keys()
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types for a damaged header
            raise ModelFolderError(f"{weights[0]} is not a readable safetensors file ({error}); it may be truncated. "
                                   f"Save or copy the model again{unset}.") from None
    kind = _architecture_kind(config.get("architectures") or [])
    arch = ", ".join(config.get("architectures") or []) or config.get("model_type", "?")
    swap = (f" Did you swap {POLICY_ENV} and {REWARD_ENV}?" if env in (POLICY_ENV, REWARD_ENV) else "")
    if role in ("policy", "reader", "base") and kind == "classifier":
        raise ModelFolderError(f"{where} is a {arch}, a sequence classifier; the {role} must be a causal language "
                               f"model (...ForCausalLM or ...LMHeadModel, e.g. GPT2LMHeadModel).{swap}")
    if role in ("reward", "gold") and kind == "causal-lm":
        raise ModelFolderError(f"{where} is a {arch}, a causal language model; the {role} model must be a sentiment "
                               f"classifier (...ForSequenceClassification with a POSITIVE label).{swap}")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelFolderError(f"{where} has no tokenizer (tokenizer.json, or vocab.json + merges.txt). Save it beside "
                               f"the weights with tokenizer.save_pretrained({str(folder)!r}){unset}.")


def _override(env: str) -> str | None:
    """A local folder (or hub id) from `env`; a path that does not exist is an error that names the variable, and a
    folder that is not a model for its role is refused before anything loads (`check_model_folder`)."""
    value = os.environ.get(env, "").strip()
    if not value:
        return None
    path = os.path.expanduser(value)
    if os.path.isdir(path):
        check_model_folder(path, ROLES[env], env)
        return path
    looks_like_a_path = value.startswith(("/", ".", "~")) or value.count("/") > 1 or os.path.exists(path)
    if looks_like_a_path:  # hub ids are "name" or "owner/name"
        raise MissingPathError(f"{env}={value!r} is not a folder (resolved to {os.path.abspath(path)}). Point it at "
                               f"a folder saved with save_pretrained (config.json + weights), or unset it.")
    return value  # a hub id such as "gpt2-large": checked below like the profile's own ids


class ModelIds(NamedTuple):
    """Where the policy and the reward classifier load from, as `from_pretrained` takes them."""

    policy: str
    reward: str


def model_ids(profile: Profile) -> ModelIds:
    """The policy's and the classifier's ids: the profile's hub ids, or RLHF_POLICY_MODEL / RLHF_REWARD_MODEL when set
    (pre-downloaded weights, air-gapped clusters, the rehearsal). In `smoke` they are the shipped world's folders."""
    _quiet_loading()  # a notebook that loads these ids itself (01's pipeline cell) gets no loading bars either
    policy, reward = _override(POLICY_ENV), _override(REWARD_ENV)
    if profile.offline and not (policy and reward):
        world = smoke_world()
        policy, reward = policy or str(world.policy), reward or str(world.classifier)
    policy, reward = policy or profile.policy_model, reward or profile.reward_model
    ensure_available(policy)  # returns at once for a local folder
    ensure_available(reward)
    return ModelIds(policy, reward)


def _world_part_id(profile: Profile, env: str, part: str, hub_id: str) -> str:
    """`env` when set, else the shipped world's folder `part` in `smoke`, else `hub_id`; made available."""
    chosen = _override(env)
    if chosen is None and profile.offline:
        chosen = str(getattr(smoke_world(), part))
    chosen = chosen or hub_id
    ensure_available(chosen)
    return chosen


def base_model_id(profile: Profile) -> str:
    """The pretrained LM notebook 02 fine-tunes into the policy: RLHF_BASE_MODEL, else the shipped world's base in
    `smoke` (a small GPT-2 pretrained on Python's documentation, not on reviews), else the hub id (`gpt2`)."""
    return _world_part_id(profile, BASE_ENV, "base", profile.base_model)


def gold_model_id(profile: Profile) -> str:
    """The gold judge (notebooks 07-08): RLHF_GOLD_MODEL, else the shipped world's in `smoke`, else the hub id."""
    return _world_part_id(profile, GOLD_ENV, "gold", profile.gold_model)


def reader_model_id(profile: Profile) -> str:
    """The gold rater's reader LM: RLHF_READER_MODEL, else the shipped world's in `smoke`, else the hub id."""
    return _world_part_id(profile, READER_ENV, "reader", profile.reader_model)


def load_gold(profile: Profile, device: torch.device | str | None = None):
    """The gold rater of notebooks 07-08 (`reward.GoldRater`): the gold judge's POSITIVE logit (by label name), minus
    a penalty for repetitive text and one for text the reader LM finds harder to read than real reviews. Its
    `.sentiment` is the judge alone. The fluency constants are the shipped world's calibration in `smoke` (with its
    own judge and reader), else calibrated on first use and cached (`gold.calibrated_rater_constants`)."""
    device = torch.device(device or default_device())
    judge_id, reader_id = gold_model_id(profile), reader_model_id(profile)
    judge = SentimentReward(pipeline("sentiment-analysis", model=judge_id, device=device, dtype=torch.float32))
    reader = ReaderFluency(AutoModelForCausalLM.from_pretrained(reader_id, dtype=torch.float32,
                                                                use_safetensors=True).to(device).eval(),
                           AutoTokenizer.from_pretrained(reader_id))
    if profile.offline and (judge_id, reader_id) == (str(smoke_world().gold), str(smoke_world().reader)):
        constants = smoke_world().rater
    else:
        constants = calibrated_rater_constants(judge, reader, load_tokenizer(profile), profile, (judge_id, reader_id))
    return GoldRater(judge, reader=reader, fluency_free=constants["free"], fluency_weight=constants["weight"],
                     calibration=constants)


def prepare_tokenizer(tokenizer):
    """GPT-2 has no pad token: pad with EOS (the attention mask hides it) and pad on the **left**,
    so every prompt ends right where generation starts."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_tokenizer(profile: Profile):
    return prepare_tokenizer(AutoTokenizer.from_pretrained(model_ids(profile).policy))


def load_policy(profile: Profile, device: torch.device | str | None = None):
    """The policy in eval mode: dropout off, because PPO compares log-probs of the same tokens under
    the old and new policy, and dropout noise would make that ratio differ from 1 with no update at all."""
    return load_causal_lm(model_ids(profile).policy, device)


def load_causal_lm(model_id: str, device: torch.device | str | None = None):
    """A causal LM from a hub id or a `save_pretrained` folder (safetensors only), in eval mode on `device`."""
    _quiet_loading()
    model = AutoModelForCausalLM.from_pretrained(model_id, use_safetensors=True)
    return model.to(device or default_device()).eval()


def load_classifier(profile: Profile, device: torch.device | str | None = None):
    """The sentiment classifier as a `pipeline("sentiment-analysis", ...)`."""
    _quiet_loading()
    return pipeline("sentiment-analysis", model=model_ids(profile).reward,
                    device=torch.device(device or default_device()))


def load_reward(profile: Profile, device: torch.device | str | None = None, **kwargs):
    return SentimentReward(load_classifier(profile, device), **kwargs)


def describe_samples_source(profile, policy, tokenizer, full: bool = False) -> str:
    """Where a notebook's samples first appear: which policy wrote them, its size read from the model itself; with
    `full` (notebook 01), for the `smoke` profile's offline policy, how it was made and how its words compare with
    real reviews'. Without it one line, so that later notebooks do not repeat the paragraph."""
    params = sum(p.numel() for p in policy.parameters())
    if not profile.offline:
        return f"These samples come from {profile.policy_model}: {params:,} parameters, {len(tokenizer):,} tokens."
    if not full:
        return (f"These samples come from the smoke profile's policy, a small GPT-2 fine-tuned on IMDB reviews "
                f"({params:,} parameters; notebook 01 says how it was made).")
    parts = smoke_world().info["parts"]
    base, made = parts["base"], parts["policy"]
    return (f"These samples come from the smoke profile's policy: {params:,} parameters and a {len(tokenizer):,}-token "
            f"vocabulary (GPT-2 small: 124M and 50,257). It is a small GPT-2 pretrained on Python's documentation "
            f"({base['tokens_seen'] / 1e6:.0f}M tokens), then fine-tuned on IMDB reviews "
            f"({made['tokens_seen'] / 1e6:.0f}M tokens), as lvwerra/gpt2-imdb is GPT-2 fine-tuned on IMDB: "
            f"{made['final']['unseen_word_rate']:.1%} of the words it writes never occur in IMDB's training reviews "
            f"({made['real_text']['unseen_word_rate']:.1%} of real reviews' words do not). The cpu and gpu profiles "
            f"run the same code on GPT-2.")
