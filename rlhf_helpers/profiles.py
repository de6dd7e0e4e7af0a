"""One course, three sizes: the `gpu`, `cpu` and `smoke` profiles.

Every notebook runs the same code; only the profile changes. Pick one with the environment variable
``RLHF_PROFILE`` (``gpu``, ``cpu`` or ``smoke``) or pass a name to :func:`get_profile`; otherwise the
course chooses ``gpu`` when CUDA is available and ``cpu`` when it is not.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

PROFILE_ENV = "RLHF_PROFILE"
PROFILE_NAMES = ("gpu", "cpu", "smoke")
NUM_GENERATIONS = {"grpo": 8, "rloo": 8}
"""GRPO's and RLOO's completions per prompt. Equal, so that the two differ only in their advantage (and KL
placement)."""


def check_batch_split(batch: int, mini: int, processes: int = 1, per: int = 1, what: str = "") -> None:
    """The one check of how a batch splits: into mini-batches, each over `processes` processes, each a multiple
    of `per` completions (2 for DPO's pairs, num_generations for GRPO/RLOO groups). ValueError naming the sizes."""
    prefix = f"{what}: " if what else ""
    if batch % mini:
        raise ValueError(f"{prefix}batch size {batch} is not divisible by mini-batch size {mini}; pass --batch-size "
                         f"and --mini-batch-size so that one divides the other.")
    if mini % processes:
        raise ValueError(f"{prefix}mini-batch size {mini} must split evenly over the {processes} processes.")
    if mini % per:
        why = ("must be even: DPO trains on pairs, two completions each" if per == 2 else
               f"must be a multiple of num_generations ({per}): a GRPO/RLOO group stays in one mini-batch")
        raise ValueError(f"{prefix}mini-batch size {mini} {why}.")


@dataclass(frozen=True)
class Sampling:
    """How responses are sampled: a length cap drawn from [min_tokens, max_tokens] per response, the temperature,
    and how many prompts go through `generate` at once (part of a seeded draw: another batch size draws other
    samples)."""

    min_tokens: int = 4
    """Fewest new tokens per response."""
    max_tokens: int = 16
    """Most new tokens per response."""
    temperature: float = 1.0
    """Sampling temperature (plain sampling: top_k=0, top_p=1)."""
    batch_size: int = 64
    """Prompts per generation batch."""


@dataclass(frozen=True, kw_only=True)
class PPOConfig:
    """Every hyper-parameter of one PPO run, in one flat place (CleanRL style). The defaults are the classic
    recipe of TRL's gpt2-sentiment notebook: lr 1.41e-5, batch 128, 4 epochs, adaptive KL 0.2 -> target 6,
    4-16 new tokens (see "The classic recipe" in the README). GRPO/RLOO read the sampling and optimiser fields too."""

    steps: int = 200
    """PPO steps (GRPO/RLOO: generation rounds) in a full training run; each is one batch of rollouts."""
    seed: int = 0
    """Seeds the value head, prompt order, sampling and minibatch shuffling."""
    gen_min_tokens: int = 4
    """Fewest new tokens per response (each response's cap is drawn from [gen_min, gen_max])."""
    gen_max_tokens: int = 16
    """Most new tokens per response."""
    temperature: float = 1.0
    """Sampling temperature (plain sampling: top_k=0, top_p=1); log-probs divide by it too (notebook 03)."""
    learning_rate: float = 1.41e-5
    """Adam learning rate for policy and value head."""
    batch_size: int = 128
    """Prompts (episodes) per PPO step."""
    mini_batch_size: int = 128
    """Episodes per gradient step inside a PPO epoch; must divide batch_size."""
    ppo_epochs: int = 4
    """Passes over each batch of rollouts."""
    init_kl_coef: float = 0.2
    """Starting β of the KL penalty."""
    kl_target: float | None = 6.0
    """Target per-sequence KL of the adaptive controller (None: β stays fixed)."""
    kl_horizon: int = 10_000
    """Horizon of the adaptive KL controller, in episodes."""
    gamma: float = 1.0
    """Discount factor."""
    lam: float = 0.95
    """GAE λ."""
    cliprange: float = 0.2
    """PPO policy clip ε."""
    cliprange_value: float = 0.2
    """PPO value clip ε."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip."""
    def __post_init__(self):
        for name in ("steps", "batch_size", "mini_batch_size", "ppo_epochs", "kl_horizon"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"PPOConfig.{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"PPOConfig.seed must be an integer in [0, 2**32), got {self.seed!r}.")
        check_batch_split(self.batch_size, self.mini_batch_size)
        if not 1 <= self.gen_min_tokens <= self.gen_max_tokens:
            raise ValueError(f"Need 1 <= gen_min_tokens <= gen_max_tokens, got {self.gen_min_tokens}, "
                             f"{self.gen_max_tokens}.")
        if self.temperature <= 0:
            raise ValueError(f"PPOConfig.temperature must be positive, got {self.temperature}.")

    def sampling(self, batch_size: int = 64) -> Sampling:
        """This run's response lengths and temperature, sampled `batch_size` prompts at a time."""
        return Sampling(self.gen_min_tokens, self.gen_max_tokens, self.temperature, batch_size)


@dataclass(frozen=True, kw_only=True)
class DPOConfig:
    """DPO's own settings (`--algo dpo`, online DPO, the frontier); its pairs' lengths, temperature, steps, batch
    and seed are the run's `PPOConfig`, so that DPO and PPO train on one budget."""

    beta: float = 0.1
    """DPO's β: the strength of its implicit KL-to-reference, like PPO's β but inside the loss (TRL's default; the
    DPO paper's IMDB sweep spans 0.05 to 5)."""
    samples_per_prompt: int = 2
    """Completions per prompt (`steps × batch_size / 2` pairs). 2: the pair is those two, ordered by the reward, so
    the pairs cost PPO's `steps × batch_size` episodes; more: the reward's best against its worst."""
    learning_rate: float | None = None
    """Adam learning rate (None: PPO's `learning_rate`); the smoke profile's was chosen by
    `benchmarks/dpo_learning_rate.py`."""
    epochs: int = 4
    """Passes over the pairs (= `ppo_epochs`: DPO then takes PPO's gradient steps, see `dpo.dpo_pair_count`)."""

    def __post_init__(self):
        if not isinstance(self.epochs, int) or self.epochs <= 0:
            raise ValueError(f"DPOConfig.epochs must be a positive integer, got {self.epochs!r}.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"DPOConfig.learning_rate must be positive (or None: PPO's learning_rate), got "
                             f"{self.learning_rate!r}.")
        if self.beta <= 0:
            raise ValueError(f"DPOConfig.beta must be positive, got {self.beta}.")
        if not isinstance(self.samples_per_prompt, int) or self.samples_per_prompt < 2:
            raise ValueError(f"DPOConfig.samples_per_prompt must be an integer >= 2 (a pair needs two completions), "
                             f"got {self.samples_per_prompt!r}.")


@dataclass(frozen=True, kw_only=True)
class Profile:
    """One size of the course: the models and data it names, and the PPO hyper-parameters it runs with."""

    name: str
    """Profile name: gpu, cpu or smoke."""
    policy_model: str
    """Hub id of the policy to align (smoke: built offline, see `rlhf_helpers.offline`)."""
    reward_model: str
    """Hub id of the sentiment classifier whose POSITIVE logit is the reward."""
    dataset: str
    """Hub id of the IMDB dataset (a local copy in `RLHF_IMDB_DIR` wins when set)."""
    gold_model: str = "siebert/sentiment-roberta-large-english"
    """The gold judge of notebook 07, standing in for human raters (the DPO paper's IMDB judge)."""
    reader_model: str = "openai-community/gpt2-medium"
    """The gold rater's reader: an LM larger than the policy whose per-token loss says how well a text reads."""
    base_model: str = "openai-community/gpt2"
    """The pretrained LM the policy is fine-tuned from (notebook 02's SFT; `lvwerra/gpt2-imdb` is this model
    fine-tuned on IMDB)."""
    offline: bool = False
    """True when the models come from the offline world the project builds itself."""
    min_review_chars: int = 200
    """Keep reviews longer than this many characters (the classic notebook's filter)."""
    prompt_min_tokens: int = 2
    """Shortest prompt, in policy tokens."""
    prompt_max_tokens: int = 8
    """Longest prompt, in policy tokens."""
    n_eval_prompts: int = 256
    """Size of the fixed held-out prompt set that every evaluation uses."""
    eval_batch_size: int = 64
    """Prompts per generation batch during evaluation."""
    ppo: PPOConfig = PPOConfig()
    """The run's hyper-parameters (`profile.ppo.learning_rate`, ...): one flat dataclass, see `PPOConfig`."""
    dpo: DPOConfig = DPOConfig()
    """DPO's own settings (`profile.dpo.beta`, ...), see `DPOConfig`."""

    @property
    def eval_sampling(self) -> Sampling:
        """How every held-out evaluation samples: the run's lengths and temperature, `eval_batch_size` at a time."""
        return self.ppo.sampling(self.eval_batch_size)

    def describe(self) -> str:
        source = "the offline world shipped with the course" if self.offline else "Hugging Face Hub"
        imdb = os.environ.get("RLHF_IMDB_DIR")
        data = f"local IMDB at {imdb}" if imdb else (
            "shipped review fixture" if self.offline else self.dataset)
        policy = os.environ.get("RLHF_POLICY_MODEL") or self.policy_model
        reward = os.environ.get("RLHF_REWARD_MODEL") or self.reward_model
        if os.environ.get("RLHF_POLICY_MODEL") or os.environ.get("RLHF_REWARD_MODEL"):
            source += " (overridden by RLHF_POLICY_MODEL / RLHF_REWARD_MODEL)"
        return (f"profile={self.name} | policy={policy} | reward={reward} | data={data} | models from: {source}")


_COMMON_HUB = {
    "policy_model": "lvwerra/gpt2-imdb",
    "reward_model": "lvwerra/distilbert-imdb",
    "dataset": "stanfordnlp/imdb",
}

PROFILES: dict[str, Profile] = {
    # The classic recipe (TRL's gpt2-sentiment notebook; "The classic recipe" in the README).
    "gpu": Profile(name="gpu", **_COMMON_HUB),
    # The same hub models, sized for about 15 minutes per training notebook on a laptop CPU.
    "cpu": Profile(
        name="cpu", **_COMMON_HUB,
        eval_batch_size=32,
        ppo=PPOConfig(batch_size=32, mini_batch_size=8, ppo_epochs=4, steps=40, learning_rate=1.41e-5,
                      init_kl_coef=0.2, kl_target=6.0, kl_horizon=10_000),
    ),
    # Offline and fast: tiny models the project builds itself. CI runs this profile.
    "smoke": Profile(
        name="smoke", offline=True,
        policy_model="offline-world/policy", reward_model="offline-world/classifier",
        dataset="offline-world/imdb", gold_model="offline-world/gold", reader_model="offline-world/reader",
        base_model="offline-world/base",
        n_eval_prompts=128, eval_batch_size=128,
        # A tiny model tolerates a far larger learning rate than GPT-2's 1.41e-5. Chosen by benchmarks/ppo_recipe.py
        # (benchmarks/README.md): ends at its KL target with a clip fraction of a few percent, at 1.04 s a step. The
        # horizon is 1,000 episodes because the classic 10,000 cannot move beta in a 2,560-episode run.
        ppo=PPOConfig(batch_size=64, mini_batch_size=32, ppo_epochs=2, steps=40, learning_rate=2e-4,
                      init_kl_coef=0.3, kl_target=6.0, kl_horizon=1_000),
        # Chosen on validation pairs by benchmarks/dpo_learning_rate.py (lowest validation DPO loss): one pass, so
        # DPO takes half PPO's gradient steps; later epochs over-train at every rate from 1e-4 up.
        dpo=DPOConfig(learning_rate=2.5e-4, epochs=1),
    ),
}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def get_profile(name: str | None = None, **overrides) -> Profile:
    """Return the profile called `name`, else `$RLHF_PROFILE`, else `gpu` with CUDA and `cpu` without.

    Keyword arguments override single fields of the profile or of its `PPOConfig`, e.g.
    ``get_profile("smoke", steps=5)`` or ``get_profile("smoke", n_eval_prompts=32)``.
    """
    chosen = name or os.environ.get(PROFILE_ENV) or ("gpu" if _cuda_available() else "cpu")
    chosen = chosen.strip().lower()
    if chosen not in PROFILES:
        raise ValueError(
            f"Unknown profile {chosen!r}. Choose one of {', '.join(PROFILE_NAMES)} "
            f"(argument or the {PROFILE_ENV} environment variable); 'smoke' runs fully offline.")
    profile = PROFILES[chosen]
    if overrides:
        own = {f.name for f in dataclasses.fields(Profile)} - {"ppo", "dpo"}
        ppo = {f.name for f in dataclasses.fields(PPOConfig)}
        dpo = {f"dpo_{f.name}" for f in dataclasses.fields(DPOConfig)}
        unknown = sorted(set(overrides) - own - ppo - dpo)
        if unknown:
            raise ValueError(f"Unknown profile field(s) {unknown}; valid fields: {sorted(own | ppo | dpo)}")
        profile = dataclasses.replace(
            profile, **{k: v for k, v in overrides.items() if k in own},
            ppo=dataclasses.replace(profile.ppo, **{k: v for k, v in overrides.items() if k in ppo}),
            dpo=dataclasses.replace(profile.dpo, **{k[len("dpo_"):]: v for k, v in overrides.items() if k in dpo}))
    return profile
