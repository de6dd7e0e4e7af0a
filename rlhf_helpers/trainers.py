"""How each method trains, behind `train.run`: the hand-built PPO loop, TRL's GRPO and RLOO, and TRL's DPO, each
from the same `runs.RunInputs` and scored by the same evaluation; what a finished run writes (its policy folder
and model card, eval.jsonl, curves.png, samples.csv, summary.json) and how a fault is explained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from safetensors.torch import save

from .checkpoint import checkpoint_dirs, load_checkpoint, save_checkpoint
from .data import check_imdb_source, imdb_source
from .dpo import (DPOCallback, dpo_config, heldout_pairs, make_dpo_trainer, pair_metrics, pairs_for_run,
                  validation_pairs)
from .evaluation import Evaluation
from .faults import atomic_write, explain_faults, hold_output, write_bytes, write_text_atomic
from .models import model_ids, quiet_transformers
from .plots import plot_dpo_curves, plot_training_curves, save_figure
from .ppo_loop import make_state, train
from .profiles import PPOConfig, Profile
from .runs import RunInputs, write_results
from .spec import RunError, RunSpec, is_main_process, run_status
from .tracking import MetricLogger, trl_logging
from .trl_runs import CourseCallback, make_trl_trainer, sentiment_reward_func, trl_config


def _differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """Human-readable list of the fields that differ between two run.json dicts."""
    found = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key} was {a!r}, now {b!r}")
    return found


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


@dataclass
class _Run:
    """One run in progress: what was asked, where it writes, and the step it has reached (for a fault's message)."""

    spec: RunSpec
    out: Path
    config: PPOConfig
    progress: bool
    info: dict = dataclasses.field(default_factory=dict)
    """run.json: what the run is (algo, profile, settings, data, models); filled in once `out` is held."""
    step: int = 0
    start: float = dataclasses.field(default_factory=time.perf_counter)

    def record(self, record: dict) -> None:
        """Append a step's record to metrics.jsonl and note the step reached."""
        self.step = record.get("step", self.step)
        _append(self.out / "metrics.jsonl", record)


@dataclass
class _Trained:
    """What a method's training returns: its records, its held-out evaluations and the trained model."""

    history: list[dict]
    evals: list[dict]
    before: Evaluation
    model: object
    value_head: object = None
    wall_before: float = 0.0
    """Seconds spent before a resume (PPO)."""
    heldout_pairs: dict | None = None
    """DPO: `dpo.pair_metrics` of the trained policy on pairs from test-split prompts it never trained on."""
    validation_pairs: list | None = None
    """DPO: the same metrics on the validation pairs at the end of each epoch (what its settings are chosen on)."""


POLICY_DIR = "policy"
"""Where a run saves its final policy, inside --out."""


def save_policy(folder: Path, model, tokenizer, value_head=None, card: str | None = None) -> Path:
    """The trained policy as a plain transformers folder: `save_pretrained` weights (safetensors) and tokenizer, the
    PPO value head beside them (`value_head.safetensors`, which transformers ignores), and a model card. Loads with
    `AutoModelForCausalLM.from_pretrained(folder)` or `pipeline("text-generation", model=folder)`, no course code.
    Written to a temporary folder and renamed, so a half-written policy never sits where a finished one would."""
    with atomic_write(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if value_head is not None:
            write_bytes(tmp / "value_head.safetensors",
                        save({k: v.detach().contiguous().cpu() for k, v in value_head.state_dict().items()}))
        if card:
            (tmp / "README.md").write_text(card)
    return folder


def _model_card(algo: str, profile: Profile, config, run_info: dict, before: dict, after: dict,
                command: list[str] | None) -> str:
    """A short model card: what was trained, on what, how, with what result, and the command that made it."""
    method = {"ppo": "PPO (the course's hand-built loop)", "grpo": "GRPO (TRL)", "rloo": "RLOO (TRL)",
              "dpo": "DPO (TRL), on preference pairs sampled from the initial policy"}[algo]
    rows = "\n".join(f"| {key} | {before[key]:.4g} | {after[key]:.4g} |" for key in
                      ("mean_reward", "positive_rate", "kl", "ref_perplexity"))
    made_by = shlex.join(command) if command else f"rlhf_helpers.train.run({algo!r}, profile={profile.name!r}, ...)"
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [rlhf, {algo}, imdb, sentiment]
---
# {algo.upper()} policy from the RLHF course ({profile.name} profile)

{method}, trained to continue IMDB review prompts ({profile.prompt_min_tokens}-{profile.prompt_max_tokens} tokens)
positively. Reward: the POSITIVE logit of `{run_info['models']['reward']}`.
Initial policy and KL reference: `{run_info['models']['policy']}`.
Data: IMDB (`{run_info['data']}`). {config.steps} steps of {config.batch_size} episodes, seed {config.seed}; every
setting is in the run's `run.json`, one folder up.

Held-out evaluation, measured by the run that saved this folder, on its machine: {after.get('n_prompts', '?')} fixed
IMDB test prompts, the same sampling seed before and after.

| metric | before | after |
| --- | --- | --- |
{rows}

- Made with: `{made_by}`
- Evaluate it again, or beside another run: `python -m rlhf_helpers.compare --policy THIS_FOLDER`
- Load it: `AutoModelForCausalLM.from_pretrained("THIS_FOLDER")` or `pipeline("text-generation", model="THIS_FOLDER")`
- Share it: `model.push_to_hub("you/name")` and `tokenizer.push_to_hub("you/name")` (needs a Hugging Face token;
  not tested by the course, whose machines cannot reach the hub)
"""


def train_run(spec: RunSpec, profile: Profile, out: Path, progress: bool, command: list[str] | None) -> dict:
    """`train.run`: check, lock `out`, train, write the run's files, explain a fault."""
    spec.check(profile)
    if run_status(out) == "finished":  # before the lock: a finished run is not touched at all
        return _finished(out, spec.resume)
    check_imdb_source(profile)  # a damaged data file is named now, not after the models have loaded
    config = spec.config(profile)
    state = _Run(spec, out, config, progress)
    faults = explain_faults(out, where=lambda: f"at step {state.step} of {config.steps}",
                            next_step=lambda: _continue_hint(spec, out, command),
                            memory=lambda: _memory_advice(config))
    if not is_main_process():  # under torchrun only the first process writes, and so only it holds the lock
        with faults:
            return _train(state, profile, command)
    with hold_output(out, "training run"), faults:
        if run_status(out) == "finished":  # another process finished it while we waited to start
            return _finished(out, spec.resume)
        return _train(state, profile, command)


def _finished(out: Path, resume: bool) -> dict:
    if resume:
        print(f"{out} holds a finished run (summary.json): nothing to resume, nothing was changed.", flush=True)
        return json.loads((out / "summary.json").read_text())
    raise RunError(f"{out} holds a finished run (summary.json). Choose another --out; nothing was changed.")


def _memory_advice(config: PPOConfig) -> str:
    return (f"Lower --mini-batch-size (try {max(1, config.mini_batch_size // 2)}: the update's memory grows with it; "
            f"it was {config.mini_batch_size} of --batch-size {config.batch_size}), or --batch-size for the rollout.")


def _continue_hint(spec: RunSpec, out: Path, command: list[str] | None) -> str:
    """What is intact in `out` and the command that continues it, for a run that stopped on a fault."""
    if spec.algo != "ppo":
        return (f"TRL runs keep no checkpoints, so nothing can be resumed: run the command again into another --out "
                f"(and delete {out} once you no longer need it).")
    if command:
        resume = shlex.join([*command, *([] if "--resume" in command else ["--resume"])])
    else:
        resume = "run(RunSpec(..., resume=True), ...) with the same arguments"
    checkpoints = checkpoint_dirs(out)
    if checkpoints:
        step = json.loads((checkpoints[-1] / "state.json").read_text())["step"]
        return f"The last checkpoint, step {step}, is intact in {checkpoints[-1]}. Continue from it with: {resume}"
    if spec.save_every:
        return (f"No checkpoint had been written yet (the first comes at step {spec.save_every}). Start again with: "
                f"{resume} (with no checkpoint it starts from step 0).")
    return (f"This run writes no checkpoints (--save-every 0), so nothing can be resumed. Start again with: {resume} "
            f"(it starts from step 0); add --save-every N to make a long run resumable.")


def _train(run_: _Run, profile: Profile, command: list[str] | None) -> dict:
    spec, out, config = run_.spec, run_.out, run_.config
    status = run_status(out)
    if status == "partial" and not spec.resume:
        raise RunError(f"{out} already holds a run. Pass --resume to continue it, or choose another --out.")
    # Only now, holding `out`, are the models looked up: a busy or unwritable --out is reported before anything loads
    # (in `smoke`, the first lookup on a machine builds the offline world).
    run_.info = {"algo": spec.algo, "profile": profile.name, "config": dataclasses.asdict(config),
                 **({"dpo": dataclasses.asdict(profile.dpo)} if spec.algo == "dpo" else {}),
                 "data": imdb_source(profile), "models": model_ids(profile)._asdict()}
    if status == "partial" and (out / "run.json").is_file():
        saved = json.loads((out / "run.json").read_text())
        saved.pop("trainer", None)  # written by the trainer once it is built: not an argument of the command
        differences = _differences(saved, run_.info)
        if differences:
            raise RunError(f"{out} holds a run that this command would not continue faithfully: "
                           f"{'; '.join(differences)}. Resume it with the same arguments and environment, or choose "
                           f"another --out.")
    if command is not None:  # the CLI's log says what it ran on; a notebook printed it in its first cell
        print(profile.describe(), flush=True)

    inputs = RunInputs(profile, config).load()
    # The run really starts here: only now is --out marked as holding it (a start that failed while loading
    # leaves nothing that blocks the corrected command).
    main_process = is_main_process()
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "run.json", json.dumps(run_.info, indent=2))
    trainer = {"ppo": _train_ppo, "dpo": _train_dpo}.get(spec.algo, _train_trl)
    trained = trainer(inputs, run_)
    after = inputs.evaluate(trained.model)
    last = trained.history[-1]
    train_seconds = last["train_seconds"] if trained.history else 0.0
    trained.evals.append({"round": config.steps, "episodes": last["episodes"], "train_seconds": train_seconds,
                          **after.metrics})
    summary = {"algo": spec.algo, "profile": profile.name, "seed": config.seed, "steps": config.steps,
               "episodes": last["episodes"], "before": trained.before.metrics, "after": after.metrics,
               "train_seconds": train_seconds,
               "wall_seconds": trained.wall_before + time.perf_counter() - run_.start, "policy": POLICY_DIR}
    if trained.heldout_pairs is not None:
        summary["heldout_pairs"] = trained.heldout_pairs
        summary["validation_pairs"] = trained.validation_pairs
    if not main_process:
        return summary
    save_policy(out / POLICY_DIR, trained.model, inputs.tokenizer, trained.value_head,
                card=_model_card(spec.algo, profile, config, run_.info, trained.before.metrics, after.metrics,
                                 command))
    write_text_atomic(out / "eval.jsonl", "".join(json.dumps(e) + "\n" for e in trained.evals))
    title = f"{spec.algo} · {profile.name}"
    if spec.algo == "dpo":
        fig = plot_dpo_curves(trained.history, trained.evals, title)
    else:
        fig = plot_training_curves(trained.history, title, trained.before.metrics, after.metrics,
                                   kl_target=config.kl_target if spec.algo == "ppo" else None)
    save_figure(fig, out / "curves.png")
    write_results(out, summary, trained.before, after)  # summary.json last: it marks a finished run
    return summary


def _train_ppo(inputs: RunInputs, run_: _Run) -> _Trained:
    """The hand-built loop (`ppo_loop`), checkpointed every `save_every` steps and resumable."""
    spec, out, config = run_.spec, run_.out, run_.config
    tracker = MetricLogger(spec.report_to if is_main_process() else "none", out, run_.info)
    state = make_state(config, inputs.policy, inputs.reference, inputs.tokenizer, inputs.reward,
                       inputs.train_prompts["input_ids"])
    checkpoints = checkpoint_dirs(out) if spec.resume else []
    if checkpoints:
        extra = load_checkpoint(state, checkpoints[-1])
        before = Evaluation(extra["before"], pd.DataFrame(extra["before_samples"]))
        wall_before, evals = extra["wall"], extra["evals"]
        print(f"Resumed from {checkpoints[-1]} (step {state.step}).", flush=True)
    else:
        if spec.resume:
            print(f"No checkpoint in {out}: starting from scratch.", flush=True)
        before, wall_before = inputs.evaluate(inputs.policy), 0.0
        evals = [{"round": 0, "episodes": 0, "train_seconds": 0.0, **before.metrics}]
        tracker.log(evals[0], 0, "eval")
    # Rewrite the metrics log from the checkpoint, dropping steps after it that a killed run had logged.
    write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in state.history))
    run_.step = state.step

    def on_step(record: dict) -> None:
        previous = state.history[-2]["train_seconds"] if len(state.history) > 1 else 0.0
        record["train_seconds"] = previous + record["time_step"]
        run_.record(record)
        tracker.log(record, state.step)
        if spec.eval_every and state.step % spec.eval_every == 0 and state.step < config.steps:
            evals.append({"round": state.step, "episodes": record["episodes"],
                          "train_seconds": record["train_seconds"], **inputs.evaluate(inputs.policy).metrics})
            tracker.log(evals[-1], state.step, "eval")
        if spec.save_every and state.step % spec.save_every == 0 and state.step < config.steps:
            save_checkpoint(state, out, extra={"before": before.metrics,
                                               "before_samples": before.samples.to_dict("list"), "evals": evals,
                                               "wall": wall_before + time.perf_counter() - run_.start})

    try:
        history = train(state, on_step=on_step, progress=run_.progress)
    finally:
        tracker.close()
    return _Trained(history, evals, before, inputs.policy, state.value_head, wall_before)


