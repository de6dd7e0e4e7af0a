import pytest

from rlhf_helpers import profiles
from rlhf_helpers.profiles import get_profile


def test_env_selects_profile(monkeypatch):
    monkeypatch.setenv("RLHF_PROFILE", "cpu")
    assert get_profile().name == "cpu"
    monkeypatch.setenv("RLHF_PROFILE", " Smoke ")
    assert get_profile().name == "smoke"


def test_explicit_argument_wins_over_env(monkeypatch):
    monkeypatch.setenv("RLHF_PROFILE", "cpu")
    assert get_profile("gpu").name == "gpu"


@pytest.mark.parametrize("cuda, expected", [(True, "gpu"), (False, "cpu")])
def test_automatic_choice(monkeypatch, cuda, expected):
    monkeypatch.delenv("RLHF_PROFILE", raising=False)
    monkeypatch.setattr(profiles, "_cuda_available", lambda: cuda)
    assert get_profile().name == expected


def test_unknown_profile_names_the_choices(monkeypatch):
    with pytest.raises(ValueError, match="gpu, cpu, smoke"):
        get_profile("laptop")
    monkeypatch.setenv("RLHF_PROFILE", "tpu")
    with pytest.raises(ValueError, match="RLHF_PROFILE"):
        get_profile()


def test_overrides_and_unknown_fields():
    assert get_profile("smoke", total_steps=3).total_steps == 3
    assert get_profile("smoke").total_steps != 3  # the registry itself is untouched
    with pytest.raises(ValueError, match="Unknown profile field"):
        get_profile("smoke", total_stepz=3)


def test_gpu_profile_is_the_anchor_recipe():
    p = get_profile("gpu")
    assert (p.policy_model, p.reward_model, p.dataset) == (
        "lvwerra/gpt2-imdb", "lvwerra/distilbert-imdb", "stanfordnlp/imdb")
    assert (p.learning_rate, p.batch_size, p.ppo_epochs, p.init_kl_coef, p.kl_target) == (
        1.41e-5, 128, 4, 0.2, 6.0)
    assert (p.prompt_min_tokens, p.prompt_max_tokens, p.gen_min_tokens, p.gen_max_tokens) == (2, 8, 4, 16)


def test_profiles_share_prompt_and_eval_shape():
    for name in ("gpu", "cpu"):
        assert get_profile(name).n_eval_prompts >= 256
    for p in map(get_profile, profiles.PROFILE_NAMES):
        assert p.batch_size % p.mini_batch_size == 0, p.name
        assert p.name in p.describe()
