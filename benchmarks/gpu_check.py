"""The course's GPU check, in one go: notebooks on CUDA, the GPT-2-scale rehearsals, throughput, the classic recipe.

    python benchmarks/gpu_check.py --out gpu_check.json           # on a GPU machine (about 10 minutes on an H100)
    python benchmarks/gpu_check.py --dry-run --out gpu_check.json # here, on the CPU, cut down (tests/test_gpu_check.py)

Steps, each a subprocess with its own time limit; a failing step is recorded (exit code, the end of its output) and
the others still run, so one JSON holds everything:
1. machine     torch, CUDA, the device's name, compute capability, bf16, memory;
2. notebooks   every notebook executed with nbmake in the `smoke` profile on the default device (CUDA there), the
               seconds of each;
3. rehearsal   `benchmarks/rehearsal.py` for `gpu` (the classic recipe: batch 128, 4 PPO epochs, GPT-2 124M
               stand-ins; seconds per phase, peak CUDA memory, projected notebook times) and for `cpu`;
4. throughput  `benchmarks/throughput.py`: hand-built PPO against TRL GRPO at equal work.
`--dry-run` runs the same steps with CPU-sized settings: a one-cell notebook instead of the course's, the small
stand-ins and batch 8 for the rehearsal, one smoke step of throughput. The GPU machine has PyTorch and transformers
but not trl, datasets or nbmake: carry wheels (`pip download trl datasets nbmake pytest ipykernel nbclient
tensorboard -d wheels/`) and `pip install --no-index --find-links wheels/ -e .` there first. The rehearsal needs
$RLHF_GPT2_TOKENIZER_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def machine() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "python": sys.version.split()[0],
            "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported(),
                    memory_gb=round(props.total_memory / 2**30, 1), cuda_version=torch.version.cuda)
    else:
        info["device"] = "cpu"
    return info


def _run(cmd: list[str], timeout: int, env: dict | None = None) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env={**os.environ, **(env or {})})
        return done.returncode, done.stdout + done.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired as expired:
        text = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        return 124, f"{text}\n(timed out after {timeout} s)", time.perf_counter() - start


def _last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


DRY_RUN_NOTEBOOK = "gpu_check_dry_run.ipynb"


def _dry_run_notebook(folder: Path) -> str:
    """A one-cell notebook for --dry-run: it proves the step's plumbing (nbmake, the junit report, the per-notebook
    seconds) without executing a course notebook a second time (the suite executes every one of them anyway)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import torch\nimport rlhf_helpers\n\nprint(torch.__version__)")]
    path = folder / DRY_RUN_NOTEBOOK
    nbformat.write(nb, path)
    return str(path)


def notebooks(dry_run: bool, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        paths = [_dry_run_notebook(Path(scratch))] if dry_run else sorted(
            str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.ipynb"))
        report = Path(scratch) / "junit.xml"
        code, text, seconds = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                                    "--nbmake", "--nbmake-timeout=900", f"--junitxml={report}", *paths], timeout,
                                   env={"RLHF_PROFILE": "smoke"})
        per = {}
        if report.is_file():
            for case in ET.parse(report).getroot().iter("testcase"):
                failed = case.find("failure") is not None or case.find("error") is not None
                name = (case.get("classname") or case.get("name") or "").split("notebooks.")[-1]
                if name.endswith(DRY_RUN_NOTEBOOK):
                    name = DRY_RUN_NOTEBOOK
                per[name] = {
                    "seconds": round(float(case.get("time", 0)), 1), "passed": not failed}
    return {"ok": code == 0, "seconds": round(seconds, 1), "per_notebook": per, "tail": text[-1500:] if code else ""}


def rehearsal(profile: str, dry_run: bool, timeout: int) -> dict:
    cmd = [sys.executable, str(BENCH / "rehearsal.py"), "--profile", profile]
    if dry_run:  # GPT-2's vocabulary and width, 2 layers, a tiny batch: one step of PPO (and of GRPO for `cpu`)
        cmd += ["--steps", "1", "--small-stand-ins", "--batch-size", "8", "--mini-batch-size", "8", "--eval-prompts",
                "4", "--algos", "ppo,grpo" if profile == "cpu" else "ppo"]
    else:
        cmd += ["--steps", "3" if profile == "gpu" else "1"]
    code, text, seconds = _run(cmd, timeout)
    return {"ok": code == 0, "seconds": round(seconds, 1), "result": _last_json(text) if code == 0 else None,
            "command": " ".join(cmd[1:]), "tail": text[-1500:] if code else ""}


def throughput(dry_run: bool, timeout: int) -> dict:
    cmd = [sys.executable, str(BENCH / "throughput.py")]
    if dry_run:
        cmd += ["--models", "smoke", "--algo", "ppo", "--steps", "1", "--batch-size", "16", "--mini-batch-size", "8",
                "--epochs", "2"]
    code, text, seconds = _run(cmd, timeout)
    return {"ok": code == 0, "seconds": round(seconds, 1), "result": _last_json(text) if code == 0 else None,
            "tail": text[-1500:] if code else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the one JSON with every step's figures")
    parser.add_argument("--dry-run", action="store_true", help="CPU-sized settings, to test the script anywhere")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; choose another --out (nothing was changed).")
    start = time.perf_counter()
    result = {"dry_run": args.dry_run, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "steps": {}}
    steps = [("notebooks", lambda: notebooks(args.dry_run, 1800)),
             ("rehearsal_gpu", lambda: rehearsal("gpu", args.dry_run, 900)),
             ("rehearsal_cpu", lambda: rehearsal("cpu", args.dry_run, 900)),
             ("throughput", lambda: throughput(args.dry_run, 900))]
    if not os.environ.get("RLHF_GPT2_TOKENIZER_DIR"):
        result["steps"]["rehearsal_gpu"] = result["steps"]["rehearsal_cpu"] = {
            "ok": False, "tail": "skipped: the rehearsal's stand-ins need RLHF_GPT2_TOKENIZER_DIR (GPT-2's tokenizer)"}
        steps = [s for s in steps if not s[0].startswith("rehearsal")]
    for name, step in steps:
        print(f"{name} ...", flush=True)
        result["steps"][name] = step()
        print(f"{name}: {'ok' if result['steps'][name]['ok'] else 'FAILED'} "
              f"({result['steps'][name].get('seconds', 0):.0f} s)", flush=True)
    result["seconds"] = round(time.perf_counter() - start, 1)
    args.out.write_text(json.dumps(result, indent=2))
    failed = [name for name, step in result["steps"].items() if not step["ok"]]
    print(f"wrote {args.out} ({result['seconds']:.0f} s); " + (f"failed: {failed}" if failed else "every step passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
