"""Test defaults for the whole repository (unit tests and the notebooks nbmake executes).

The tests and notebooks run offline: the `smoke` profile unless RLHF_PROFILE says otherwise. Kernels
started by nbmake inherit this environment.
"""

import os
import time

os.environ.setdefault("RLHF_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
# OpenMP threads that sleep instead of spinning while they wait. Set before torch is imported (the test modules,
# subprocesses and notebook kernels all inherit it). Measured on 2 cores, a 2-layer GPT-2 training step: 156 ms
# spinning vs 177 ms sleeping on a quiet machine, but 1,056 ms vs 271 ms with one CPU-bound process beside it,
# where spinning threads wait a whole time slice for the one that was descheduled.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_collection_finish(session):
    """Build the smoke profile's offline world once, before the first test, when any test was collected.

    Tests and notebooks that need it then find it cached, and none of their time limits has to absorb a
    ~5-minute build (or a build that another process started: builders wait on a lock for one build)."""
    if not session.items or session.config.option.collectonly:
        return
    if os.environ["RLHF_PROFILE"].strip().lower() != "smoke":
        return
    from rlhf_helpers.offline import build_offline_world

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    start = time.perf_counter()
    world = build_offline_world(verbose=False)
    if reporter is not None:
        reporter.write_line(f"offline world: {world.root} ({time.perf_counter() - start:.0f} s)")


# The longest items first (measured: `--durations=15` at the end of every run), so that none starts last and runs alone
# at the end (longest-processing-time-first scheduling). This needs `--maxschedchunk=1` (pyproject.toml): without it,
# pytest-xdist's `load` scheduler first hands each worker a quarter of its share of the items in collection order
# (38 items each at 311 tests), so one worker got every long item in this list while the other ran the short ones
# (cold-cache `.ci/run` at 5844c9e: the tests' times add up to 1,921 s, yet they took 1,335 s on two workers). With it,
# each worker starts with two items and takes the next as one finishes: 05 and 04 on one worker, 06 and 07 on the other.
LONGEST_FIRST = ("notebooks/05_", "notebooks/04_", "notebooks/06_", "notebooks/07_", "tests/test_gpu_check.py",
                 "tests/test_exercises_drive.py", "tests/test_device.py::test_two_processes",
                 "tests/test_train.py::test_killed_run", "notebooks/03_", "tests/test_browser.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)),
                    len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: everything else keeps its order
