"""Test defaults for the whole repository (unit tests and the notebooks nbmake executes).

The tests and notebooks run offline: the `smoke` profile unless RLHF_PROFILE says otherwise. Kernels
started by nbmake inherit this environment.
"""

import dataclasses
import functools
import os
from pathlib import Path

import pytest

os.environ.setdefault("RLHF_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
# OpenMP threads that sleep instead of spinning while they wait. Set before torch is imported (the test modules,
# subprocesses and notebook kernels all inherit it). Measured on 2 cores, a 2-layer GPT-2 training step: 156 ms
# spinning vs 177 ms sleeping on a quiet machine, but 1,056 ms vs 271 ms with one CPU-bound process beside it,
# where spinning threads wait a whole time slice for the one that was descheduled.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


ROOT = Path(__file__).resolve().parent


# --- the smoke profile's world: shipped in the package, verified once per process ---------------------------------
#
# A test is marked `slow` (pyproject.toml registers the marker; `pytest -m "not slow"` leaves them out) when it loads
# the smoke profile's models (`load_policy(get_profile("smoke"))`, `python -m rlhf_helpers.train --profile smoke`, the
# `reference_run` fixture, every notebook) or runs longer than about 10 s. The world itself is in the repository
# (rlhf_helpers/smoke_world/): nothing is built, and loading it checks its checksums in about a tenth of a second.


@pytest.fixture(scope="session")
def smoke_world():
    """The shipped smoke world (`rlhf_helpers.offline.SmokeWorld`), checksums verified, for a test that needs it."""
    from rlhf_helpers.offline import smoke_world as shipped

    return shipped()


# --- one execution of a notebook, shared by nbmake and the tests that read its outputs ------------------------------

SHARED_NOTEBOOKS = ("01_imdb_and_reward.ipynb",)
"""Notebooks that tests read back executed (the `executed_notebook` fixture: tests/test_notebook_outputs.py). nbmake's
own item for each of them runs through the same cache, so one execution serves both. They run as on a learner's
fresh machine (Colab's first run): with an empty datasets cache, where datasets draws its bars when it generates the
splits. Add a notebook here before a test reads it back."""

_EXECUTED: dict = {}
"""notebook name -> nbmake's `NotebookResult` (the executed notebook and its error, if any), in this process."""


def _execute(config, name: str):
    """Run notebook `name` as nbmake runs it (its timeout and kernel options), with an empty datasets cache."""
    import tempfile

    from nbmake.nb_run import NotebookRun

    saved = os.environ.get("HF_DATASETS_CACHE")
    with tempfile.TemporaryDirectory(prefix="datasets-") as datasets_cache:
        os.environ["HF_DATASETS_CACHE"] = datasets_cache  # the kernel inherits it when it starts
        try:
            return NotebookRun(ROOT / "notebooks" / name, getattr(config.option, "nbmake_timeout", 900),
                               kernel=getattr(config.option, "nbmake_kernel", None)).execute()
        finally:
            if saved is None:
                os.environ.pop("HF_DATASETS_CACHE", None)
            else:
                os.environ["HF_DATASETS_CACHE"] = saved


def _shared_folder(config) -> Path | None:
    """Under pytest-xdist, a folder every worker of this run sees (the parent of the workers' own `--basetemp`,
    which pytest cleans up with its other temporary folders); None in a single process."""
    if os.environ.get("PYTEST_XDIST_WORKER") and config.option.basetemp:
        return Path(config.option.basetemp).parent / "executed-notebooks"
    return None


def executed_notebook_result(config, name: str):
    """nbmake's `NotebookResult` of notebook `name`, executed once per test run: the first caller executes it and
    later callers, in this process or (under xdist) in the other worker, read that execution back. A worker that
    asks while the other is executing it waits for that execution rather than starting a second one."""
    import fcntl
    import json

    import nbformat
    from nbmake.nb_result import NotebookError, NotebookResult

    if name not in SHARED_NOTEBOOKS:
        raise ValueError(f"{name} is not in SHARED_NOTEBOOKS (conftest.py): add it there, so that nbmake's run of it "
                         f"is the one tests read back and the notebook runs once")
    if name in _EXECUTED:
        return _EXECUTED[name]
    folder = _shared_folder(config)
    if folder is None:
        _EXECUTED[name] = _execute(config, name)
        return _EXECUTED[name]
    folder.mkdir(parents=True, exist_ok=True)
    saved = folder / name
    with open(folder / f"{name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if its holder dies
        if saved.is_file():
            nb = nbformat.read(saved, as_version=4)
            error = nb.metadata.pop("rlhf_execution_error", None)
            result = NotebookResult(nb=nb, error=NotebookError(**error) if error else None)
        else:
            result = _execute(config, name)
            nb = nbformat.from_dict(json.loads(json.dumps(result.nb)))  # a copy: the error goes only into the file
            if result.error is not None:
                nb.metadata["rlhf_execution_error"] = dataclasses.asdict(result.error)
            partial = saved.with_suffix(".partial")
            nbformat.write(nb, partial)
            os.replace(partial, saved)
    _EXECUTED[name] = result
    return result


@pytest.fixture(scope="session")
def executed_notebook(pytestconfig):
    """`executed_notebook(name)`: notebook `name` (one of SHARED_NOTEBOOKS) executed once per test run, as an
    nbformat notebook with its outputs; shared with nbmake's item for it. Fails the test if the notebook failed."""
    def executed(name: str):
        result = executed_notebook_result(pytestconfig, name)
        if result.error is not None:
            pytest.fail(f"{name} failed to execute: {result.error.summary}\n{result.error.trace[-3000:]}")
        return result.nb

    return executed


def _run_shared_notebook(item) -> None:
    """nbmake's `runtest` for a notebook in SHARED_NOTEBOOKS: the shared execution, failing as nbmake fails."""
    from nbmake.pytest_items import NotebookFailedException

    result = executed_notebook_result(item.config, Path(item.filename).name)
    if result.error is not None:
        raise NotebookFailedException(result)


# --- scheduling ------------------------------------------------------------------------------------------------------

# The longest items first (measured: `--durations=15` at the end of every run), so that none starts last and runs alone
# at the end (longest-processing-time-first scheduling). This needs `--maxschedchunk=1` (pyproject.toml): without it,
# pytest-xdist's `load` scheduler first hands each worker a quarter of its share of the items in collection order
# (38 items each at 311 tests), so one worker got every long item in this list while the other ran the short ones
# (cold-cache `.ci/run` at 5844c9e: the tests' times add up to 1,921 s, yet they took 1,335 s on two workers). With it,
# each worker starts with two items and takes the next as one finishes: 06 and 05 on one worker, 07 and 08 on the other.
LONGEST_FIRST = ("notebooks/06_", "notebooks/05_", "notebooks/07_", "notebooks/08_", "notebooks/02_",
                 "tests/test_gpu_check.py", "tests/test_exercises_drive.py", "tests/test_device.py::test_two_processes",
                 "tests/test_train.py::test_killed_run", "notebooks/04_", "tests/test_browser.py")


NOTEBOOKS_WITHOUT_THE_WORLD = ()
"""Notebooks that neither load the smoke world nor train: none today (each of 01-08 loads the smoke models, through
`model_ids` / `load_policy` / `load_tokenizer`, whose first call loads the shipped world), so every notebook is
`slow`."""


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        if getattr(item, "nbmake", False):  # nbmake's item for a notebook (testpaths: tests, notebooks)
            name = Path(item.filename).name
            if name not in NOTEBOOKS_WITHOUT_THE_WORLD:
                item.add_marker(pytest.mark.slow)
            if name in SHARED_NOTEBOOKS:
                item.runtest = functools.partial(_run_shared_notebook, item)

    def rank(item) -> int:
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)),
                    len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: everything else keeps its order
