"""Loading the policy, its tokenizer and the reward classifier for a profile.

The `gpu`/`cpu` profiles load hub ids; `smoke` builds the offline world once and loads the saved
folders. Both go through the same `from_pretrained` / `pipeline` calls.
"""

from __future__ import annotations

import torch

from .profiles import Profile


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_ids(profile: Profile) -> tuple[str, str]:
    """(policy, classifier) as `from_pretrained` takes them: hub ids, or local folders in `smoke`."""
    if profile.offline:
        from .offline import build_offline_world

        world = build_offline_world()
        return str(world.policy), str(world.classifier)
    from .hub import ensure_available

    ensure_available(profile.policy_model)
    ensure_available(profile.reward_model)
    return profile.policy_model, profile.reward_model


def prepare_tokenizer(tokenizer):
    """GPT-2 has no pad token: pad with EOS (the attention mask hides it) and pad on the **left**,
    so every prompt ends right where generation starts."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_tokenizer(profile: Profile):
    from transformers import AutoTokenizer

    policy_id, _ = model_ids(profile)
    return prepare_tokenizer(AutoTokenizer.from_pretrained(policy_id))


def load_policy(profile: Profile, device: torch.device | str | None = None):
    """The policy in eval mode: dropout off, because PPO compares log-probs of the same tokens under
    the old and new policy, and dropout noise would make that ratio differ from 1 with no update at all."""
    from transformers import AutoModelForCausalLM

    policy_id, _ = model_ids(profile)
    model = AutoModelForCausalLM.from_pretrained(policy_id, use_safetensors=True)
    return model.to(device or default_device()).eval()


def load_classifier(profile: Profile, device: torch.device | str | None = None):
    """The sentiment classifier as a `pipeline("sentiment-analysis", ...)`."""
    from transformers import pipeline

    _, reward_id = model_ids(profile)
    return pipeline("sentiment-analysis", model=reward_id, device=torch.device(device or default_device()))


def load_reward(profile: Profile, device: torch.device | str | None = None, **kwargs):
    from .reward import SentimentReward

    return SentimentReward(load_classifier(profile, device), **kwargs)
