"""Hand-built PPO vs TRL GRPO throughput, printed as JSON.

    python benchmarks/throughput.py                          # both algorithms on smoke and gpt2-shaped models
    python benchmarks/throughput.py --models smoke --algo ppo --steps 4     # one configuration

Both algorithms get the same batch (completions per step), response length (exactly --response-tokens new
tokens: EOS is suppressed in both, so every response has the same length), and optimisation passes: PPO runs
--epochs passes of batch/minibatch gradient steps; GRPO gets steps_per_generation = batch/minibatch and
num_iterations = --epochs. Models: `smoke`, the offline world's tiny models; `gpt2-shaped`, a randomly initialised
GPT-2 124M (GPT2Config() defaults) with the real GPT-2 tokenizer from $RLHF_GPT2_TOKENIZER_DIR, saved and reloaded
with `from_pretrained`; the reward is the offline classifier in both cases. Random weights generate random
tokens, so only the timings mean anything. The first step is a warm-up. Each configuration runs in its own
process, so `peak_rss_mb` is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _models(kind: str, device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_helpers import get_profile
    from rlhf_helpers.models import load_policy, load_reward, load_tokenizer, prepare_tokenizer

    smoke = get_profile("smoke")
    reward = load_reward(smoke, device)
    if kind == "smoke":
        return load_tokenizer(smoke), load_policy(smoke, device), load_policy(smoke, device), reward
    tok_dir = os.environ.get("RLHF_GPT2_TOKENIZER_DIR")
    if not tok_dir:
        raise SystemExit("gpt2-shaped needs RLHF_GPT2_TOKENIZER_DIR: a folder with GPT-2's vocab.json/merges.txt.")
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="gpt2-shaped-"))
    GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tok_dir))
    load = lambda: AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).to(device).eval()  # noqa: E731
    return tokenizer, load(), load(), reward


class _Timer:
    """Wraps a callable and adds up the seconds spent in it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def bench_ppo(args, tokenizer, policy, reference, reward, prompts) -> dict:
    import dataclasses

    import torch

    from rlhf_helpers import get_profile
    from rlhf_helpers.ppo_loop import make_state, ppo_step

    config = dataclasses.replace(get_profile("smoke").ppo, steps=args.steps + 1, batch_size=args.batch_size,
                                 mini_batch_size=args.mini_batch_size, ppo_epochs=args.epochs,
                                 gen_min_tokens=args.response_tokens, gen_max_tokens=args.response_tokens,
                                 learning_rate=1e-5)
    state = make_state(config, policy, reference, tokenizer, reward, [p["input_ids"] for p in prompts])
    # Same response length in both algorithms: no early EOS.
    policy.generation_config.suppress_tokens = [tokenizer.eos_token_id]
    records = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        record = ppo_step(state)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        record["time_step"] = time.perf_counter() - start
        records.append(record)
    timed = records[1:]
    mean = lambda key: sum(r[key] for r in timed) / len(timed)  # noqa: E731
    phases = {k: mean(f"time_{k}") for k in ("generate", "score", "forward", "update")}
    step = mean("time_step")
    return {"step_seconds": step, "phase_seconds": phases,
            "step_over_generate_forward_update": step / (phases["generate"] + phases["forward"] + phases["update"]),
            "response_length": mean("response_length")}


