"""Compare saved policies on the course's held-out prompts, with the course's `evaluate()` and the gold judge.

    python -m rlhf_helpers.compare --policy runs/ppo-smoke/policy --profile smoke
    python -m rlhf_helpers.compare --policy runs/ppo-smoke/policy --policy runs/dpo-smoke/policy --out compare.json

A policy is any folder saved with `save_pretrained` (every run writes one to `OUT/policy/`) or a hub id. Each is
scored on the same held-out prompts with the same sampling seed as the runs' own "before"/"after" evaluations:
reward (the profile's classifier), positive rate, KL to the reference (default: the profile's initial policy),
reference perplexity, the gold judge's reward (notebook 07), the distinct-token share and length of the responses,
and a few samples. So a saved run's numbers reproduce exactly, and two runs are compared on the same prompts in one
command. Prints a table; `--out` writes the JSON (refused if the file exists).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer

from .data import check_imdb_source, heldout_prompts
from .device import default_device
from .evaluation import distinct_token_share, evaluate
from .faults import (MissingPathError, OutputExistsError, OutputWriteError, SettingError, disk_full_message,
                     is_disk_full, run_cli, unwritable_message, write_text_atomic)
from .hub import ensure_available
from .models import (check_model_folder, gold_model_id, load_causal_lm, load_gold, load_reward, model_ids,
                     prepare_tokenizer)
from .profiles import PROFILE_NAMES, get_profile


def _check_model(spec: str, what: str) -> None:
    """A local folder must be a causal LM with weights and a tokenizer; anything else is taken as a hub id."""
    if os.path.isdir(spec):
        check_model_folder(spec, "policy")
        return
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise MissingPathError(f"{what} {spec!r} is not a folder (resolved to {os.path.abspath(spec)}). Point it at "
                               f"a folder saved with save_pretrained, such as a run's OUT/policy.")
    ensure_available(spec)


def _load(spec: str, device):
    return load_causal_lm(spec, device), prepare_tokenizer(AutoTokenizer.from_pretrained(spec))


def evaluate_policies(policies: list[str], profile, reference: str | None = None, gold: bool = True,
                      n_samples: int = 8) -> dict:
    """Every policy in `policies` on the profile's held-out prompts (see the module docstring). Returns a dict."""
    for spec in policies:
        _check_model(spec, "--policy")
    if reference:
        _check_model(reference, "--reference")
    check_imdb_source(profile, splits=("test",))
    reference = reference or model_ids(profile).policy
    if gold:
        gold_model_id(profile)  # a missing or broken gold folder is named before anything loads
    device = torch.device(default_device())
    ref_model, ref_tokenizer = _load(reference, device)
    reward = load_reward(profile, device)
    judge = load_gold(profile, device) if gold else None
    cfg = profile.ppo
    heldout = heldout_prompts(profile, ref_tokenizer)
    results = []
    for spec in policies:
        model, tokenizer = (ref_model, ref_tokenizer) if spec == reference else _load(spec, device)
        if tokenizer.get_vocab() != ref_tokenizer.get_vocab():
            raise SettingError(f"--policy {spec} and the reference {reference} use different tokenizers, so the KL "
                               f"between them is undefined. Pass --reference with the policy this one was trained "
                               f"from.")
        ev = evaluate(model, ref_model, ref_tokenizer, reward, heldout, profile.eval_sampling)
        response_ids = [ref_tokenizer(r, add_special_tokens=False)["input_ids"] for r in ev.samples["response"]]
        row = {"policy": spec, **ev.metrics, "distinct_token_share": distinct_token_share(response_ids),
               "response_tokens": sum(map(len, response_ids)) / len(response_ids)}
        if judge is not None:
            texts = (ev.samples["prompt"] + ev.samples["response"]).tolist()
            row["gold"] = judge(texts).float().mean().item()
        row["samples"] = ev.samples.head(n_samples).to_dict("records")
        results.append(row)
        if model is not ref_model:
            del model
    return {"profile": profile.name, "reference": reference, "reward_model": model_ids(profile).reward,
            "gold_model": gold_model_id(profile) if gold else None, "n_prompts": len(heldout),
            "sampling": {"gen_min_tokens": cfg.gen_min_tokens, "gen_max_tokens": cfg.gen_max_tokens,
                         "temperature": cfg.temperature}, "policies": results}


def format_table(result: dict) -> str:
    keys = [("mean_reward", "reward", "+.3f"), ("positive_rate", "positive", ".2f"), ("kl", "KL", ".2f"),
            ("ref_perplexity", "ref ppl", ".0f"), ("gold", "gold", "+.3f"), ("distinct_token_share", "distinct", ".2f"),
            ("response_tokens", "tokens", ".1f")]
    keys = [k for k in keys if all(k[0] in p for p in result["policies"])]
    lines = [" | ".join(["policy", *(label for _, label, _ in keys)])]
    for p in result["policies"]:
        lines.append(" | ".join([p["policy"], *(format(p[key], fmt) for key, _, fmt in keys)]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """The CLI: expected faults print a few lines and exit 2; RLHF_DEBUG=1 shows tracebacks."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda: _main(argv))


def _main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m rlhf_helpers.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--policy", action="append", required=True,
                        help="a saved policy folder (a run's OUT/policy) or a hub id; repeat to compare")
    parser.add_argument("--reference", default=None, help="KL and perplexity against this (default: the profile's "
                                                          "initial policy)")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                        help="held-out prompts, reward and gold judge of this profile (default: $RLHF_PROFILE)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (refused if it exists)")
    parser.add_argument("--no-gold", action="store_true", help="skip the gold judge")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists():
        parser.error(f"{args.out} exists; choose another --out (nothing was changed).")
    profile = get_profile(args.profile)
    result = evaluate_policies(args.policy, profile, args.reference, gold=not args.no_gold)
    print(format_table(result), flush=True)
    if args.out is not None:
        if args.out.exists():
            raise OutputExistsError(f"{args.out} appeared while evaluating; choose another --out.")
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(args.out, json.dumps(result, indent=2))
        except OSError as error:
            message = (f"{disk_full_message(args.out.parent, error)} Nothing was written; run the command again."
                       if is_disk_full(error) else unwritable_message(args.out, error))
            raise OutputWriteError(message) from error
    return result


if __name__ == "__main__":
    main()
