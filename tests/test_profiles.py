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
    assert get_profile("smoke", steps=3).ppo.steps == 3
    assert get_profile("smoke").ppo.steps != 3  # the registry itself is untouched
    assert get_profile("smoke", n_eval_prompts=8).n_eval_prompts == 8
    with pytest.raises(ValueError, match="Unknown profile field"):
        get_profile("smoke", stepz=3)


def test_gpu_profile_is_the_anchor_recipe():
    p = get_profile("gpu")
    assert (p.policy_model, p.reward_model, p.dataset) == (
        "lvwerra/gpt2-imdb", "lvwerra/distilbert-imdb", "stanfordnlp/imdb")
    c = p.ppo
    assert (c.learning_rate, c.batch_size, c.ppo_epochs, c.init_kl_coef, c.kl_target) == (1.41e-5, 128, 4, 0.2, 6.0)
    assert (p.prompt_min_tokens, p.prompt_max_tokens, c.gen_min_tokens, c.gen_max_tokens) == (2, 8, 4, 16)


def test_ppo_config_is_flat_and_checks_itself():
    import dataclasses

    from rlhf_helpers.profiles import PPOConfig

    # One class, no inheritance: every field is declared (and documented) in PPOConfig itself.
    assert PPOConfig.__mro__[1:] == (object,)
    with pytest.raises(ValueError, match="not divisible by mini-batch size"):
        dataclasses.replace(get_profile("smoke").ppo, batch_size=10, mini_batch_size=4)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        get_profile("smoke", steps=0)


def test_profiles_share_prompt_and_eval_shape():
    for name in ("gpu", "cpu"):
        assert get_profile(name).n_eval_prompts >= 256
    for p in map(get_profile, profiles.PROFILE_NAMES):
        assert p.ppo.batch_size % p.ppo.mini_batch_size == 0, p.name
        assert p.name in p.describe()