def bench_grpo(args, tokenizer, policy, reference, reward, prompts) -> dict:
    import torch
    from transformers import TrainerCallback

    from rlhf_helpers import get_profile
    from rlhf_helpers.trl_runs import make_trl_trainer, sentiment_reward_func, trl_config

    profile = get_profile("smoke")
    trl_args = trl_config("grpo", profile, tempfile.mkdtemp(prefix="bench-grpo-"), rounds=args.steps + 1,
                          batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                          num_iterations=args.epochs, learning_rate=1e-5, max_completion_length=args.response_tokens,
                          generation_kwargs={"min_new_tokens": args.response_tokens})
    steps_per_round = trl_args.steps_per_generation * trl_args.num_iterations
    generate = _Timer(policy.generate)
    policy.generate = generate  # TRL calls the unwrapped model's generate on CPU and single GPU
    reward_func = sentiment_reward_func(reward)
    score = _Timer(reward_func)
    score.__name__ = "sentiment"
    rounds = []

    class RoundTimer(TrainerCallback):
        def on_train_begin(self, *a, **k):
            self.start, self.marks = time.perf_counter(), (0.0, 0.0)

        def on_step_end(self, a, state, *rest, **k):
            if state.global_step % steps_per_round == 0:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                now = time.perf_counter()
                rounds.append({"seconds": now - self.start, "generate": generate.seconds - self.marks[0],
                               "score": score.seconds - self.marks[1]})
                self.start, self.marks = now, (generate.seconds, score.seconds)

    trainer = make_trl_trainer("grpo", policy, tokenizer, score, [p["query"] for p in prompts], trl_args,
                               [RoundTimer()])
    trainer.train()
    timed = rounds[1:]
    mean = lambda key: sum(r[key] for r in timed) / len(timed)  # noqa: E731
    step = mean("seconds")
    # Reference forward, old-log-prob forward and the updates run inside TRL's loop: the rest of the round.
    return {"step_seconds": step, "phase_seconds": {"generate": mean("generate"), "score": mean("score"),
                                                    "forward_and_update": step - mean("generate") - mean("score")}}


def run_one(args) -> dict:
    import torch

    from rlhf_helpers import get_profile
    from rlhf_helpers.data import make_prompts

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    tokenizer, policy, reference, reward = _models(args.models, device)
    from rlhf_helpers.data import filter_and_clean, load_imdb

    texts = filter_and_clean(load_imdb("train", get_profile("smoke")))["text"][:2000]
    prompts = make_prompts(texts, tokenizer, 2, 8, seed=0)
    bench = bench_ppo if args.algo == "ppo" else bench_grpo
    result = bench(args, tokenizer, policy, reference, reward, prompts)
    result = {"algo": args.algo, "models": args.models, "device": str(device),
              "torch_threads": torch.get_num_threads(), "params": sum(p.numel() for p in policy.parameters()),
              "batch_size": args.batch_size, "mini_batch_size": args.mini_batch_size, "epochs": args.epochs,
              "response_tokens": args.response_tokens, "timed_steps": args.steps,
              "samples_per_second": args.batch_size / result["step_seconds"], **result,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", choices=["smoke", "gpt2-shaped"], default=None, help="default: both")
    parser.add_argument("--algo", choices=["ppo", "grpo"], default=None, help="default: both")
    parser.add_argument("--steps", type=int, default=None, help="timed steps after one warm-up (default 4/2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mini-batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--response-tokens", type=int, default=16)
    args = parser.parse_args()
    if args.models and args.algo:
        args.steps = args.steps or (4 if args.models == "smoke" else 2)
        print(json.dumps(run_one(args)))
        return
    results = {}
    for models in ([args.models] if args.models else ["smoke", "gpt2-shaped"]):
        for algo in ([args.algo] if args.algo else ["ppo", "grpo"]):
            cmd = [sys.executable, __file__, "--models", models, "--algo", algo,
                   "--batch-size", str(args.batch_size), "--mini-batch-size", str(args.mini_batch_size),
                   "--epochs", str(args.epochs), "--response-tokens", str(args.response_tokens)]
            if args.steps:
                cmd += ["--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
            results[f"{algo}/{models}"] = json.loads(out.stdout.strip().splitlines()[-1])
        if f"ppo/{models}" in results and f"grpo/{models}" in results:
            results[f"ppo_over_grpo_samples_per_second/{models}"] = (
                results[f"ppo/{models}"]["samples_per_second"] / results[f"grpo/{models}"]["samples_per_second"])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
