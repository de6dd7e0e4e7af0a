"""Throughput of the hand-built PPO step, printed as JSON.

    python benchmarks/throughput.py --models smoke
    python benchmarks/throughput.py --models gpt2-shaped --batch-size 32 --mini-batch-size 8 --steps 3

`smoke`: the offline world's tiny models. `gpt2-shaped`: a randomly initialised GPT-2 124M (GPT2Config()
defaults) with the real GPT-2 tokenizer from $RLHF_GPT2_TOKENIZER_DIR, saved and re-loaded with
`from_pretrained`; the reward is the offline classifier (text in, logit out). Random weights generate random
tokens, so only the timings mean anything. The first step is a warm-up and is not averaged. Each --models value
runs in its own process, so `peak_rss_mb` is that configuration's own peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
    load = lambda: AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).to(device).eval()
    return tokenizer, load(), load(), reward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", choices=["smoke", "gpt2-shaped"], default="smoke")
    parser.add_argument("--steps", type=int, default=4, help="steps to time, after one warm-up step")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mini-batch-size", type=int, default=16)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--gen-max-tokens", type=int, default=16)
    args = parser.parse_args()

    import torch

    from rlhf_helpers import get_profile
    from rlhf_helpers.data import build_prompt_dataset
    from rlhf_helpers.ppo_loop import PPOConfig, make_state, ppo_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer, policy, reference, reward = _models(args.models, device)
    prompts = build_prompt_dataset(get_profile("smoke"), tokenizer)["input_ids"]
    config = PPOConfig.from_profile(get_profile("smoke"), steps=args.steps + 1, batch_size=args.batch_size,
                                    mini_batch_size=args.mini_batch_size, ppo_epochs=args.ppo_epochs,
                                    gen_min_tokens=args.gen_max_tokens, gen_max_tokens=args.gen_max_tokens,
                                    learning_rate=1e-5)
    state = make_state(config, policy, reference, tokenizer, reward, prompts)
    records = []
    for _ in range(args.steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        record = ppo_step(state)
        if device.type == "cuda":
            torch.cuda.synchronize()
        record["time_step"] = time.perf_counter() - start
        records.append(record)
    timed = records[1:]
    mean = lambda key: sum(r[key] for r in timed) / len(timed)
    phases = {k: mean(f"time_{k}") for k in ("generate", "score", "forward", "update")}
    result = {
        "algo": "ppo", "models": args.models, "device": str(device), "torch_threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in policy.parameters()),
        "batch_size": args.batch_size, "mini_batch_size": args.mini_batch_size, "ppo_epochs": args.ppo_epochs,
        "response_tokens": args.gen_max_tokens, "timed_steps": len(timed),
        "step_seconds": mean("time_step"), "samples_per_second": args.batch_size / mean("time_step"),
        "phase_seconds": phases,
        "step_over_phase_sum": mean("time_step") / sum(phases.values()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
