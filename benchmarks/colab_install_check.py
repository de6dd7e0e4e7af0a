"""Does the notebooks' Colab install cell leave Colab's preloaded torch and numpy alone? Checked in a fresh venv.

    python benchmarks/colab_install_check.py [--out colab_install.json]

Colab imports numpy and torch before the first cell runs; an install that changes their versions breaks the running
kernel until a restart. This script:
1. makes a venv holding Colab's versions of every package the helpers touch (`benchmarks/colab_pins.txt`), real
   wheels from PyPI, except torch: a metadata-only stand-in `torch 2.11.0+cu128` (Colab's CUDA build is several GB,
   and pip decides from the installed version and its requirements alone);
2. runs the pip command of notebook 01's install cell (every notebook's is the same: tests/test_publish.py), with the
   git URL replaced by this checkout;
3. fails if torch or numpy changed, and lists every package the cell upgraded or added.
Needs PyPI (CI runs it from .ci/run); the venv's Python is this machine's (3.11 here, Colab's is 3.13).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINS = Path(__file__).with_name("colab_pins.txt")
MUST_NOT_CHANGE = ("torch", "numpy")
# torch 2.11.0's own requirements (its METADATA on PyPI, less the nvidia-*/triton wheels of the CUDA build).
TORCH_REQUIRES = ["filelock", "typing-extensions>=4.10.0", 'setuptools; python_version >= "3.12"', "sympy>=1.13.3",
                  "networkx>=2.5.1", "jinja2", "fsspec>=0.8.5"]


def install_cell_command(notebook: Path) -> list[str]:
    """The pip arguments of the notebook's Colab-only install cell, as written in it."""
    cells = json.loads(notebook.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if c["cell_type"] == "code" and
                  "google.colab" in "".join(c["source"]))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "run" and node.args:
            args = node.args[0]
            if isinstance(args, ast.List):
                words = [ast.literal_eval(e) if not isinstance(e, ast.Attribute) else "PYTHON" for e in args.elts]
                return words[words.index("pip") + 1:]
    raise ValueError(f"{notebook.name}: no subprocess.run([... 'pip', ...]) in its install cell")


def _stand_in_torch(site: Path, version: str) -> None:
    info = site / f"torch-{version}.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", "Name: torch", f"Version: {version}", "Requires-Python: >=3.10",
             *(f"Requires-Dist: {r}" for r in TORCH_REQUIRES)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "INSTALLER").write_text("colab_install_check (stand-in)\n")
    (info / "RECORD").write_text(f"{info.name}/METADATA,,\n{info.name}/INSTALLER,,\n{info.name}/RECORD,,\n")


def _versions(python: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): "
            "d.version for d in m.distributions()}))")
    return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    pins = [line.strip() for line in PINS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    torch_pin = next(p for p in pins if p.startswith("torch=="))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="colab-venv-") as scratch:
        venv = Path(scratch) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        _stand_in_torch(site, torch_pin.split("==")[1])
        quiet = ["--disable-pip-version-check", "-q", "--no-compile"]  # no .pyc: CPU that says nothing here
        subprocess.run([str(python), "-m", "pip", "install", *quiet, "--no-deps",
                        *[p for p in pins if p != torch_pin]], check=True)
        before = _versions(python)
        cell = install_cell_command(ROOT / "notebooks" / "01_imdb_and_reward.ipynb")
        spec = next(a for a in cell if a.startswith("rlhf-helpers @ "))
        command = [a if a != spec else f"rlhf-helpers @ {ROOT.as_uri()}" for a in cell]
        done = subprocess.run([str(python), "-m", "pip", *command, "--disable-pip-version-check", "--no-compile"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
            print(f"The install cell failed in Colab's environment: pip {' '.join(command)}", file=sys.stderr)
            return 1
        after = _versions(python)
    changed = {name: [before[name], after[name]] for name in sorted(before) if after.get(name) != before[name]}
    added = {name: after[name] for name in sorted(after) if name not in before}
    broken = [name for name in MUST_NOT_CHANGE if name in changed]
    result = {"pins": str(PINS.relative_to(ROOT)), "install_cell": cell, "torch": after.get("torch"),
              "numpy": after.get("numpy"), "changed": changed, "added": added, "untouched": not broken,
              "python": sys.version.split()[0], "seconds": round(time.perf_counter() - start, 1)}
    print(f"install cell in Colab's environment ({len(pins)} pinned packages, Python {result['python']}): torch "
          f"{result['torch']}, numpy {result['numpy']} -> {'untouched' if not broken else 'CHANGED: ' + str(broken)}")
    print("  upgraded: " + (", ".join(f"{n} {a} -> {b}" for n, (a, b) in changed.items()) or "nothing"))
    print("  added: " + (", ".join(f"{n} {v}" for n, v in added.items()) or "nothing"))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