TRAINER_SETTINGS = ("learning_rate", "beta", "num_generations", "num_iterations", "steps_per_generation",
                    "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "num_train_epochs",
                    "logging_steps", "max_completion_length", "temperature", "epsilon", "loss_type", "scale_rewards",
                    "normalize_advantages", "max_grad_norm", "lr_scheduler_type", "seed", "bf16")


def record_trainer_settings(out: Path, args) -> None:
    """Add the TRL trainer's settings, the derived ones included, to the run's run.json (under "trainer")."""
    info = json.loads((out / "run.json").read_text())
    info["trainer"] = {type(args).__name__: {name: getattr(args, name) for name in TRAINER_SETTINGS
                                             if hasattr(args, name)}}
    write_text_atomic(out / "run.json", json.dumps(info, indent=2, default=str))


def _train_trl(inputs: RunInputs, run_: _Run) -> _Trained:
    """GRPO or RLOO with TRL's trainers, evaluated by the course's callback."""
    spec, out, config = run_.spec, run_.out, run_.config
    main_process = is_main_process()
    # TRL wants an output_dir; the course saves nothing there (save_strategy="no"), so a scratch folder that is
    # removed afterwards.
    with tempfile.TemporaryDirectory(prefix=f"{spec.algo}-") as scratch:
        args = trl_config(spec.algo, inputs.profile, scratch, seed=config.seed, rounds=config.steps,
                          batch_size=config.batch_size, mini_batch_size=config.mini_batch_size,
                          report_to=spec.report_to if main_process else "none")
        reward_func = sentiment_reward_func(inputs.reward)
        if main_process:
            (out / "metrics.jsonl").write_text("")
            record_trainer_settings(out, args)
        callback = CourseCallback(inputs.evaluate, reward_func, args.steps_per_generation * args.num_iterations,
                                  config.batch_size, spec.eval_every, on_record=run_.record if main_process else None)
        with trl_logging(args.report_to[0] if args.report_to else "none", out), warnings.catch_warnings():
            # completions cut to the course's 4-16-token lengths, as PPO trains and every method is evaluated
            trainer = make_trl_trainer(spec.algo, inputs.policy, inputs.tokenizer, reward_func,
                                       inputs.train_prompts["query"], args, [callback],
                                       min_completion_length=config.gen_min_tokens)
            # TRL 1.16 calls transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            trainer.train()
    return _Trained(callback.history, callback.evals, callback.before, trainer.model)


def _train_dpo(inputs: RunInputs, run_: _Run) -> _Trained:
    """DPO on `steps × batch_size / 2` pairs from the initial policy (`dpo.samples_per_prompt` completions per
    prompt, ordered by the reward: see `dpo.dpo_pairs`), sampled once, up front."""
    spec, out, config = run_.spec, run_.out, run_.config
    # Evaluation pairs, before the clock starts (they come from the initial policy, like the training pairs).
    heldout, validation = heldout_pairs(inputs), validation_pairs(inputs)
    sampling_start = time.perf_counter()
    pairs = pairs_for_run(inputs)
    main_process = is_main_process()
    if main_process:
        (out / "metrics.jsonl").write_text("")
    with tempfile.TemporaryDirectory(prefix="dpo-") as scratch:
        args = dpo_config(inputs.profile, scratch, seed=config.seed, batch_size=config.batch_size,
                          mini_batch_size=config.mini_batch_size, report_to=spec.report_to if main_process else "none")
        # A "round" is 1/steps of the run, so that metrics.jsonl has `steps` records; episodes count the completions
        # the pairs consumed so far were built from, and end at all that were sampled.
        total = math.ceil(len(pairs) / args.per_device_train_batch_size) * args.num_train_epochs
        args.logging_steps = max(1, total // config.steps)
        if main_process:
            record_trainer_settings(out, args)
        sampled = len(pairs) * inputs.profile.dpo.samples_per_prompt  # completions, all drawn before training starts
        callback = DPOCallback(inputs.evaluate, args.logging_steps, sampled // config.steps, spec.eval_every,
                               on_record=run_.record if main_process else None,
                               sampling_seconds=time.perf_counter() - sampling_start)
        with trl_logging(spec.report_to if main_process else "none", out):
            trainer = make_dpo_trainer(inputs.policy, inputs.reference, inputs.tokenizer, pairs, args, [callback],
                                       eval_pairs=validation)
            with quiet_transformers():
                trainer.train()
            trainer.remove_callback(callback)  # the held-out evaluation is not a validation epoch
            pairs_after = pair_metrics(trainer, heldout)
    return _Trained(callback.history, callback.evals, callback.before, trainer.model, heldout_pairs=pairs_after,
                    validation_pairs=callback.validation)
